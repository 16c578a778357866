"""Shared pytest fixtures: an isolated testbed environment, a tiny recording job script, and
tiny feature caches.

Used by the pipeline, jobs, environment and search tests; other areas keep their fixtures
in their own files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]

# A step script that needs nothing from speechbed (so it starts fast). It appends JSON lines
# {"event": "start"|"end", "name", "devices", "time", "pid", "cwd"} to --record, then waits
# for --sleep seconds, with --wait-for FILE until FILE exists, and with --wait-for-starts N
# until N jobs have recorded a start (a rendezvous that proves jobs ran at the same time,
# however slow the machine); exit 9 when a wait takes over 60 s; exits with --exit.
RECORDING_JOB = """\
import argparse, json, os, sys, time
parser = argparse.ArgumentParser()
parser.add_argument("-y", required=True)
parser.add_argument("--record", required=True)
parser.add_argument("--sleep", type=float, default=0.0)
parser.add_argument("--wait-for")
parser.add_argument("--exit", type=int, default=0)
parser.add_argument("--wait-for-starts", type=int, default=0)
parser.add_argument("--label", default="")
arguments = parser.parse_args()
def record(event):
    line = json.dumps({"event": event, "name": os.environ.get("SPEECHBED_JOB_NAME"),
                       "devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "time": time.time(),
                       "pid": os.getpid(), "cwd": os.getcwd(), "label": arguments.label})
    with open(arguments.record, "a") as log:
        log.write(line + "\\n")
record("start")
print("job says hello", flush=True)
time.sleep(arguments.sleep)
deadline = time.time() + 60  # never outlive a failed test by long
while arguments.wait_for and not os.path.exists(arguments.wait_for):
    if time.time() > deadline:
        sys.exit(9)
    time.sleep(0.02)
while open(arguments.record).read().count('"event": "start"') < arguments.wait_for_starts:
    if time.time() > deadline:
        sys.exit(9)
    time.sleep(0.01)
record("end")
sys.exit(arguments.exit)
"""


@pytest.fixture
def testbed_env(tmp_path: Path) -> dict[str, str]:
    """os.environ with artifacts, leases and root under tmp_path and no GPU variables."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if key not in ("SPEECHBED_GPUS", "CUDA_VISIBLE_DEVICES", "ENV_FILE")
    }
    environ["ARTIFACTS_DIRECTORY"] = str(tmp_path / "artifacts")
    environ["SPEECHBED_LEASE_DIR"] = str(tmp_path / "leases")
    environ["SPEECHBED_ROOT"] = str(tmp_path)
    return environ


@pytest.fixture
def recording_job(tmp_path: Path) -> Path:
    """The recording job script, written as tmp_path/record_job.py (see RECORDING_JOB)."""
    script = tmp_path / "record_job.py"
    script.write_text(RECORDING_JOB)
    (tmp_path / "job.yml").write_text("setting: 1\n")
    return script


@pytest.fixture(scope="module")
def cache_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny train/dev/test feature stores (16/4/4 utterances), for the search tests."""
    from test_training import write_cache

    folder = tmp_path_factory.mktemp("cache")
    write_cache(folder / "train.zarr", 16, seed=1)
    write_cache(folder / "dev.zarr", 4, seed=2)
    write_cache(folder / "test.zarr", 4, seed=3)
    return folder
