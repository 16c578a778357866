"""Executors: how a pipeline job's process is described for the host, a container or Slurm.

The scheduler (``speechbed.pipeline.scheduler``) asks an executor for a ``Launch`` and runs it.

The interface is deliberately small. The scheduler owns everything about the process:
it starts ``Launch.argv`` (a list, never through a shell) in ``Launch.cwd`` with exactly
``Launch.env`` as its environment, in a new process group, with stdin closed and
stdout+stderr captured into the job's log; it terminates the group (SIGTERM, then SIGKILL
after a grace period) on interruption; and it calls ``cleanup`` once the process is gone.
An executor only answers three questions:

- ``check(job)``: can this job run here at all? Called for every job while the plan is
  made, before anything starts; raise ``UserInputError`` with a message for a person.
- ``launch(job, devices, base_env)``: the command for this job on these leased GPU ids.
  ``base_env`` is the runner's environment; return a new dict, never mutate it.
- ``cleanup(job, launch)``: release what the launch made outside the process (e.g. remove
  a container). Called after the process ended or was terminated, also after failures;
  it must not raise for a job that never got far.

An executor whose jobs get GPUs from elsewhere (a Slurm allocation) sets
``leases_local_gpus = False``: its jobs are not checked against the local GPU inventory,
take no local lease, and ``launch`` gets ``devices == []`` (``job.num_gpus`` says how many
to ask for).

Executors are registered by name in ``EXECUTOR_FACTORIES``; a job picks one with
``run_in``. ``container`` comes from ``speechbed.pipeline.container.ContainerExecutor``
when that module exists.
"""

from __future__ import annotations

import importlib
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from speechbed.errors import UserInputError
from speechbed.pipeline.plan import PlannedJob


@dataclass(frozen=True)
class Launch:
    """A process to start: argument list, complete environment, working directory."""

    argv: list[str]
    env: dict[str, str] = field(repr=False)
    cwd: Path


class Executor(ABC):
    """Turns a planned job plus its leased GPU ids into a ``Launch``."""

    name: str = ""
    #: False when the executor's jobs get their GPUs from elsewhere (e.g. a Slurm allocation).
    leases_local_gpus: bool = True

    def check(self, job: PlannedJob) -> None:  # noqa: B027 (optional hook)
        """Raise ``UserInputError`` when ``job`` cannot run with this executor."""

    @abstractmethod
    def launch(self, job: PlannedJob, devices: list[int], base_env: Mapping[str, str]) -> Launch:
        """The process that runs ``job`` on GPUs ``devices`` (empty for a 0-GPU job)."""

    def cleanup(self, job: PlannedJob, launch: Launch) -> None:  # noqa: B027 (optional hook)
        """Undo what ``launch`` made outside the process; the process is already gone."""


def job_environment(
    job: PlannedJob, devices: list[int], base_env: Mapping[str, str]
) -> dict[str, str]:
    """The variables every job sees: its GPUs, its name, the repository root, live output."""
    env = dict(base_env)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(device) for device in devices)
    env["SPEECHBED_JOB_NAME"] = job.name
    env["SPEECHBED_ROOT"] = str(job.root)
    env["PYTHONUNBUFFERED"] = "1"  # so the prefixed console output is live
    return env


class HostExecutor(Executor):
    """Runs ``python SCRIPT -y CONFIG ARGS...`` directly, with the runner's interpreter."""

    name = "host"

    def launch(self, job: PlannedJob, devices: list[int], base_env: Mapping[str, str]) -> Launch:
        argv = [sys.executable, str(job.script), "-y", str(job.config), *job.args]
        return Launch(argv=argv, env=job_environment(job, devices, base_env), cwd=job.root)


def _container_executor() -> Executor:
    try:
        module = importlib.import_module("speechbed.pipeline.container")
    except ModuleNotFoundError as error:
        if error.name != "speechbed.pipeline.container":
            raise
        raise UserInputError(
            "run_in: container is not available yet in this checkout "
            "(speechbed.pipeline.container is missing); use run_in: host"
        ) from None
    return module.ContainerExecutor()


EXECUTOR_FACTORIES: dict[str, Callable[[], Executor]] = {
    "host": HostExecutor,
    "container": _container_executor,
}


def make_executor(run_in: str) -> Executor:
    """The executor registered as ``run_in``; ``UserInputError`` when unknown or unavailable."""
    factory = EXECUTOR_FACTORIES.get(run_in)
    if factory is None:
        known = ", ".join(sorted(EXECUTOR_FACTORIES))
        raise UserInputError(f"run_in: {run_in!r} is not an executor (known: {known})")
    return factory()
