"""A pipeline job resolved for running: absolute paths, unique name, state key, log path.

Made by the pipeline loader; read by the scheduler and by every executor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from speechbed.pipeline.slurm.settings import SlurmJobOptions


@dataclass(frozen=True)
class PlannedJob:
    """One job of a pipeline, with everything an executor needs to start it.

    ``script`` and ``config`` are absolute; ``root`` is the repository root the job runs in
    (its working directory). ``key`` identifies the job's work for resume (see ``state``).
    """

    index: int
    name: str
    script: Path
    config: Path
    args: tuple[str, ...]
    run_in: str
    num_gpus: int
    blocking: bool
    key: str
    root: Path
    pipeline: str
    log_path: Path
    slurm: SlurmJobOptions | None = None  # the step's own sbatch options (run_in: slurm)
    processes: int = 1  # data-parallel ranks (torchrun on one machine), one GPU each
