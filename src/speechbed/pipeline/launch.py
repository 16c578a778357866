"""The executor interface: ``Executor`` turns a planned job into a ``Launch`` the scheduler runs.

Implemented by ``executors.HostExecutor`` and ``container.executor.ContainerExecutor``; it
imports no executor, so the registry (``speechbed.pipeline.executors``) can point one way.

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
- ``group(jobs, num_jobs)``: optional; before each launch, the jobs of its segment still to
  start. Slurm submits those that share script and resources as one job array.
- ``ending(job, launch, returncode)``: optional; a reason for the summary better than the
  exit code (a Slurm job's TIMEOUT), read before ``cleanup``.
- ``cleanup(job, launch)``: release what the launch made outside the process (e.g. remove
  a container, named by ``Launch.handle``). Called after the process ended or was
  terminated, also after failures; it must not raise for a job that never got far.

An executor whose jobs get GPUs from elsewhere (a Slurm allocation) sets
``leases_local_gpus = False``: its jobs are not checked against the local GPU inventory,
take no local lease, and ``launch`` gets ``devices == []`` (``job.num_gpus`` says how many
to ask for).
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from speechbed.pipeline.plan import PlannedJob
from speechbed.storage import ROOT_VARIABLE


@dataclass(frozen=True)
class Launch:
    """A process to start: argument list, complete environment, working directory.

    ``handle`` names what the launch makes outside the process (a container's name), so
    ``cleanup`` finds it without reading ``argv``; None when there is nothing to clean up.
    """

    argv: list[str]
    env: dict[str, str] = field(repr=False)
    cwd: Path
    handle: str | None = None


#: Signals torchrun passes on to its ranks: its own four and SIGUSR1, Slurm's warning before
#: a time limit or preemption (the trainer checkpoints and stops on it).
DATA_PARALLEL_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"


def step_command(
    python: str, script: str, config: str, args: Sequence[str], processes: int = 1
) -> list[str]:
    """``python SCRIPT -y CONFIG ARGS...``; with ``processes`` > 1 the same command as that
    many data-parallel ranks on this machine: torchrun (``python -m torch.distributed.run
    --standalone``, which sets RANK, LOCAL_RANK, WORLD_SIZE and a free rendezvous port) runs
    each rank through ``speechbed.pipeline.data_parallel``, which ties the rank's life to
    torchrun's (torchrun starts its ranks in sessions of their own, out of the job's group)."""
    command = [script, "-y", config, *args]
    if processes == 1:
        return [python, *command]
    return [
        python,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        f"--nproc-per-node={processes}",
        f"--signals-to-handle={DATA_PARALLEL_SIGNALS}",
        "--module",
        "speechbed.pipeline.data_parallel",
        *command,
    ]


def job_argv(job: PlannedJob) -> list[str]:
    """What every job runs, with the runner's interpreter (``step_command``)."""
    return step_command(sys.executable, str(job.script), str(job.config), job.args, job.processes)


def job_environment(
    job: PlannedJob, devices: list[int], base_env: Mapping[str, str]
) -> dict[str, str]:
    """The variables every job sees: its GPUs, its name, the repository root, live output."""
    env = dict(base_env)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(device) for device in devices)
    env["SPEECHBED_JOB_NAME"] = job.name
    env[ROOT_VARIABLE] = str(job.root)
    env["PYTHONUNBUFFERED"] = "1"  # so the prefixed console output is live
    return env


class Executor(ABC):
    """Turns a planned job plus its leased GPU ids into a ``Launch``."""

    name: str = ""
    #: False when the executor's jobs get their GPUs from elsewhere (e.g. a Slurm allocation).
    leases_local_gpus: bool = True
    #: True when its ``launch`` takes ``after`` (ids from ``queued_id``): the job then waits
    #: on the cluster for those jobs to succeed, so the scheduler submits the jobs after a
    #: barrier before the barrier ends.
    queues_behind: bool = False

    def check(self, job: PlannedJob) -> None:  # noqa: B027 (optional hook)
        """Raise ``UserInputError`` when ``job`` cannot run with this executor."""

    @abstractmethod
    def launch(self, job: PlannedJob, devices: list[int], base_env: Mapping[str, str]) -> Launch:
        """The process that runs ``job`` on GPUs ``devices`` (empty for a 0-GPU job)."""

    def group(self, jobs: Sequence[PlannedJob], num_jobs: int) -> None:  # noqa: B027
        """Optional hook, called before each launch with the jobs of its segment still to
        start, the launching one included: an executor that submits several jobs as one
        (a Slurm job array, at most ``num_jobs`` of it running) groups them here. A job
        grouped once keeps its group."""

    def queued_id(self, launch: Launch) -> str | None:
        """The cluster's id of a launched job once it is queued there (``queues_behind``)."""
        return None

    def cleanup(self, job: PlannedJob, launch: Launch) -> None:  # noqa: B027 (optional hook)
        """Undo what ``launch`` made outside the process; the process is already gone."""

    def ending(self, job: PlannedJob, launch: Launch, returncode: int) -> str | None:
        """Why the job ended when the executor knows more than its exit code (Slurm's
        TIMEOUT, OUT_OF_MEMORY, ...), for the summary; None otherwise. Called before cleanup."""
        return None
