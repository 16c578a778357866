"""Gather the runs of one or more experiments into pandas tables (runs, histories, statistics).

The one library call of the analysis notebook (``load_results``) and of ``scripts/analyze.py``.

An experiment's runs are listed in ``${ARTIFACTS_DIRECTORY}/<name>/runs.json`` (written by the
sweep; without it every ``<run_id>/config.yml`` counts). A run is finished when its
``results.json`` holds dev and test PER; every other run is listed with its status (a failed
train or evaluate job is read from its pipeline log), never dropped silently. A finished run
whose ``results.json`` records ``data_fingerprints`` ({partition: fingerprint} of the feature
stores it read) that no longer match ``<data.cache_directory>/<partition>.zarr`` is stale:
listed apart, never in the statistics. PER columns are percentages. A run's condition is the
name the sweep recorded (a bundle's label, e.g. ``mcorr-fbank-81-10ms``); with several
experiments it is prefixed with the experiment's name unless it already starts with it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from speechbed.errors import UserInputError
from speechbed.lineage import fingerprint, local_path
from speechbed.reports.statistics import (
    COMPARISON_COLUMNS,
    EXPERIMENT_SETTING,
    compare_conditions,
    describe_by_condition,
)
from speechbed.run_folder import ExperimentFolder, RunFolder
from speechbed.storage import repository_root, storage_directory
from speechbed.variables import substitute_variables

RUN_COLUMNS = [
    "experiment", "run_id", "condition", "seed", "dev_per", "test_per", "epochs",
    "best_epoch", "training_seconds", "decoding_seconds", "beam_width", "run_dir",
]  # fmt: skip
UNFINISHED_COLUMNS = ["experiment", "run_id", "condition", "seed", "status", "run_dir"]
STALE_COLUMNS = [
    "experiment", "run_id", "condition", "seed", "status", "dev_per", "test_per", "run_dir",
]  # fmt: skip
PARTITIONS = ("dev", "test")


@dataclass
class ExperimentResults:
    """Everything the analysis shows: current finished runs, stale ones (their data changed
    since), the unfinished ones, histories of current and unfinished runs, statistics, and the
    tests between conditions that differ in one setting (``comparisons``)."""

    runs: pd.DataFrame
    unfinished: pd.DataFrame
    histories: pd.DataFrame
    statistics: pd.DataFrame
    stale: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=STALE_COLUMNS))
    comparisons: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    )


def default_artifacts_directory() -> Path:
    """``ARTIFACTS_DIRECTORY``, else ``storage/artifacts`` under the repository root."""
    return storage_directory("ARTIFACTS_DIRECTORY", repository_root())


def partition_scores(results: Mapping[str, Any], partition: str) -> dict[str, Any] | None:
    """One partition's entry of results.json (``{"per": ..., ...}``), or None."""
    for container in (results.get("partitions"), results):
        if isinstance(container, Mapping) and isinstance(container.get(partition), Mapping):
            entry = container[partition]
            if "per" in entry:
                return dict(entry)
    return None


def _as_percent(value: float) -> float:
    return float(value) * 100.0


def read_history(run_dir: Path) -> pd.DataFrame | None:
    """The run's ``hist.csv`` (epoch, loss, dev_per as %, learning_rate, seconds), or None."""
    path = RunFolder(run_dir).history
    if not path.is_file():
        return None
    try:
        history = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None
    if "dev_per" in history:
        history["dev_per"] = history["dev_per"].map(_as_percent)
    return history


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


def _cache_folder(text: str, config_path: Path, environ: Mapping[str, str], root: Path) -> Path:
    """``data.cache_directory`` as the run's scripts see it (``${VARIABLES}`` resolved)."""
    folder = local_path(text, environ, root)  # ${CACHE_DIRECTORY}/... with the storage defaults
    if "${" in str(folder):
        folder = Path(substitute_variables(str(folder), config_path, environ))
    return folder if folder.is_absolute() else root / folder


def stale_reason(
    run_dir: Path,
    results: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    root: Path | None = None,
) -> str | None:
    """Why a finished run no longer matches its data ("stale: ..."), or None when it does.

    Only a change seen is stale: results that record no data fingerprints, a store since
    deleted (caches are rebuilt, results stay valid) or a cache folder this environment
    cannot resolve leave the run current."""
    recorded = results.get("data_fingerprints")
    if not isinstance(recorded, Mapping) or not recorded:
        return None
    environ = os.environ if environ is None else environ
    root = repository_root(environ) if root is None else root
    config_path = RunFolder(run_dir).config
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
        cache = _cache_folder(str(config["data"]["cache_directory"]), config_path, environ, root)
    except (OSError, yaml.YAMLError, KeyError, TypeError, UserInputError):
        return None
    for partition, was in sorted(recorded.items()):
        store = cache / f"{partition}.zarr"
        now = fingerprint(store)
        if now is not None and now != was:
            return f"stale: its {partition} data {store} changed since the run"
    return None


def _status(run: RunFolder, history: pd.DataFrame | None, results: Mapping | None) -> str:
    if results is not None:
        return "evaluated without dev and test PER"
    if run.model.is_file():
        return "trained, not evaluated"
    if history is not None and len(history):
        return f"training stopped or running after epoch {int(history['epoch'].max())}"
    if run.config.is_file():
        return "not started"
    return "missing run folder"


def load_results(
    names: str | Sequence[str],
    artifacts_directory: str | Path | None = None,
    runs: Iterable[str] | None = None,
) -> ExperimentResults:
    """Every run of the named experiments as tables; ``runs`` limits them to these ids."""
    names = [names] if isinstance(names, str) else list(names)
    artifacts = Path(artifacts_directory) if artifacts_directory else default_artifacts_directory()
    wanted = None if runs is None else set(runs)
    finished, unfinished, stale, histories = [], [], [], []
    condition_settings: dict[str, dict[str, Any]] = {}  # what the comparisons tell apart
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
            run_dir = run.path
            history = read_history(run_dir)
            results_path = run.results
            results = (
                json.loads(results_path.read_text(encoding="utf-8"))
                if results_path.is_file()
                else None
            )
            scores = {p: partition_scores(results, p) for p in PARTITIONS} if results else {}
            base = {
                "experiment": name,
                "run_id": run_id,
                "condition": condition,
                "seed": entry.get("seed"),
            }
            complete = results is not None and all(scores.get(p) is not None for p in PARTITIONS)
            outdated = stale_reason(run_dir, results) if complete else None
            if history is not None and outdated is None:
                histories.append(history.assign(**base))
            if outdated is not None:
                stale.append(
                    {
                        **base,
                        "status": outdated,
                        "dev_per": _as_percent(scores["dev"]["per"]),
                        "test_per": _as_percent(scores["test"]["per"]),
                        "run_dir": str(run_dir),
                    }
                )
                continue
            if not complete:
                status = failed_step(artifacts, name, run_id) or _status(run, history, results)
                unfinished.append({**base, "status": status, "run_dir": str(run_dir)})
                continue
            finished.append(
                {
                    **base,
                    "dev_per": _as_percent(scores["dev"]["per"]),
                    "test_per": _as_percent(scores["test"]["per"]),
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
                    "run_dir": str(run_dir),
                }
            )
    runs_table = pd.DataFrame(finished, columns=RUN_COLUMNS)
    history_table = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame()
    return ExperimentResults(
        runs=runs_table,
        unfinished=pd.DataFrame(unfinished, columns=UNFINISHED_COLUMNS),
        histories=history_table,
        statistics=describe_by_condition(runs_table),
        stale=pd.DataFrame(stale, columns=STALE_COLUMNS),
        comparisons=compare_conditions(runs_table, condition_settings),
    )
