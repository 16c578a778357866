"""Gather the runs of one or more experiments into pandas tables (runs, histories, statistics).

The one library call of the analysis notebook (``load_results``) and of ``scripts/analyze.py``.

An experiment's runs are listed in ``${ARTIFACTS_DIRECTORY}/<name>/runs.json`` (written by the
sweep; without it every ``<run_id>/config.yml`` counts). A run is finished when its
``results.json`` holds dev and test PER; every other run is listed with its status (a failed
train or evaluate job is read from its pipeline log), never dropped silently. PER columns are
percentages.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from speechbed.reports.statistics import describe_by_condition
from speechbed.storage import storage_directory

RUN_COLUMNS = [
    "experiment", "run_id", "condition", "seed", "dev_per", "test_per", "epochs",
    "best_epoch", "training_seconds", "decoding_seconds", "beam_width", "run_dir",
]  # fmt: skip
UNFINISHED_COLUMNS = ["experiment", "run_id", "condition", "seed", "status", "run_dir"]
PARTITIONS = ("dev", "test")


@dataclass
class ExperimentResults:
    """Everything the analysis shows: finished runs, the others, histories and statistics."""

    runs: pd.DataFrame
    unfinished: pd.DataFrame
    histories: pd.DataFrame
    statistics: pd.DataFrame


def default_artifacts_directory() -> Path:
    """``ARTIFACTS_DIRECTORY``, else ``storage/artifacts`` under ``SPEECHBED_ROOT`` or the cwd."""
    return storage_directory("ARTIFACTS_DIRECTORY", os.environ.get("SPEECHBED_ROOT") or Path.cwd())


def _run_index(folder: Path) -> dict[str, dict[str, Any]]:
    index_path = folder / "runs.json"
    if index_path.is_file():
        return json.loads(index_path.read_text(encoding="utf-8"))
    return {
        path.parent.name: {"condition": "base", "seed": None, "settings": {}}
        for path in sorted(folder.glob("*/config.yml"))
    }


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
    path = run_dir / "hist.csv"
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


def _status(run_dir: Path, history: pd.DataFrame | None, results: Mapping | None) -> str:
    if results is not None:
        return "evaluated without dev and test PER"
    if (run_dir / "model.pt").is_file():
        return "trained, not evaluated"
    if history is not None and len(history):
        return f"training stopped or running after epoch {int(history['epoch'].max())}"
    if (run_dir / "config.yml").is_file():
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
    finished, unfinished, histories = [], [], []
    for name in names:
        folder = artifacts / name
        if not folder.is_dir():
            raise FileNotFoundError(f"no runs of experiment '{name}' under {artifacts}")
        for run_id, entry in _run_index(folder).items():
            if wanted is not None and run_id not in wanted:
                continue
            condition = entry.get("condition", "base")
            if len(names) > 1:
                condition = f"{name}: {condition}"
            run_dir = folder / run_id
            history = read_history(run_dir)
            results_path = run_dir / "results.json"
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
            if history is not None:
                histories.append(history.assign(**base))
            if results is None or any(scores.get(p) is None for p in PARTITIONS):
                status = failed_step(artifacts, name, run_id) or _status(run_dir, history, results)
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
    )
