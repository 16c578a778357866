"""Job schemas beside the library they configure: light to import, and the scripts' --help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "pandas", "matplotlib")

# The sweep and the pipeline read these schemas; they must not pull in the ML libraries
# (speechbed.features loads its names lazily for this).
_IMPORT = """
import sys
import {modules}
print(" ".join(sorted(name for name in {heavy} if name in sys.modules)))
"""


def _heavy_imports(modules: list[str]) -> str:
    code = _IMPORT.format(modules=", ".join(modules), heavy=HEAVY)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return result.stdout.strip()


@pytest.mark.parametrize(
    "module",
    [
        "speechbed.features.compute_job",
        "speechbed.reports.analyze_job",
        "speechbed.sweep.experiment",
        "speechbed.sweep.experiment_file",
    ],
)
def test_job_schemas_and_the_sweep_import_no_ml_library(module):
    assert _heavy_imports([module]) == ""


@pytest.mark.parametrize(
    "script, key", [("compute_features.py", "input_path"), ("analyze.py", "artifacts_directory")]
)
def test_scripts_print_their_schema_from_the_library(script, key):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), "--help"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "job file keys:" in result.stdout and f"  {key}: " in result.stdout
