"""Experiment files: read one through the job-file loader, check its sections, expand its sweep.

Called by ``speechbed.sweep.experiment`` (``load_experiment``) for scripts/sweep_experiment.py.

The file is read like every job file (``speechbed.jobs``): a key given twice is an error naming
its line, a malformed ``${...}`` reference names its line, and an unknown key names file:line
and the nearest known key. The ``${VARIABLES}`` themselves stay as written: the run configs
keep them, and the scripts that read those resolve them on the machine that runs them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import Field

from speechbed.errors import UserInputError
from speechbed.jobs import JobSchema, Location, load_document, validate_document
from speechbed.reports.settings import ReportSettings
from speechbed.run_folder import ExperimentFolder
from speechbed.sweep.expansion import (
    BUNDLE_PREFIX,
    Expansion,
    Run,
    bundle_items,
    expand,
    key_paths,
)
from speechbed.sweep.selection import parse_overrides, parse_selection, select_runs
from speechbed.tasks import DEFAULT_TASK, unknown_task

RUN_SECTIONS = ("info", "data", "model", "training", "evaluation")
ARTIFACTS_VARIABLE = "${ARTIFACTS_DIRECTORY}"
_RUN_SECTION = "a section of every run config (the task's RunConfig, speechbed.training.config)"


class CacheSettings(JobSchema):
    """How the cache step computes the feature caches the runs read (``cache`` section)."""

    manifests: str | None = Field(
        None,
        description="manifest folder (<partition>.jsonl) the caches are computed from; "
        "null: the 'manifests' folder next to data.cache_directory",
    )
    device: Literal["cpu", "cuda"] = Field("cpu", description="cpu | cuda")
    batch_size: int = Field(16, ge=1, description="utterances per feature batch")


class ExperimentFile(JobSchema):
    """The sections of an experiment file. The run sections stay mappings here: the sweep
    fills them in, and every run it resolves is validated against the run schema."""

    task: str = Field(
        DEFAULT_TASK, description="the recipe every run trains (the run configs' task)"
    )
    info: dict[str, Any] = Field(default_factory=dict, description=_RUN_SECTION)
    data: dict[str, Any] = Field(default_factory=dict, description=_RUN_SECTION)
    model: dict[str, Any] = Field(default_factory=dict, description=_RUN_SECTION)
    training: dict[str, Any] = Field(default_factory=dict, description=_RUN_SECTION)
    evaluation: dict[str, Any] = Field(default_factory=dict, description=_RUN_SECTION)
    report: ReportSettings = Field(
        default_factory=ReportSettings, description="reports the analysis sends"
    )
    cache: CacheSettings = Field(
        default_factory=CacheSettings, description="where and how the cache step computes"
    )
    sweep: list[dict[str, Any]] = Field(
        default_factory=list, description="entries, each expanding to a product of runs"
    )


@dataclass
class Experiment:
    """A loaded experiment file, expanded."""

    name: str
    source: Path
    document: dict[str, Any]
    expansion: Expansion
    report: ReportSettings
    cache: CacheSettings
    selected: list[Run] | None = None  # the runs only= picked (None: every run)
    task: str = DEFAULT_TASK

    @property
    def runs(self) -> list[Run]:
        """The runs to run: those ``only=`` picked, else every run of the sweep."""
        return self.expansion.runs if self.selected is None else self.selected


def run_schema(task: str) -> Any:
    """The run config class of ``task``, whose schema every expanded run is validated with."""
    # Only the schema modules: the sweep never imports the training code itself.
    from speechbed.training.config import run_config_class

    return run_config_class(task)


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


def portable_folder(name: str) -> ExperimentFolder:
    """The experiment's folder as run configs and job files name it, so that they work on any
    machine: ``${ARTIFACTS_DIRECTORY}/<name>``."""
    return ExperimentFolder(Path(ARTIFACTS_VARIABLE) / name)


def _setting_line(
    document: Mapping[str, Any], lines: dict[Location, int], run: Run, key: str
) -> int | None:
    """The line of the sweep entry that gave ``run`` its ``key`` (inside a bundle: the bundle's)."""
    entry: Location = ("sweep", run.sweep_index) if run.sweep_index is not None else ()
    if not entry:
        return None
    if entry + (key,) in lines:
        return lines[entry + (key,)]
    settings = document["sweep"][run.sweep_index]
    for name, bundles in settings.items():
        if not str(name).startswith(BUNDLE_PREFIX):
            continue
        places = bundles.keys() if isinstance(bundles, Mapping) else range(len(bundles))
        for (_, bundle), place in zip(bundle_items(bundles, name), places, strict=True):
            if bundle.get(key) == run.settings[key]:
                return lines.get(entry + (name, place, key))
    return lines.get(entry)


def _run_lines(
    document: Mapping[str, Any], lines: dict[Location, int], run: Run
) -> dict[Location, int]:
    """The file's lines for a run's config: a key the sweep set points at its sweep entry."""
    found = dict(lines)
    for key in run.settings:
        line = _setting_line(document, lines, run, key)
        if line is None:
            continue
        if "." in key:
            targets = [tuple(key.split("."))]
        else:
            targets = [path for path in key_paths(run.config) if path[-1] == key]
        for target in targets:
            found[target] = line
    return found


def load_experiment(
    path: str | Path,
    overrides: str | Sequence[str] | None = None,
    only: str | Sequence[str] | None = None,
) -> Experiment:
    """Read, check and expand an experiment file; every run config is validated.

    ``overrides`` (``set=``) and ``only`` are ``key=value`` words (``speechbed.sweep.selection``).
    Raises ``UserInputError`` naming the file, the line and the key (and, for a run the
    sweep made, its sweep entry and condition).
    """
    path = Path(path)
    document, lines = load_document(path, keep_variables=True)
    # An empty section (`report:` with nothing under it) is the section left out.
    if isinstance(document, Mapping):
        document = {key: value for key, value in document.items() if value is not None}
    sections = validate_document(ExperimentFile, document or {}, path, lines, "experiment")
    document = dict(document or {})
    name = path.stem
    task = sections.task
    problem = unknown_task(task)
    if problem is not None:
        raise UserInputError(f"{path}:{lines.get(('task',), 1)}: task: {problem}")
    schema = run_schema(task)
    # A stated task goes into every run config (left out, each run has the default).
    run_sections = RUN_SECTIONS + (("task",) if "task" in document else ())
    settings = parse_overrides(overrides)
    expansion = expand(
        document, run_sections, schema_paths(schema), source=str(path), overrides=settings
    )
    given = " ".join(f"{key}={value}" for key, value in settings.items())
    for number, run in enumerate(expansion.runs):
        info = run.config.setdefault("info", {})
        info["name"] = f"{name}-{run.run_id}"
        info["run_dir"] = str(portable_folder(name).run(run.run_id).path)
        where = f"sweep entry {run.sweep_index}, " if run.sweep_index is not None else ""
        label = f"{where}run {number} ({run.condition()})" + (f" with set={given}" if given else "")
        validate_document(schema, run.config, path, _run_lines(document, lines, run), label)
    selected = select_runs(expansion.runs, parse_selection(only), str(path)) if only else None
    if expansion.populate_cache and not schema.feature_cache_step:
        line = lines.get(("sweep",), 1)
        raise UserInputError(
            f"{path}:{line}: populate_cache: task {task}'s runs do not read caches the cache "
            "step computes; make its data with the corpus's data_prep pipeline"
        )
    return Experiment(
        name, path, document, expansion, sections.report, sections.cache, selected, task
    )
