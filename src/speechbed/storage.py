"""Where the testbed lives and keeps data, caches and artifacts: one rule each, as default.sh states.

Called by the pipeline runner, the container executor, the sweep, the reports and the services.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

#: The storage variables and their folder under ``<repository>/storage/`` when unset.
STORAGE_FOLDERS = {
    "DATA_DIRECTORY": "data",
    "CACHE_DIRECTORY": "cache",
    "ARTIFACTS_DIRECTORY": "artifacts",
}
#: The variable naming the repository root (set for every pipeline job).
ROOT_VARIABLE = "SPEECHBED_ROOT"


def storage_directory(
    variable: str, root: str | Path, environ: Mapping[str, str] | None = None
) -> Path:
    """The folder ``variable`` names, else ``<root>/storage/<folder>`` (as in setup/environment/default.sh)."""
    environ = os.environ if environ is None else environ
    configured = environ.get(variable, "").strip()
    return Path(configured) if configured else Path(root) / "storage" / STORAGE_FOLDERS[variable]


def fill_storage_defaults(
    environ: MutableMapping[str, str] | None = None, root: str | Path | None = None
) -> dict[str, str]:
    """Set each unset storage variable to its default folder, as ``make`` does through
    default.sh, so a script run directly reads the same ``${ARTIFACTS_DIRECTORY}``; returns
    what it set. Called at the start of every script's command line."""
    environ = os.environ if environ is None else environ
    root = repository_root(environ) if root is None else root
    filled = {
        variable: str(storage_directory(variable, root, environ))
        for variable in STORAGE_FOLDERS
        if not environ.get(variable, "").strip()
    }
    environ.update(filled)
    return filled


def repository_root(environ: Mapping[str, str] | None = None) -> Path:
    """``SPEECHBED_ROOT`` (set for every pipeline job), else the checkout this package lives in."""
    environ = os.environ if environ is None else environ
    configured = environ.get(ROOT_VARIABLE, "").strip()
    if configured:
        return Path(configured).resolve()
    return Path(__file__).resolve().parents[2]
