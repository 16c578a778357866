"""The pipeline YAML schema: ``num_jobs`` and a ``jobs:`` list of script/config steps.

Loaded by ``speechbed.pipeline.loader`` through ``speechbed.jobs.load_config``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pydantic
from pydantic import Field

from speechbed.jobs import JobSchema
from speechbed.pipeline.slurm.settings import SlurmJobOptions

JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class PipelineStep(JobSchema):
    """One step: ``python SCRIPT -y CONFIG ARGS...`` on the host, in a container or on Slurm
    (through torchrun, as that many data-parallel ranks, when ``processes`` > 1)."""

    script: Path = Field(description="the step script, absolute or relative to the repository root")
    config: Path = Field(
        description="its YAML job file, absolute or relative to the repository root"
    )
    name: str | None = Field(
        default=None,
        description="unique name for logs and the summary (letters, digits, . _ -); "
        "default: the config file's stem",
    )
    run_in: str = Field(
        default="host",
        description="executor: host | container | slurm (SPEECHBED_RUN_IN or --run_in overrides)",
    )
    num_gpus: int = Field(default=0, ge=0, description="GPUs leased for the job's whole life")
    processes: int = Field(
        default=1,
        ge=1,
        description="data-parallel processes of a training job, started by torchrun "
        "(python -m torch.distributed.run --standalone) on one machine, one GPU each: at most "
        "num_gpus; with num_gpus: 0 they train on CPU (Gloo)",
    )
    blocking: bool = Field(
        default=False,
        description="barrier: starts after every earlier job finished; later jobs wait for it",
    )
    args: list[str] = Field(default_factory=list, description="extra arguments after -y CONFIG")
    slurm: SlurmJobOptions | None = Field(
        default=None,
        description="run_in: slurm only: this job's sbatch options (partition, account, time, "
        "mem, cpus_per_task, options), over the environment file's",
    )

    @pydantic.field_validator("name")
    @classmethod
    def _name_is_a_file_name(cls, name: str | None) -> str | None:
        if name is not None and not JOB_NAME.fullmatch(name):
            raise ValueError("use letters, digits, '.', '_' and '-' (it names the log file)")
        return name

    @pydantic.model_validator(mode="after")
    def _one_gpu_per_process(self) -> PipelineStep:
        if self.num_gpus and self.processes > self.num_gpus:
            raise ValueError(
                f"processes: {self.processes} but num_gpus: {self.num_gpus}; each data-parallel "
                "process takes one GPU, so give num_gpus >= processes (or num_gpus: 0 to train "
                "on CPU)"
            )
        return self

    @pydantic.field_validator("args", mode="before")
    @classmethod
    def _scalars_as_text(cls, args: object) -> object:
        # YAML reads `args: [--epochs, 3]` with an int; argv is text, so numbers are written out.
        if isinstance(args, list):
            return [
                str(item) if isinstance(item, int | float) and not isinstance(item, bool) else item
                for item in args
            ]
        return args


class PipelineFile(JobSchema):
    """A whole pipeline file."""

    name: str | None = Field(
        default=None,
        description="pipeline name for the log folder; default: the file's stem, or its "
        "folder's name when the file is called pipeline.yml",
    )
    num_jobs: int = Field(default=1, ge=1, description="jobs running at once")
    allow_outside_scripts: bool = Field(
        default=False,
        description="run step scripts that lie outside the repository (absolute paths or ../..); "
        "off, such a step is refused before anything starts",
    )
    jobs: list[PipelineStep] = Field(min_length=1, description="the steps, in order")

    @pydantic.field_validator("name")
    @classmethod
    def _name_is_a_file_name(cls, name: str | None) -> str | None:
        if name is not None and not JOB_NAME.fullmatch(name):
            raise ValueError("use letters, digits, '.', '_' and '-' (it names the log folder)")
        return name
