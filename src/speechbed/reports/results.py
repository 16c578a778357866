"""Gather the runs of one or more experiments into pandas tables (runs, histories, statistics).

The one library call of the analysis notebook (``load_results``) and of ``scripts/analyze.py``.

An experiment's runs are listed in ``${ARTIFACTS_DIRECTORY}/<name>/runs.json`` (written by the
sweep; without it every ``<run_id>/config.yml`` counts). The tables are in the runs' score
(``speechbed.reports.score``: the task's, recorded in results.json; PER for older results),
in columns ``dev_<key>`` and ``test_<key>``, rates as percentages; experiments scored
differently are refused together. A run is finished when its ``results.json`` holds the dev
and test score; every other run is listed with its status (a failed train or evaluate job is
read from its pipeline log), never dropped silently. A finished run whose ``results.json``
records ``data_fingerprints`` ({partition: fingerprint} of the data it read) that no longer
match what its task reads the partition from (``data.source(partition)`` of its run config) is
stale: listed apart, never in the statistics. A run's condition is the name the sweep recorded
(a bundle's label, e.g. ``mcorr-fbank-81-10ms``); with several experiments it is prefixed with
the experiment's name unless it already starts with it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from speechbed.errors import UserInputError
from speechbed.lineage import fingerprint, local_path
from speechbed.reports.score import (
    PER,
    Score,
    common_score,
    score_of_history,
    score_of_results,
)
from speechbed.reports.statistics import (
    COMPARISON_COLUMNS,
    EXPERIMENT_SETTING,
    compare_conditions,
    describe_by_condition,
)
from speechbed.run_folder import ExperimentFolder, RunFolder
from speechbed.storage import repository_root, storage_directory
from speechbed.training.config import RunConfig
from speechbed.variables import substitute_variables


def run_columns(score: Score = PER) -> list[str]:
    """The run table's columns: the score's ``dev_<key>`` and ``test_<key>`` after the seed."""
    return [
        "experiment", "run_id", "condition", "seed", score.column("dev"), score.column("test"),
        "epochs", "best_epoch", "training_seconds", "decoding_seconds", "beam_width", "run_dir",
    ]  # fmt: skip


def stale_columns(score: Score = PER) -> list[str]:
    """The stale runs' table: who they are, why stale, and the scores they had."""
    return [
        "experiment", "run_id", "condition", "seed", "status", score.column("dev"),
        score.column("test"), "run_dir",
    ]  # fmt: skip


RUN_COLUMNS = run_columns(PER)
UNFINISHED_COLUMNS = ["experiment", "run_id", "condition", "seed", "status", "run_dir"]
STALE_COLUMNS = stale_columns(PER)
PARTITIONS = ("dev", "test")


@dataclass
class ExperimentResults:
    """Everything the analysis shows: current finished runs, stale ones (their data changed
    since), the unfinished ones, histories of current and unfinished runs, statistics, the
    tests between conditions that differ in one setting (``comparisons``), and the score they
    are all in (``score``: PER unless the runs' results.json say otherwise)."""

    runs: pd.DataFrame
    unfinished: pd.DataFrame
    histories: pd.DataFrame
    statistics: pd.DataFrame
    stale: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=STALE_COLUMNS))
    comparisons: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    )
    score: Score = PER


def default_artifacts_directory() -> Path:
    """``ARTIFACTS_DIRECTORY``, else ``storage/artifacts`` under the repository root."""
    return storage_directory("ARTIFACTS_DIRECTORY", repository_root())


def partition_scores(
    results: Mapping[str, Any], partition: str, key: str = "per"
) -> dict[str, Any] | None:
    """One partition's entry of results.json (``{key: ..., ...}``, key the score's), or None."""
    for container in (results.get("partitions"), results):
        if isinstance(container, Mapping) and isinstance(container.get(partition), Mapping):
            entry = container[partition]
            if key in entry:
                return dict(entry)
    return None


def _read_history_table(run_dir: Path) -> pd.DataFrame | None:
    path = RunFolder(run_dir).history
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None


def _shown_history(history: pd.DataFrame, score: Score) -> pd.DataFrame:
    column = score.column("dev")
    if column in history:
        history[column] = history[column].map(score.shown)
    return history


def read_history(run_dir: Path, score: Score | None = None) -> pd.DataFrame | None:
    """The run's ``hist.csv`` (epoch, loss, ``dev_<key>``, learning_rate, seconds) with the
    score's dev column as the tables show it (a percentage for a rate), or None.

    ``score`` defaults to the one the columns name (``score_of_history``), else PER."""
    history = _read_history_table(run_dir)
    if history is None:
        return None
    return _shown_history(history, score or score_of_history(history.columns) or PER)


_EXIT_LINE = re.compile(r"^# exit code (-?\d+)")


def failed_step(artifacts: Path, name: str, run_id: str) -> str | None:
    """ "training failed (exit code N); log: PATH" when the experiment pipeline's last attempt
    at this run's train or evaluate job failed (its log ends with the exit code)."""
    for step, doing in (("evaluate", "evaluation"), ("train", "training")):
        log = artifacts / "logs" / f"{name}-{step}" / f"{step}-{run_id}.log"
        if not log.is_file():
            continue
        lines = log.read_text(encoding="utf-8", errors="replace").rstrip().splitlines()
        match = _EXIT_LINE.match(lines[-1]) if lines else None
        if match and int(match.group(1)) != 0:
            return f"{doing} failed (exit code {match.group(1)}); log: {log}"
    return None


def _as_the_run_sees_it(
    path: Path, config_path: Path, environ: Mapping[str, str], root: Path
) -> Path:
    """A config's path as the run's scripts see it (``${VARIABLES}`` resolved)."""
    resolved = local_path(str(path), environ, root)  # ${CACHE_DIRECTORY}/... with the defaults
    if "${" in str(resolved):
        resolved = Path(substitute_variables(str(resolved), config_path, environ))
    return resolved if resolved.is_absolute() else root / resolved


def _run_config(run_dir: Path) -> RunConfig:
    """The run's config.yml as its task's run config (the run folder it sits in when the file
    leaves ``info.run_dir`` out)."""
    raw = yaml.safe_load(RunFolder(run_dir).config.read_text(encoding="utf-8")) or {}
    info = raw.get("info", {}) if isinstance(raw, Mapping) else None
    if isinstance(info, Mapping) and "run_dir" not in info:
        raw = {**raw, "info": {**info, "run_dir": str(run_dir)}}
    return RunConfig.model_validate(raw)


def stale_reason(
    run_dir: Path,
    results: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    root: Path | None = None,
) -> str | None:
    """Why a finished run no longer matches its data ("stale: ..."), or None when it does.

    Each partition in the results' ``data_fingerprints`` is compared with the file or folder
    the run's task reads it from now (``config.data.source(partition)``), and each file in its
    ``input_fingerprints`` (a tokenizer, mel statistics: ``RunConfig.training_inputs`` and
    ``evaluation_inputs``) with that file now. Only a change seen is stale: results that
    record no fingerprints, a source since deleted (caches are rebuilt, results stay valid),
    or a config or source this environment cannot read or resolve leave the run current."""
    recorded = results.get("data_fingerprints")
    inputs = results.get("input_fingerprints")
    recorded = recorded if isinstance(recorded, Mapping) else {}
    inputs = inputs if isinstance(inputs, Mapping) else {}
    if not recorded and not inputs:
        return None
    environ = os.environ if environ is None else environ
    root = repository_root(environ) if root is None else root
    config_path = RunFolder(run_dir).config
    try:
        config = _run_config(run_dir)
    except (OSError, yaml.YAMLError, TypeError, ValueError, UserInputError):
        return None  # (a pydantic ValidationError is a ValueError)
    paths = {**config.training_inputs(), **config.evaluation_inputs()}
    checks = [(f"{partition} data", was, partial(config.data.source, partition))
              for partition, was in sorted(recorded.items())]  # fmt: skip
    checks += [(key, was, partial(paths.get, key)) for key, was in sorted(inputs.items())]
    for name, was, path_now in checks:
        try:
            path = path_now()
            if path is None:  # an input this config no longer names
                continue
            source = _as_the_run_sees_it(path, config_path, environ, root)
        except (NotImplementedError, ValueError, UserInputError):
            continue
        now = fingerprint(source)
        if now is not None and now != was:
            return f"stale: its {name} {source} changed since the run"
    return None


def _status(
    run: RunFolder, history: pd.DataFrame | None, results: Mapping | None, score: Score
) -> str:
    if results is not None:
        return f"evaluated without dev and test {score.name}"
    if run.model.is_file():
        return "trained, not evaluated"
    if history is not None and len(history):
        return f"training stopped or running after epoch {int(history['epoch'].max())}"
    if run.config.is_file():
        return "not started"
    return "missing run folder"


@dataclass
class _RunRead:
    """One listed run as its folder holds it (hist.csv as written, results.json parsed)."""

    base: dict[str, Any]  # experiment, run_id, condition, seed
    run: RunFolder
    history: pd.DataFrame | None
    results: dict[str, Any] | None


def _read_results(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise UserInputError(
            f"{path}: not readable JSON ({error}); evaluate the run again"
        ) from None
    if not isinstance(results, dict):
        raise UserInputError(f"{path}: not a JSON object; evaluate the run again")
    return results


def _read_runs(
    names: Sequence[str], artifacts: Path, wanted: set[str] | None
) -> tuple[list[_RunRead], dict[str, dict[str, Any]]]:
    """The listed runs of each experiment, and each condition's settings (what the
    comparisons tell apart)."""
    read, condition_settings = [], {}
    for name in names:
        folder = ExperimentFolder(artifacts / name)
        index = folder.read_index() if folder.path.is_dir() else {}
        if not index:  # (the folder may exist only for the analysis's own lock)
            raise FileNotFoundError(f"no runs of experiment '{name}' under {artifacts}")
        for run_id, entry in index.items():
            if wanted is not None and run_id not in wanted:
                continue
            condition = entry.get("condition", "base")
            if len(names) > 1 and not condition.startswith(name):
                condition = f"{name}: {condition}"  # a label like lcorr-fbank-81-10ms says it
            condition_settings.setdefault(
                condition, {EXPERIMENT_SETTING: name, **(entry.get("settings") or {})}
            )
            run = folder.run(run_id)
            base = {"experiment": name, "run_id": run_id, "condition": condition}
            read.append(
                _RunRead(
                    {**base, "seed": entry.get("seed")},
                    run,
                    _read_history_table(run.path),
                    _read_results(run.results),
                )
            )
    return read, condition_settings


def _experiment_score(runs: Sequence[_RunRead]) -> Score:
    """The score every run is in: from results.json, else from a hist.csv's dev column;
    a UserInputError naming the experiments (or runs) whose scores differ."""
    found: dict[str, dict[Score, list[str]]] = {}
    for one in runs:
        by_score = found.setdefault(one.base["experiment"], {})
        if one.results is not None:
            score = score_of_results(one.results, one.run.results)
        elif one.history is not None:
            score = score_of_history(one.history.columns)
        else:
            score = None
        if score is not None:
            by_score.setdefault(score, []).append(one.base["run_id"])
    return common_score(found)


def load_results(
    names: str | Sequence[str],
    artifacts_directory: str | Path | None = None,
    runs: Iterable[str] | None = None,
) -> ExperimentResults:
    """Every run of the named experiments as tables; ``runs`` limits them to these ids.

    The tables are in the runs' score (``ExperimentResults.score``); experiments (or runs)
    scored differently cannot be analysed together: a UserInputError names them."""
    names = [names] if isinstance(names, str) else list(names)
    artifacts = Path(artifacts_directory) if artifacts_directory else default_artifacts_directory()
    read, condition_settings = _read_runs(names, artifacts, None if runs is None else set(runs))
    score = _experiment_score(read)
    dev, test = score.column("dev"), score.column("test")
    finished, unfinished, stale, histories = [], [], [], []
    for one in read:
        base, run, results = one.base, one.run, one.results
        history = None if one.history is None else _shown_history(one.history, score)
        scores = {p: partition_scores(results, p, score.key) for p in PARTITIONS} if results else {}
        complete = results is not None and all(scores.get(p) is not None for p in PARTITIONS)
        outdated = stale_reason(run.path, results) if complete else None
        if history is not None and outdated is None:
            histories.append(history.assign(**base))
        shown = (
            {dev: score.shown(scores["dev"][score.key]),
             test: score.shown(scores["test"][score.key])}
            if complete else {}
        )  # fmt: skip
        if outdated is not None:
            stale.append({**base, "status": outdated, **shown, "run_dir": str(run.path)})
            continue
        if not complete:
            status = failed_step(artifacts, base["experiment"], base["run_id"]) or _status(
                run, history, results, score
            )
            unfinished.append({**base, "status": status, "run_dir": str(run.path)})
            continue
        finished.append(
            {
                **base,
                **shown,
                "epochs": None if history is None else int(len(history)),
                "best_epoch": results.get("epoch"),
                "training_seconds": None
                if history is None or "seconds" not in history
                else float(history["seconds"].sum()),
                "decoding_seconds": results.get(
                    "decoding_seconds",
                    sum(float(scores[p].get("decoding_seconds", 0.0)) for p in PARTITIONS),
                ),
                "beam_width": results.get("beam_width"),
                "run_dir": str(run.path),
            }
        )
    runs_table = pd.DataFrame(finished, columns=run_columns(score))
    history_table = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame()
    return ExperimentResults(
        runs=runs_table,
        unfinished=pd.DataFrame(unfinished, columns=UNFINISHED_COLUMNS),
        histories=history_table,
        statistics=describe_by_condition(runs_table, score=score),
        stale=pd.DataFrame(stale, columns=stale_columns(score)),
        comparisons=compare_conditions(runs_table, condition_settings, score=score),
        score=score,
    )
