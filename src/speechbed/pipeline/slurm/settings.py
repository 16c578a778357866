"""Slurm settings: the cluster options from the environment file, and a job's ``slurm:`` mapping.

Read by the Slurm executor and ``speechbed.environment``; ``SlurmJobOptions`` is the schema
of the ``slurm:`` key of a pipeline step (``speechbed.pipeline.schema``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

import pydantic
from pydantic import Field

from speechbed.errors import UserInputError
from speechbed.jobs import JobSchema

#: How a job asks for its GPUs: ``--gres=gpu:N`` (every Slurm version) or ``--gpus=N``.
GPU_REQUESTS = ("gres", "gpus")
#: The environment file's settings, with what an empty one means (``make check_environment``).
SETTINGS = {
    "SPEECHBED_SLURM_PARTITION": "the cluster's default partition",
    "SPEECHBED_SLURM_ACCOUNT": "your default account",
    "SPEECHBED_SLURM_TIME": "the partition's time limit",
    "SPEECHBED_SLURM_CPU_OPTIONS": "no extra sbatch options for jobs without GPUs",
    "SPEECHBED_SLURM_GPU_OPTIONS": "no extra sbatch options for GPU jobs",
    "SPEECHBED_SLURM_GPU_REQUEST": "GPUs asked for as --gres=gpu:N",
    "SPEECHBED_SLURM_SIGNAL_SECONDS": "SIGUSR1 300 s before the time limit",
    "SPEECHBED_SLURM_MAX_REQUEUES": "3 requeues after that signal, then the job fails",
    "SPEECHBED_SLURM_POLL_SECONDS": "job states read every 10 s",
    "SPEECHBED_SLURM_ARRAYS": "the jobs of a step that share script and resources: one job array",
}
_SWITCH = {"": True, "1": True, "yes": True, "true": True, "0": False, "no": False, "false": False}
_TIME = re.compile(r"(\d+-)?\d+(:\d+){0,2}|\d+-\d+|UNLIMITED|INFINITE")
_MEMORY = re.compile(r"\d+[KMGT]?", re.IGNORECASE)


def check_time(value: str, where: str) -> str:
    """``value`` when it is a Slurm time (minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]])."""
    if not _TIME.fullmatch(value):
        raise UserInputError(
            f"{where}={value!r} is not a Slurm time limit; use minutes, HH:MM:SS or D-HH:MM:SS"
        )
    return value


class SlurmJobOptions(JobSchema):
    """A pipeline step's own ``slurm:`` options; they win over the environment file's."""

    partition: str | None = Field(default=None, description="partition for this job")
    account: str | None = Field(default=None, description="account charged for this job")
    time: str | None = Field(default=None, description="time limit, e.g. 4:00:00 or 1-00:00:00")
    mem: str | None = Field(default=None, description="memory per node, e.g. 16G")
    cpus_per_task: int | None = Field(default=None, ge=1, description="CPUs for the job")
    options: list[str] = Field(
        default_factory=list, description="further sbatch options, one per item"
    )

    @pydantic.field_validator("time")
    @classmethod
    def _slurm_time(cls, value: str | None) -> str | None:
        if value is not None and not _TIME.fullmatch(value):
            raise ValueError("not a Slurm time limit; use minutes, HH:MM:SS or D-HH:MM:SS")
        return value

    @pydantic.field_validator("mem")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None and not _MEMORY.fullmatch(value):
            raise ValueError("not a size like 16G or 8000M")
        return value

    @pydantic.field_validator("options")
    @classmethod
    def _options(cls, options: list[str]) -> list[str]:
        for option in options:
            if not option.startswith("-"):
                raise ValueError(
                    f"{option!r} is not an sbatch option; write each option as one item, "
                    "e.g. '--constraint=a100'"
                )
        return options


@dataclass(frozen=True)
class SlurmSettings:
    """The cluster-wide options every Slurm job gets (from the environment file)."""

    partition: str | None = None
    account: str | None = None
    time: str | None = None
    cpu_options: tuple[str, ...] = ()
    gpu_options: tuple[str, ...] = ()
    gpu_request: str = "gres"
    signal_seconds: int = 300
    max_requeues: int = 3
    poll_seconds: float = 10.0
    arrays: bool = True

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> SlurmSettings:
        """Read the ``SPEECHBED_SLURM_*`` settings; ``UserInputError`` names a bad one."""

        def setting(name: str) -> str:
            return environ.get(name, "").strip()

        def words(name: str) -> tuple[str, ...]:
            try:
                found = tuple(shlex.split(setting(name)))
            except ValueError as error:
                raise UserInputError(
                    f"{name}: {error} (write sbatch options as shell words)"
                ) from None
            for word in found:
                if not word.startswith("-"):
                    raise UserInputError(
                        f"{name}: {word!r} is not an sbatch option; write options as "
                        "--name=value, e.g. --constraint=a100"
                    )
            return found

        def number(name: str, default: float, kind: type = int) -> float:
            text = setting(name)
            try:
                value = kind(text) if text else default
            except ValueError:
                raise UserInputError(f"{name}={text!r} is not a number") from None
            if value < 0:
                raise UserInputError(f"{name}={text!r} must not be negative")
            return value

        gpu_request = setting("SPEECHBED_SLURM_GPU_REQUEST") or "gres"
        if gpu_request not in GPU_REQUESTS:
            raise UserInputError(
                f"SPEECHBED_SLURM_GPU_REQUEST={gpu_request!r}: use gres (--gres=gpu:N) "
                "or gpus (--gpus=N)"
            )
        arrays = _SWITCH.get(setting("SPEECHBED_SLURM_ARRAYS").lower())
        if arrays is None:
            raise UserInputError(
                f"SPEECHBED_SLURM_ARRAYS={setting('SPEECHBED_SLURM_ARRAYS')!r}: use 1 (the jobs "
                "of a step go in as one job array) or 0 (one sbatch per job)"
            )
        time = setting("SPEECHBED_SLURM_TIME") or None
        return cls(
            partition=setting("SPEECHBED_SLURM_PARTITION") or None,
            account=setting("SPEECHBED_SLURM_ACCOUNT") or None,
            time=None if time is None else check_time(time, "SPEECHBED_SLURM_TIME"),
            cpu_options=words("SPEECHBED_SLURM_CPU_OPTIONS"),
            gpu_options=words("SPEECHBED_SLURM_GPU_OPTIONS"),
            gpu_request=gpu_request,
            signal_seconds=int(number("SPEECHBED_SLURM_SIGNAL_SECONDS", 300)),
            max_requeues=int(number("SPEECHBED_SLURM_MAX_REQUEUES", 3)),
            poll_seconds=max(0.05, number("SPEECHBED_SLURM_POLL_SECONDS", 10.0, float)),
            arrays=arrays,
        )
