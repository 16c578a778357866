"""Turns a pipeline YAML file into checked ``PlannedJob``s, refusing bad input before any start.

Called by the pipeline command line; every error here is a ``UserInputError``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from speechbed.errors import UserInputError
from speechbed.jobs import load_config
from speechbed.pipeline.executors import Executor, make_executor
from speechbed.pipeline.plan import PlannedJob
from speechbed.pipeline.schema import PipelineFile, PipelineStep
from speechbed.pipeline.state import job_key
from speechbed.storage import storage_directory
from speechbed.variables import substitute_variables

#: Runs every job of a pipeline, and of the pipelines it starts, with this executor.
RUN_IN_VARIABLE = "SPEECHBED_RUN_IN"
#: A job running this script is a nested pipeline: it stays where it is (it only schedules)
#: and hands the executor override on to its own jobs.
PIPELINE_SCRIPT = Path("scripts/pipeline.py")


@dataclass(frozen=True)
class Pipeline:
    """A loaded pipeline: its name, concurrency, jobs and the executors they use."""

    source: Path
    name: str
    num_jobs: int
    jobs: list[PlannedJob]
    executors: dict[str, Executor]


def artifacts_directory(environ: Mapping[str, str], root: Path) -> Path:
    """``ARTIFACTS_DIRECTORY``, else ``<root>/storage/artifacts`` (as in default.sh)."""
    # Absolute, so the paths in logs and records stay right for jobs running in ``root``.
    return storage_directory("ARTIFACTS_DIRECTORY", root, environ).absolute()


def pipeline_name(source: Path, configured: str | None) -> str:
    if configured:
        return configured
    if source.stem == "pipeline" and source.resolve().parent.name:
        return source.resolve().parent.name
    return source.stem


def _resolve(path: Path, root: Path) -> Path:
    return path if path.is_absolute() else root / path


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path`` (symbolic links and ``..`` followed) lies under ``root``."""
    return path.resolve().is_relative_to(root.resolve())


def _relative_text(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _job_names(steps: list[PipelineStep], source: Path) -> list[str]:
    explicit = Counter(step.name for step in steps if step.name)
    for name, count in explicit.items():
        if count > 1:
            raise UserInputError(
                f"{source}: job name {name!r} is used by {count} jobs; names must be unique"
            )
    stems = Counter(step.config.stem for step in steps if not step.name)
    names = []
    for index, step in enumerate(steps):
        if step.name:
            names.append(step.name)
            continue
        stem = step.config.stem or f"job{index}"
        unique = stems[stem] == 1 and stem not in explicit
        names.append(stem if unique else f"{stem}-{index}")
    return names


def load_pipeline(
    source: Path,
    environ: Mapping[str, str],
    gpus: list[int],
    root: Path,
    artifacts: Path,
    num_jobs: int | None = None,
    run_in: str | None = None,
    check_gpus: bool = True,
) -> Pipeline:
    """Load, check and plan ``source``; nothing is started or written. ``run_in`` (else
    ``SPEECHBED_RUN_IN``) replaces every job's own, a nested pipeline's excepted.
    ``check_gpus=False`` (reading a nested pipeline for a plan) skips the inventory check."""
    document = load_config(source, PipelineFile, environ)
    run_in = run_in or environ.get(RUN_IN_VARIABLE, "").strip() or None
    name = pipeline_name(source, document.name)
    if num_jobs is not None and num_jobs < 1:
        raise UserInputError(f"--num_jobs must be at least 1, got {num_jobs}")
    executors: dict[str, Executor] = {}
    names = _job_names(document.jobs, source)
    planned = []
    for index, (step, job_name) in enumerate(zip(document.jobs, names, strict=True)):
        where = f"{source}: job {index} ({job_name})"
        script = _resolve(step.script, root)
        config = _resolve(step.config, root)
        if not script.is_file():
            raise UserInputError(f"{where}: script {step.script} not found (looked at {script})")
        if not document.allow_outside_scripts and not _inside(script, root):
            raise UserInputError(
                f"{where}: key 'script': {step.script} lies outside the repository {root} "
                f"(at {script.resolve()}); move it into the repository, or set "
                "'allow_outside_scripts: true' in the pipeline file"
            )
        if not config.is_file():
            raise UserInputError(f"{where}: config {step.config} not found (looked at {config})")
        nested = script.resolve() == (root / PIPELINE_SCRIPT).resolve()
        if nested and step.processes > 1:
            raise UserInputError(
                f"{where}: key 'processes': a nested pipeline only schedules; give its "
                "training jobs processes instead"
            )
        if run_in is not None and not nested:
            step = step.model_copy(update={"run_in": run_in})
        if step.run_in not in executors:
            try:
                executors[step.run_in] = make_executor(step.run_in)
            except UserInputError as error:
                raise UserInputError(f"{where}: {error}") from None
        if check_gpus and step.num_gpus > len(gpus) and executors[step.run_in].leases_local_gpus:
            have = f"{len(gpus)} ({','.join(map(str, gpus))})" if gpus else "none"
            raise UserInputError(
                f"{where}: asks for num_gpus: {step.num_gpus} but the GPU inventory has {have}; "
                "pass --gpus or lower num_gpus"
            )
        try:
            text = config.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise UserInputError(f"{where}: cannot read config {config}: {error}") from None
        resolved = substitute_variables(text, config, environ)
        job = PlannedJob(
            index=index,
            name=job_name,
            script=script,
            config=config,
            args=tuple(step.args),
            run_in=step.run_in,
            num_gpus=step.num_gpus,
            blocking=step.blocking,
            key=job_key(_relative_text(script, root), resolved, step.args),
            root=root,
            pipeline=name,
            log_path=artifacts / "logs" / name / f"{job_name}.log",
            slurm=step.slurm,
            processes=step.processes,
        )
        try:
            executors[step.run_in].check(job)
        except UserInputError as error:
            raise UserInputError(f"{where}: {error}") from None
        planned.append(job)
    return Pipeline(
        source=source,
        name=name,
        num_jobs=num_jobs if num_jobs is not None else document.num_jobs,
        jobs=planned,
        executors=executors,
    )
