"""The pipeline of ``make search``: N worker jobs of ``scripts/search.py`` on one study.

Written by ``scripts/search.py --num_workers N`` into the study folder and run through the
pipeline runner, so workers lease GPUs and run on the host, in the container or on Slurm like
every job. Imports no ML code (the launcher needs none).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from speechbed.outputs import make_folder, write_text_atomic
from speechbed.pipeline.schema import PipelineFile, PipelineStep

SEARCH_SCRIPT = "scripts/search.py"


def _portable(path: Path, root: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def write_workers_pipeline(
    search_file: Path,
    study: str,
    target: Path,
    root: Path,
    num_workers: int,
    num_gpus: int = 0,
    run_in: str = "host",
) -> Path:
    """Write ``target``: ``num_workers`` parallel worker jobs (``--worker i`` keeps their
    pipeline keys apart); returns its path."""
    pipeline = PipelineFile(
        name=f"search-{study}",
        num_jobs=num_workers,
        jobs=[
            PipelineStep(
                script=Path(SEARCH_SCRIPT),
                config=Path(_portable(search_file, root)),
                name=f"worker-{index}",
                run_in=run_in,
                num_gpus=num_gpus,
                args=["--worker", str(index)],
            )
            for index in range(num_workers)
        ],
    )
    make_folder(target.parent)
    document = pipeline.model_dump(mode="json", exclude_defaults=True)
    document["jobs"] = [
        step.model_dump(mode="json", exclude_defaults=True) for step in pipeline.jobs
    ]
    write_text_atomic(target, yaml.safe_dump(document, sort_keys=False))
    return target
