"""Experiments: expand an experiment file into run configs, job files and pipelines.

Called by ``scripts/sweep_experiment.py`` (``make experiment``) and the end-to-end tests.

An experiment file (read by ``speechbed.sweep.experiment_file``) holds the run-config sections
(``info``, ``data``, ``model``, ``training``, ``evaluation``; see
``speechbed.training.config.RunConfig``), a ``report`` section, an optional ``cache`` section
(where the feature caches' manifests are and how to compute them) and an optional ``sweep:``
list. Expansion writes ``experiments/out/<name>/{cache,train,evaluate,analyze,pipeline}.yml``
(repository-relative paths; run folders as ``${ARTIFACTS_DIRECTORY}/...``), each run's
``config.yml`` and the experiment's ``runs.json``. Every job file is a schema object of the
script that reads it (``ComputeFeaturesJob``, ``AnalyzeJob``, ``PipelineFile``), validated
before it is dumped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pydantic
import yaml

from speechbed.corpora.manifest import manifest_path
from speechbed.errors import UserInputError
from speechbed.features.compute_job import ComputeFeaturesJob
from speechbed.jobs import JobSchema, Schema, problems_in_one_line
from speechbed.outputs import make_folder, write_text_atomic
from speechbed.pipeline.schema import PipelineFile, PipelineStep
from speechbed.reports.analyze_job import AnalyzeJob
from speechbed.reports.tensorboard_view import link_run
from speechbed.run_folder import ExperimentFolder
from speechbed.sweep.experiment_file import (
    ARTIFACTS_VARIABLE,
    Experiment,
    load_experiment,
    portable_folder,
    run_schema,
)
from speechbed.variables import substitute_variables

__all__ = [
    "Experiment",
    "WrittenFiles",
    "cache_jobs",
    "check_gpus",
    "check_inputs",
    "load_experiment",
    "write_experiment",
]


def _job(schema: type[Schema], source: Path, what: str, **values: Any) -> Schema:
    """A generated job file as its script's schema object; a value it refuses names the file."""
    try:
        return schema.model_validate(values)
    except pydantic.ValidationError as error:
        raise UserInputError(f"{source}: {what}: {problems_in_one_line(error)}") from None


def cache_jobs(experiment: Experiment) -> list[ComputeFeaturesJob]:
    """One job per distinct feature cache the runs read, with every partition they read
    (none for a task whose data the cache step does not make)."""
    if not run_schema(experiment.task).feature_cache_step:
        return []
    needs: dict[tuple[str, str], dict[str, Any]] = {}
    for run in experiment.runs:
        data = run.config.get("data", {})
        output = str(data["cache_directory"])
        feature = data.get("feature", "fbank-81-10ms")
        manifests = experiment.cache.manifests or str(PurePosixPath(output).parent / "manifests")
        partitions = [data.get(f"{role}_partition", role) for role in ("train", "dev", "test")]
        need = needs.setdefault(
            (output, json.dumps(feature, sort_keys=True)),
            {"input_path": manifests, "partitions": [], "feature": feature, "output_path": output},
        )
        need["partitions"] = list(dict.fromkeys(need["partitions"] + partitions))
    return [
        _job(
            ComputeFeaturesJob,
            experiment.source,
            f"the cache of {need['output_path']}",
            **need,
            device=experiment.cache.device,
            batch_size=experiment.cache.batch_size,
        )
        for need in needs.values()
    ]


def _resolve(path: Path, environ: Mapping[str, str]) -> Path:
    return Path(substitute_variables(str(path), "experiment", environ))


def check_inputs(
    experiment: Experiment, environ: Mapping[str, str], populate_cache: bool
) -> list[str]:
    """What the runs need that is missing: manifests (with the cache step) or the partitions."""
    missing = []
    if populate_cache:
        for job in cache_jobs(experiment):
            for partition in job.partitions or ():
                manifest = manifest_path(_resolve(job.input_path, environ), partition)
                if not manifest.is_file():
                    missing.append(f"manifest {manifest} (input of the {job.feature} cache)")
        return missing
    data_schema = run_schema(experiment.task).model_fields["data"].annotation
    for run in experiment.runs:
        data = data_schema.model_validate(run.config.get("data", {}))
        for role in ("train", "dev", "test"):
            partition = getattr(data, f"{role}_partition")
            source = _resolve(data.source(partition), environ)
            described = f"{data.source_name} {source}"
            if not source.exists() and not any(m.startswith(described) for m in missing):
                hint = data.missing_source_hint
                if run_schema(experiment.task).feature_cache_step:
                    hint = f"add 'populate_cache: true' to a sweep entry, or {hint}"
                missing.append(f"{described} ('{partition}' partition; {hint})")
    return missing


def check_gpus(
    num_gpus: int,
    gpus: str | None,
    environ: Mapping[str, str],
    experiment: Experiment | None = None,
    inventory: bool = True,
) -> int:
    """A run set to train or decode on CUDA without a GPU to lease is an error; with
    ``inventory``, so is a job asking for more GPUs than this machine has (a login node
    expands with ``inventory=False``: the pipeline checks when it runs). Returns the most GPUs
    one job asks for."""
    if experiment is not None and num_gpus == 0:
        for run in experiment.runs:
            for section in ("training", "evaluation"):
                if run.config.get(section, {}).get("device") == "cuda":
                    raise UserInputError(
                        f"{experiment.source}: runs set {section}.device: cuda, but num_gpus is 0; "
                        "give num_gpus=1 (or more), or sweep the device to cpu"
                    )
    if experiment is not None and experiment.expansion.populate_cache:
        num_gpus = max(num_gpus, 1 if experiment.cache.device == "cuda" else 0)
    if num_gpus == 0 or not inventory:
        return num_gpus
    from speechbed.pipeline.inventory import discover_gpus

    devices, source = discover_gpus(gpus, environ)
    if num_gpus > len(devices):
        raise UserInputError(
            f"each run asks for {num_gpus} GPU(s) but the inventory ({source}) has "
            f"{len(devices)}: {devices or 'none'}; lower num_gpus or pass gpus=..., or expand "
            "without run=1 here and run the pipeline where the GPUs are"
        )
    return num_gpus


def _dump(path: Path, document: Mapping[str, Any], header: str) -> None:
    """Write a YAML file whole (per-process temporary, renamed) or raise ``OutputError``."""
    text = header + yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=False)
    write_text_atomic(path, text)


def _dump_job(path: Path, job: JobSchema | list[JobSchema], header: str) -> None:
    """Write a schema object (or a ``jobs:`` list of them) as a job file: the keys each was
    given, in the schema's order."""

    def keys(one: JobSchema) -> dict[str, Any]:
        return one.model_dump(mode="json", exclude_unset=True)

    document = {"jobs": [keys(one) for one in job]} if isinstance(job, list) else keys(job)
    _dump(path, document, header)


@dataclass
class WrittenFiles:
    """What an expansion wrote."""

    out_folder: Path
    pipeline: Path
    run_configs: list[Path]


def write_experiment(
    experiment: Experiment,
    root: Path,
    artifacts: Path,
    num_gpus: int = 0,
    num_jobs: int = 1,
    run_in: str = "host",
    gpus: str | None = None,
) -> WrittenFiles:
    """Write run configs under ``artifacts`` and the pipelines under ``root/experiments/out``.

    ``runs.json`` and the run configs cover every run of the sweep; the pipelines (and the
    analysis) only the runs ``only=`` picked.

    Every file is written whole or not at all; a folder that cannot be written (read-only,
    no permission, full disk) is an ``OutputError`` naming it, raised before any file is
    written when the folders themselves cannot be made. A job file the schema of its script
    refuses is a ``UserInputError`` raised before anything is written.
    """
    name = experiment.name
    folder = ExperimentFolder(artifacts / name)
    out = root / "experiments" / "out" / name
    relative_out = PurePosixPath("experiments", "out", name)
    files = _job_files(experiment, relative_out, num_gpus, num_jobs, run_in, gpus)
    runs = experiment.expansion.runs  # every run of the matrix, whatever only= picked
    for made in (folder.path, out):
        make_folder(made)
    try:
        source = experiment.source.resolve().relative_to(root.resolve())
    except ValueError:
        source = Path(experiment.source.name)
    header = f"# generated by scripts/sweep_experiment.py from {source}; do not edit\n"
    run_configs = []
    for run in runs:
        path = folder.run(run.run_id).config
        _dump(path, run.config, header)
        run_configs.append(path)
    index = {
        run.run_id: {"condition": run.condition(), "seed": run.seed(), "settings": run.settings}
        for run in runs
    }
    write_text_atomic(folder.index, json.dumps(index, indent=2, default=str))
    for run in runs:  # TensorBoard names each run by experiment, condition and seed
        link_run(artifacts, name, run.condition(), run.seed(), folder.run(run.run_id).path)
    for file_name, job in files.items():
        _dump_job(out / file_name, job, header)
    return WrittenFiles(out, out / "pipeline.yml", run_configs)


def _job_files(
    experiment: Experiment,
    out: PurePosixPath,
    num_gpus: int,
    num_jobs: int,
    run_in: str,
    gpus: str | None,
) -> dict[str, JobSchema | list[JobSchema]]:
    """The experiment's job files by name, each the schema object of the script that reads it."""
    name, source = experiment.name, experiment.source
    inner_args = ["--gpus", gpus] if gpus else []

    def runs_pipeline(script: str, step: str) -> PipelineFile:
        steps = [
            _job(
                PipelineStep,
                source,
                f"{step}.yml",
                script=script,
                config=str(portable_folder(name).run(run.run_id).config),
                name=f"{step}-{run.run_id}",
                run_in=run_in,
                num_gpus=num_gpus,
                # a run given several GPUs trains data-parallel, one process each; it
                # evaluates in one process
                **({"processes": num_gpus} if step == "train" and num_gpus > 1 else {}),
            )
            for run in experiment.runs
        ]
        return _job(PipelineFile, source, f"{step}.yml", name=f"{name}-{step}",
                    num_jobs=num_jobs, jobs=steps)  # fmt: skip

    files: dict[str, JobSchema | list[JobSchema]] = {
        "cache.yml": [*cache_jobs(experiment)],
        "train.yml": runs_pipeline("scripts/train.py", "train"),
        "evaluate.yml": runs_pipeline("scripts/evaluate.py", "evaluate"),
        "analyze.yml": _job(
            AnalyzeJob,
            source,
            "analyze.yml",
            experiments=[name],
            artifacts_directory=ARTIFACTS_VARIABLE,
            # The run ids make this file change when the runs change, so the pipeline reruns it.
            runs=[run.run_id for run in experiment.runs],
            report=experiment.report.model_dump(),
        ),
    }
    steps = []
    if experiment.expansion.populate_cache:
        steps.append(("cache", "scripts/compute_features.py", "cache.yml", []))
    steps += [
        ("train", "scripts/pipeline.py", "train.yml", inner_args),
        ("evaluate", "scripts/pipeline.py", "evaluate.yml", inner_args),
        ("analyze", "scripts/analyze.py", "analyze.yml", []),
    ]
    cache_gpus = 1 if experiment.cache.device == "cuda" else 0
    outer_steps = [
        _job(
            PipelineStep,
            source,
            "pipeline.yml",
            script=script,
            config=str(out / config),
            name=f"{name}-{step}",
            # the pipelines inside choose run_in per job; the cache step runs like them
            run_in=run_in if script != "scripts/pipeline.py" else "host",
            num_gpus=cache_gpus if step == "cache" else 0,
            blocking=True,
            args=list(args),
        )
        for step, script, config, args in steps
    ]
    files["pipeline.yml"] = _job(PipelineFile, source, "pipeline.yml", name=name, num_jobs=1,
                                 jobs=outer_steps)  # fmt: skip
    return files
