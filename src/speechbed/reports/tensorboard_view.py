"""TensorBoard's view of the runs: ``${ARTIFACTS_DIRECTORY}/tensorboard/<experiment>/<condition>/seed=<n>``.

Called by the sweep (each run is linked when it is expanded, so its curves show by name while
it trains), by the analysis, and by ``speechbed.services``, which serves this folder. Light: no
pandas, no torch.

Each entry is a relative symbolic link to the run folder's ``tensorboard/`` (TensorBoard follows
links), so TensorBoard names a run by experiment, condition and seed instead of its id; the
folder moves with the artifacts folder and works inside the container's mount too.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from speechbed.run_folder import RunFolder

VIEW_FOLDER = "tensorboard"


def view_folder(artifacts: Path) -> Path:
    """The folder ``make tensorboard`` serves."""
    return Path(artifacts) / VIEW_FOLDER


def _part(text: str) -> str:
    # a condition is free text: keep it one readable path component
    cleaned = str(text).replace("/", "_").replace("\0", "").strip() or "base"
    return "_" + cleaned if cleaned.startswith(".") else cleaned


def run_name(experiment: str, condition: str, seed: Any) -> Path:
    """A run's name in TensorBoard: ``<experiment>/<condition>/seed=<seed>``."""
    return Path(_part(experiment), _part(condition), f"seed={seed}")


def link_run(artifacts: Path, experiment: str, condition: str, seed: Any, run_dir: Path) -> Path:
    """Point the run's name at its ``tensorboard/`` folder (replacing an older link atomically).

    A folder that cannot be written is skipped silently: the view is a convenience, never a
    reason for an expansion or an analysis to fail."""
    link = view_folder(artifacts) / run_name(experiment, condition, seed)
    target = os.path.relpath(RunFolder(Path(run_dir)).tensorboard, link.parent)
    with contextlib.suppress(OSError):
        if link.is_symlink() and os.readlink(link) == target:
            return link
        link.parent.mkdir(parents=True, exist_ok=True)
        temporary = link.with_name(f".{link.name}.link-{os.getpid()}")
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(target, target_is_directory=True)
        os.replace(temporary, link)
    return link
