"""The search file: a base run config, a study, its storage, sampler, pruner and search space.

The job file of ``scripts/search.py``, loaded by ``load_search`` (which the workers, ``--best``,
``--important`` and ``make search`` share). Errors name the file, the line and the key, as for
every job file; a search-space name that is unknown, untunable or of the wrong kind, and a range
bound or choice the run config refuses, name the line of that entry.

A stage of a staged search takes what the previous stage wrote: ``include_from`` names the
file of ``scripts/search.py --important`` (its names join ``include``), ``base_from`` the
experiment of ``--best`` (its run sections are the base, under the sections written here).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import Field

from speechbed.errors import UserInputError
from speechbed.jobs import JobSchema, load_document, problems_in_one_line, validate_document
from speechbed.pipeline.schema import JOB_NAME
from speechbed.search.space import ParameterRange, name_problem, pattern_problem, schema_space
from speechbed.storage import repository_root
from speechbed.tasks import DEFAULT_TASK
from speechbed.tasks.ctc_phones.config import (
    AcousticModelConfig,
    CtcEvaluationConfig,
    CtcPhonesRunConfig,
)
from speechbed.training.config import FeatureStoreDataConfig, TrainingConfig

RUN_SECTIONS = ("data", "model", "training", "evaluation")
JOURNAL = "journal"


class SearchFile(JobSchema):
    """A hyperparameter search: what a trial trains, how trials are drawn, and how many."""

    study: str | None = Field(
        None, description="the study's name (letters, digits, . _ -); default: the file's stem"
    )
    storage: str = Field(
        JOURNAL,
        description="'journal' (an embedded store, ${ARTIFACTS_DIRECTORY}/search/<study>/"
        "journal.log, safe for workers on one machine) or a database URL for workers on several "
        "machines, written as ${SEARCH_STORAGE} (it may hold a password: keep it in private/)",
    )
    sampler: Literal["random", "tpe", "cmaes"] = Field(
        "tpe",
        description="random | tpe (multivariate, with the constant liar for parallel workers) | "
        "cmaes (int and float parameters; choices are drawn at random)",
    )
    sampler_seed: int | None = Field(None, description="seed of the sampler (null: random)")
    pruner: Literal["none", "median", "hyperband"] = Field(
        "median",
        description="stop poor trials early on their per-epoch dev metric: none | median | "
        "hyperband (epochs as the resource)",
    )
    pruner_startup_trials: int = Field(
        2, ge=0, description="median: trials finished before any is pruned"
    )
    pruner_warmup_epochs: int = Field(
        1, ge=0, description="median: epochs a trial trains before it can be pruned"
    )
    num_trials: int = Field(
        ge=1, description="finished trials (complete + pruned) the study ends with, all workers"
    )
    memory_limit_mib: float | None = Field(
        None,
        gt=0,
        description="prune, without training, a trial whose forward and backward pass at its "
        "largest batch peaks above this many MiB on its device (speechbed.search.memory; "
        "null: no limit)",
    )
    heartbeat_seconds: int = Field(
        30, ge=1, description="a running trial's worker records it is alive this often"
    )
    grace_seconds: int | None = Field(
        None,
        ge=1,
        description="a running trial silent this long is failed and retried (null: 3 heartbeats)",
    )
    max_retries: int = Field(
        2, ge=0, description="times a trial whose worker died is retried with the same settings"
    )
    task: Literal["ctc_phones"] = Field(
        DEFAULT_TASK,
        description="the recipe every trial trains (ctc_phones: the default ranges are its settings)",
    )
    seed: int = Field(0, description="info.seed of every trial")
    data: FeatureStoreDataConfig = Field(description="run config section, shared by every trial")
    model: AcousticModelConfig = Field(
        default_factory=AcousticModelConfig, description="run config section"
    )
    training: TrainingConfig = Field(
        default_factory=TrainingConfig, description="run config section"
    )
    evaluation: CtcEvaluationConfig = Field(
        default_factory=CtcEvaluationConfig, description="run config section"
    )
    include: list[str] = Field(
        default_factory=list,
        description="regular expressions on whole dotted names (e.g. 'model\\..*'): the tunable "
        "settings they match are searched over their default range (speechbed.search.space."
        "DEFAULT_RANGES)",
    )
    exclude: list[str] = Field(
        default_factory=list, description="regular expressions dropping names that include picked"
    )
    include_from: str | None = Field(
        None,
        description="the previous stage's include list, written by scripts/search.py "
        "--important (absolute, or relative to the repository root): its names join include",
    )
    base_from: str | None = Field(
        None,
        description="the previous stage's best settings, an experiment written by scripts/"
        "search.py --best: its data/model/training/evaluation sections are the base, under the "
        "sections written here",
    )
    space: dict[str, ParameterRange] = Field(
        default_factory=dict,
        description="search parameters: section.key -> {int: [low, high]} | {float: [low, "
        "high]} | {choice: [...]}, with log: true or step: N (speechbed.search.space); they "
        "override include's default ranges",
    )

    @pydantic.model_validator(mode="after")
    def _something_to_search(self) -> SearchFile:
        if not self.space and not self.include:
            raise ValueError("give the settings to search: space: {...} and/or include: [...]")
        return self

    @pydantic.field_validator("study")
    @classmethod
    def _study_is_a_file_name(cls, name: str | None) -> str | None:
        if name is not None and not JOB_NAME.fullmatch(name):
            raise ValueError("use letters, digits, '.', '_' and '-' (it names the study folder)")
        return name

    @pydantic.field_validator("storage", mode="before")
    @classmethod
    def _empty_is_journal(cls, storage: object) -> object:
        if storage is None or isinstance(storage, str) and not storage.strip():
            return JOURNAL  # ${SEARCH_STORAGE:-} left empty: the embedded store
        return storage

    @property
    def grace(self) -> int:
        return self.grace_seconds or 3 * self.heartbeat_seconds


@dataclass(frozen=True)
class Search:
    """A loaded search file: its settings, and its run sections as written (``${VAR}`` kept)."""

    source: Path
    settings: SearchFile
    written_sections: dict[str, dict[str, Any]]
    #: The previous stage's files it read (``include_from``, ``base_from``): the job's inputs.
    stage_inputs: tuple[Path, ...] = ()

    @property
    def study(self) -> str:
        return self.settings.study or self.source.stem

    def run_config(self, params: Mapping[str, Any], name: str, run_dir: Path) -> dict[str, Any]:
        """A trial's run config (a ``CtcPhonesRunConfig`` mapping): the base with ``params`` set."""
        settings = self.settings
        config: dict[str, Any] = {
            "task": settings.task,
            "info": {"name": name, "seed": settings.seed, "run_dir": str(run_dir)},
        }
        for section in RUN_SECTIONS:
            config[section] = getattr(settings, section).model_dump(mode="json")
        return with_params(config, params)


def with_params(config: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with each dotted ``section.key`` of ``params`` set."""
    result = copy.deepcopy(dict(config))
    for name, value in params.items():
        section, key = name.split(".", 1)
        result.setdefault(section, {})[key] = value
    return result


def _stage_file(document: Mapping[str, Any], key: str, path: Path, line: int) -> Path | None:
    """The previous stage's file that ``key`` names, which must exist by now."""
    value = document.get(key)
    if not value or not isinstance(value, str):
        return None
    source = Path(value) if Path(value).is_absolute() else repository_root() / value
    if not source.is_file():
        writer = "--important" if key == "include_from" else "--best"
        raise UserInputError(
            f"{path}:{line}: {key}: {source} does not exist yet; the previous stage writes it "
            f"(scripts/search.py -y PREVIOUS.yml {writer} -o {value}): run that stage first"
        )
    return source


def _with_previous_stage(
    document: dict[str, Any],
    files: Mapping[str, Path],
    environ: Mapping[str, str] | None,
    keep_variables: bool = False,
) -> dict[str, Any]:
    """``document`` with the base sections and include list its previous stage wrote."""
    document = dict(document)
    if "base_from" in files:
        base, _ = load_document(files["base_from"], environ, keep_variables)
        if not isinstance(base, dict):
            raise UserInputError(f"{files['base_from']}: expected an experiment (--best)")
        for section in RUN_SECTIONS:
            document[section] = {**(base.get(section) or {}), **(document.get(section) or {})}
    if "include_from" in files:
        written, _ = load_document(files["include_from"], environ)
        names = written.get("include") if isinstance(written, dict) else None
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise UserInputError(f"{files['include_from']}: expected 'include: [names]'")
        document["include"] = list(document.get("include") or []) + names
    return document


def load_search(path: str | Path, environ: Mapping[str, str] | None = None) -> Search:
    """Read and check a search file; raises ``UserInputError`` naming file:line and key."""
    path = Path(path)
    document, lines = load_document(path, environ)
    document = document or {}
    files = {
        key: source
        for key in ("base_from", "include_from")
        if (source := _stage_file(document, key, path, lines.get((key,), 1))) is not None
    }
    document = _with_previous_stage(document, files, environ)
    settings = validate_document(SearchFile, document, path, lines, "search")
    for key in ("include", "exclude"):
        for index, pattern in enumerate(getattr(settings, key)):
            problem = pattern_problem(pattern, CtcPhonesRunConfig)
            if problem:
                line = lines.get((key, index), lines.get((key,), 1))
                raise UserInputError(f"{path}:{line}: {key}: {problem}")
    derived = schema_space(settings.include, settings.exclude, CtcPhonesRunConfig)
    if settings.include and not derived:
        line = lines.get(("exclude",), lines.get(("include",), 1))
        raise UserInputError(f"{path}:{line}: exclude: it drops every setting include picked")
    for name, parameter in settings.space.items():
        problem = name_problem(name, parameter, CtcPhonesRunConfig)
        if problem:
            line = lines.get(("space", name), lines.get(("space",), 1))
            raise UserInputError(f"{path}:{line}: space: {problem}")
    explicit = settings.space
    settings = settings.model_copy(update={"space": {**derived, **explicit}})
    search = Search(path, settings, {})
    base = search.run_config({}, "check", Path("check"))
    for name, parameter in settings.space.items():
        if name not in explicit:
            where = f"{path}:{lines.get(('include',), 1)}: include (default range)"
        else:
            where = f"{path}:{lines.get(('space', name), lines.get(('space',), 1))}: space"
        for value in parameter.values_to_check():
            try:
                CtcPhonesRunConfig.model_validate(with_params(base, {name: value}))
            except pydantic.ValidationError as error:
                raise UserInputError(
                    f"{where}: '{name}' cannot be {value!r}: {problems_in_one_line(error)}"
                ) from None
    written, _ = load_document(path, keep_variables=True)
    written = _with_previous_stage(written or {}, files, environ, keep_variables=True)
    sections = {section: dict(written.get(section) or {}) for section in RUN_SECTIONS}
    return Search(path, settings, sections, tuple(files.values()))
