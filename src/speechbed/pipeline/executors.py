"""Executors by name: the registry a job's ``run_in`` picks from, and the host executor.

The pipeline loader calls ``make_executor``; the interface itself is ``speechbed.pipeline.launch``.

Executors are registered in ``EXECUTOR_FACTORIES`` as factories; one that lives in its own
module is imported lazily, by name, when a pipeline first asks for it (the way submitit's
plugins are), so this module imports no executor module and none imports it back.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

from speechbed.errors import UserInputError
from speechbed.pipeline.launch import Executor, Launch, job_argv, job_environment
from speechbed.pipeline.plan import PlannedJob

__all__ = [
    "EXECUTOR_FACTORIES",
    "Executor",
    "HostExecutor",
    "Launch",
    "job_environment",
    "make_executor",
]


class HostExecutor(Executor):
    """Runs ``python SCRIPT -y CONFIG ARGS...`` directly, with the runner's interpreter."""

    name = "host"

    def launch(self, job: PlannedJob, devices: list[int], base_env: Mapping[str, str]) -> Launch:
        return Launch(argv=job_argv(job), env=job_environment(job, devices, base_env), cwd=job.root)


def lazy_executor(module: str, attribute: str) -> Callable[[], Executor]:
    """A factory that imports ``module`` only when called and makes its ``attribute``."""

    def make() -> Executor:
        try:
            found = importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name is None or not f"{module}.".startswith(f"{error.name}."):
                raise  # the executor's module exists; something it needs does not
            raise UserInputError(
                f"this executor is not available in this checkout ({module} is missing); "
                "use run_in: host"
            ) from None
        return getattr(found, attribute)()

    return make


EXECUTOR_FACTORIES: dict[str, Callable[[], Executor]] = {
    "host": HostExecutor,
    "container": lazy_executor("speechbed.pipeline.container.executor", "ContainerExecutor"),
    "slurm": lazy_executor("speechbed.pipeline.slurm.executor", "SlurmExecutor"),
}


def make_executor(run_in: str) -> Executor:
    """The executor registered as ``run_in``; ``UserInputError`` when unknown or unavailable."""
    factory = EXECUTOR_FACTORIES.get(run_in)
    if factory is None:
        known = ", ".join(sorted(EXECUTOR_FACTORIES))
        raise UserInputError(f"run_in: {run_in!r} is not an executor (known: {known})")
    return factory()
