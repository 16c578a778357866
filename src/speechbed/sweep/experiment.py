"""Experiments: read an experiment YAML, expand its sweep, write run configs and pipelines.

Called by ``scripts/sweep_experiment.py`` (``make experiment``) and the end-to-end tests.

An experiment file holds the run-config sections (``info``, ``data``, ``model``,
``training``, ``evaluation``; see ``speechbed.training.config.RunConfig``), a ``report``
section, an optional ``cache`` section (where the feature caches' manifests are and how to
compute them) and an optional ``sweep:`` list. Expansion writes
``experiments/out/<name>/{cache,train,evaluate,analyze,pipeline}.yml`` (repository-relative
paths; run folders as ``${ARTIFACTS_DIRECTORY}/...``) and each run's ``config.yml``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pydantic
import yaml
from pydantic import Field

from speechbed.errors import UserInputError
from speechbed.jobs import JobSchema, substitute_variables
from speechbed.outputs import make_folder, write_text_atomic
from speechbed.reports.settings import ReportSettings
from speechbed.sweep.expansion import Expansion, Run, expand

RUN_SECTIONS = ("info", "data", "model", "training", "evaluation")
EXPERIMENT_SECTIONS = (*RUN_SECTIONS, "report", "cache", "sweep")
ARTIFACTS_VARIABLE = "${ARTIFACTS_DIRECTORY}"
INDEX_NAME = "runs.json"


class CacheSettings(JobSchema):
    """How the cache step computes the feature caches the runs read (``cache`` section)."""

    manifests: str | None = Field(
        None,
        description="manifest folder (<partition>.jsonl) the caches are computed from; "
        "null: the 'manifests' folder next to data.cache_directory",
    )
    device: str = Field("cpu", description="cpu | cuda")
    batch_size: int = Field(16, ge=1, description="utterances per feature batch")


@dataclass
class CacheNeed:
    """One feature cache the runs read: computed from ``manifests`` into ``output_path``."""

    manifests: str
    feature: str
    output_path: str
    partitions: tuple[str, ...]


@dataclass
class Experiment:
    """A loaded experiment file, expanded."""

    name: str
    source: Path
    document: dict[str, Any]
    expansion: Expansion
    report: ReportSettings
    cache: CacheSettings

    @property
    def runs(self) -> list[Run]:
        return self.expansion.runs


def _run_schema() -> type[pydantic.BaseModel]:
    # Only the schema module: the sweep never imports the training code itself.
    from speechbed.training.config import RunConfig

    return RunConfig


def schema_paths(
    model: type[pydantic.BaseModel], prefix: tuple[str, ...] = ()
) -> set[tuple[str, ...]]:
    """Every key path a pydantic schema accepts (nested models entered)."""
    paths: set[tuple[str, ...]] = set()
    for name, field in model.model_fields.items():
        paths.add(prefix + (name,))
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
            paths |= schema_paths(annotation, prefix + (name,))
    return paths


def run_folder(name: str, run_id: str) -> str:
    return f"{ARTIFACTS_VARIABLE}/{name}/{run_id}"


def load_experiment(path: str | Path) -> Experiment:
    """Read, check and expand an experiment file; every run config is validated."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserInputError(f"{path}: experiment file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserInputError(f"{path}: cannot read the experiment file: {error}") from None
    try:
        # ${VARIABLES} stay as written: run configs keep them, so they work on any machine.
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise UserInputError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise UserInputError(f"{path}: an experiment file is a mapping of sections")
    for key in document:
        if key not in EXPERIMENT_SECTIONS:
            raise UserInputError(
                f"{path}: unknown top-level key '{key}' (sections: {', '.join(EXPERIMENT_SECTIONS)})"
            )
    name = path.stem
    schema = _run_schema()
    expansion = expand(document, RUN_SECTIONS, schema_paths(schema), source=str(path))
    for number, run in enumerate(expansion.runs):
        info = run.config.setdefault("info", {})
        info["name"] = f"{name}-{run.run_id}"
        info["run_dir"] = run_folder(name, run.run_id)
        try:
            schema.model_validate(run.config)
        except pydantic.ValidationError as error:
            problems = "; ".join(
                f"key '{'.'.join(str(part) for part in item['loc'])}': {item['msg']}"
                for item in error.errors()
            )
            where = f"sweep entry {run.sweep_index}, " if run.sweep_index is not None else ""
            raise UserInputError(
                f"{path}: {where}run {number} ({run.condition()}): {problems}"
            ) from None
    try:
        report = ReportSettings.model_validate(document.get("report") or {})
        cache = CacheSettings.model_validate(document.get("cache") or {})
    except pydantic.ValidationError as error:
        raise UserInputError(f"{path}: report/cache section: {error}") from None
    return Experiment(name, path, document, expansion, report, cache)


def cache_needs(experiment: Experiment) -> list[CacheNeed]:
    """The distinct feature caches the runs read, with the partitions each must hold."""
    needs: dict[tuple[str, str], CacheNeed] = {}
    for run in experiment.runs:
        data = run.config.get("data", {})
        output = str(data["cache_directory"])
        feature = str(data.get("feature", "fbank-81-10ms"))
        manifests = experiment.cache.manifests or str(PurePosixPath(output).parent / "manifests")
        partitions = tuple(data.get(f"{role}_partition", role) for role in ("train", "dev", "test"))
        key = (output, feature)
        if key in needs:
            merged = dict.fromkeys(needs[key].partitions + partitions)
            needs[key].partitions = tuple(merged)
        else:
            needs[key] = CacheNeed(manifests, feature, output, tuple(dict.fromkeys(partitions)))
    return list(needs.values())


def _resolve(text: str, environ: Mapping[str, str]) -> Path:
    return Path(substitute_variables(text, "experiment", environ))


def check_inputs(
    experiment: Experiment, environ: Mapping[str, str], populate_cache: bool
) -> list[str]:
    """What the runs need that is missing: manifests (with the cache step) or the caches."""
    missing = []
    for need in cache_needs(experiment):
        for partition in need.partitions:
            if populate_cache:
                manifest = _resolve(need.manifests, environ) / f"{partition}.jsonl"
                if not manifest.is_file():
                    missing.append(f"manifest {manifest} (input of the {need.feature} cache)")
            else:
                store = _resolve(need.output_path, environ) / f"{partition}.zarr"
                if not store.exists():
                    missing.append(
                        f"feature cache {store} (add 'populate_cache: true' to a sweep entry, "
                        "or compute it with the data_prep pipeline)"
                    )
    return missing


def check_gpus(
    num_gpus: int,
    gpus: str | None,
    environ: Mapping[str, str],
    experiment: Experiment | None = None,
) -> None:
    """A job asking for more GPUs than the machine has fails before anything runs, and so
    does a run set to train or decode on CUDA without a GPU to lease."""
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
    if num_gpus == 0:
        return
    from speechbed.pipeline.inventory import discover_gpus

    inventory, source = discover_gpus(gpus, environ)
    if num_gpus > len(inventory):
        raise UserInputError(
            f"each run asks for {num_gpus} GPU(s) but the inventory ({source}) has "
            f"{len(inventory)}: {inventory or 'none'}; lower num_gpus or pass gpus=..."
        )


def _dump(path: Path, document: Mapping[str, Any], header: str) -> None:
    """Write a YAML file whole (per-process temporary, renamed) or raise ``OutputError``."""
    text = header + yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=False)
    write_text_atomic(path, text)


def _pipeline(name: str, num_jobs: int, jobs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "num_jobs": num_jobs, "jobs": jobs}


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

    Every file is written whole or not at all; a folder that cannot be written (read-only,
    no permission, full disk) is an ``OutputError`` naming it, raised before any file is
    written when the folders themselves cannot be made.
    """
    name = experiment.name
    out = root / "experiments" / "out" / name
    for folder in (artifacts / name, out):
        make_folder(folder)
    try:
        source = experiment.source.resolve().relative_to(root.resolve())
    except ValueError:
        source = Path(experiment.source.name)
    header = f"# generated by scripts/sweep_experiment.py from {source}; do not edit\n"
    run_configs = []
    for run in experiment.runs:
        path = artifacts / name / run.run_id / "config.yml"
        _dump(path, run.config, header)
        run_configs.append(path)
    index = {
        run.run_id: {"condition": run.condition(), "seed": run.seed(), "settings": run.settings}
        for run in experiment.runs
    }
    write_text_atomic(artifacts / name / INDEX_NAME, json.dumps(index, indent=2, default=str))

    relative_out = PurePosixPath("experiments", "out", name)
    inner_args = ["--gpus", gpus] if gpus else []

    def step_jobs(script: str, step: str, gpus_per_job: int) -> list[dict[str, Any]]:
        return [
            {
                "script": script,
                "config": f"{run_folder(name, run.run_id)}/config.yml",
                "name": f"{step}-{run.run_id}",
                "run_in": run_in,
                "num_gpus": gpus_per_job,
            }
            for run in experiment.runs
        ]

    feature_jobs = {
        "jobs": [
            {
                "input_path": need.manifests,
                "partitions": list(need.partitions),
                "feature": need.feature,
                "output_path": need.output_path,
                "device": experiment.cache.device,
                "batch_size": experiment.cache.batch_size,
            }
            for need in cache_needs(experiment)
        ]
    }
    _dump(out / "cache.yml", feature_jobs, header)
    _dump(
        out / "train.yml",
        _pipeline(f"{name}-train", num_jobs, step_jobs("scripts/train.py", "train", num_gpus)),
        header,
    )
    _dump(
        out / "evaluate.yml",
        _pipeline(
            f"{name}-evaluate", num_jobs, step_jobs("scripts/evaluate.py", "evaluate", num_gpus)
        ),
        header,
    )
    analyze_job = {
        "experiments": [name],
        "artifacts_directory": ARTIFACTS_VARIABLE,
        # The run ids make this file change when the runs change, so the pipeline reruns it.
        "runs": [run.run_id for run in experiment.runs],
        "report": experiment.report.model_dump(),
    }
    _dump(out / "analyze.yml", analyze_job, header)
    cache_gpus = 1 if experiment.cache.device == "cuda" else 0
    steps = []
    if experiment.expansion.populate_cache:
        steps.append(("cache", "scripts/compute_features.py", "cache.yml", []))
    steps += [
        ("train", "scripts/pipeline.py", "train.yml", inner_args),
        ("evaluate", "scripts/pipeline.py", "evaluate.yml", inner_args),
        ("analyze", "scripts/analyze.py", "analyze.yml", []),
    ]
    outer_jobs = [
        {
            "script": script,
            "config": str(relative_out / config),
            "name": f"{name}-{step}",
            # the pipelines inside choose run_in per job; the cache step runs like them
            "run_in": run_in if script != "scripts/pipeline.py" else "host",
            "num_gpus": cache_gpus if step == "cache" else 0,
            "blocking": True,
            "args": list(args),
        }
        for step, script, config, args in steps
    ]
    _dump(out / "pipeline.yml", _pipeline(name, 1, outer_jobs), header)
    return WrittenFiles(out, out / "pipeline.yml", run_configs)
