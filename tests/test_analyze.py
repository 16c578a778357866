"""Analysis: gathering run folders into tables, the files analyze.py writes, unfinished runs listed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from speechbed.reports.results import load_results

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run_folder(
    folder: Path, epochs: int | None, dev: float | None, test: float | None, model: bool = False
):
    """A run folder as training and evaluation leave it (hist.csv with PER as a fraction)."""
    folder.mkdir(parents=True)
    (folder / "config.yml").write_text(
        yaml.safe_dump({"info": {"seed": 1}, "model": {"recurrent_size": 8}})
    )
    if epochs:
        pd.DataFrame(
            {
                "epoch": range(1, epochs + 1),
                "loss": [3.0 / e for e in range(1, epochs + 1)],
                "dev_per": [0.9 / e for e in range(1, epochs + 1)],
                "learning_rate": [1e-3] * epochs,
                "seconds": [2.5] * epochs,
            }
        ).to_csv(folder / "hist.csv", index=False)
    if model:
        (folder / "model.pt").write_bytes(b"")
    if dev is not None:
        results = {
            "dev": {"per": dev, "errors": 10, "reference_phones": 100},
            "test": {"per": test, "errors": 12, "reference_phones": 100},
            "beam_width": 4,
            "epoch": epochs,
            "decoding_seconds": 1.5,
        }
        (folder / "results.json").write_text(json.dumps(results))


def _experiment(artifacts: Path, name: str = "exp") -> Path:
    folder = artifacts / name
    runs = {
        "r1": ("lin", 1, (3, 0.20, 0.25, True)),
        "r2": ("lin", 2, (3, 0.22, 0.23, True)),
        "r3": ("mel", 1, (2, 0.30, 0.31, True)),
        "r4": ("mel", 2, (2, None, None, True)),  # trained, not evaluated
        "r5": ("mel", 3, (1, None, None, False)),  # stopped after one epoch
        "r6": ("lin", 3, (None, None, None, False)),  # not started
        "r7": ("lin", 4, (2, None, None, False)),  # interrupted (or still running) after epoch 2
    }
    index = {}
    for run_id, (condition, seed, (epochs, dev, test, model)) in runs.items():
        _run_folder(folder / run_id, epochs, dev, test, model)
        settings = {"model.convolutional_mellin": condition == "mel", "seed": seed}
        index[run_id] = {"condition": condition, "seed": seed, "settings": settings}
    (folder / "runs.json").write_text(json.dumps(index))
    # r5's training job failed: the pipeline log ends with its exit code
    log = artifacts / "logs" / f"{name}-train" / "train-r5.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("epoch 1 ...\nRuntimeError: out of memory\n\n# exit code 1 after 3.0s\n")
    return folder


def test_finished_runs_become_rows_and_the_others_are_listed(tmp_path):
    _experiment(tmp_path)
    results = load_results("exp", tmp_path)
    runs = results.runs.set_index("run_id")
    assert sorted(runs.index) == ["r1", "r2", "r3"]
    assert runs.loc["r1", "dev_per"] == pytest.approx(20.0) and runs.loc[
        "r1", "test_per"
    ] == pytest.approx(25.0)
    assert runs.loc["r3", "epochs"] == 2 and runs.loc["r3", "training_seconds"] == pytest.approx(
        5.0
    )
    assert runs.loc["r2", "condition"] == "lin" and runs.loc["r2", "seed"] == 2
    unfinished = results.unfinished.set_index("run_id")["status"].to_dict()
    assert unfinished == {
        "r4": "trained, not evaluated",
        "r5": f"training failed (exit code 1); log: {tmp_path / 'logs' / 'exp-train' / 'train-r5.log'}",
        "r6": "not started",
        "r7": "training stopped or running after epoch 2",
    }
    stats = results.statistics.set_index(["condition", "partition"])
    assert stats.loc[("lin", "test"), "mean"] == pytest.approx(24.0)  # (25 + 23) / 2
    assert stats.loc[("mel", "dev"), "n"] == 1
    # learning curves of every run that trained, PER in %
    assert set(results.histories["run_id"]) == {"r1", "r2", "r3", "r4", "r5", "r7"}
    first = results.histories.query("run_id == 'r1' and epoch == 1")
    assert first["dev_per"].item() == pytest.approx(90.0)
    # lin and mel differ in one setting: tested on each partition (mel has one finished run)
    dev = results.comparisons.set_index("partition").loc["dev"]
    assert (dev["setting"], dev["condition_a"], dev["condition_b"]) == (
        "model.convolutional_mellin", "lin", "mel",
    )  # fmt: skip
    assert (dev["n_a"], dev["n_b"]) == (2, 1) and dev["difference"] == pytest.approx(-9.0)
    assert dev["mann_whitney_u"] == 0.0 and pd.isna(dev["welch_t"])


def test_only_the_listed_runs_and_conditions_named_by_experiment_when_several(tmp_path):
    _experiment(tmp_path, "a")
    _experiment(tmp_path, "b")
    results = load_results(["a", "b"], tmp_path, runs=["r1", "r6"])
    assert sorted(results.runs["condition"]) == ["a: lin", "b: lin"]
    assert sorted(results.unfinished["experiment"]) == ["a", "b"]
    # the same condition of two experiments differs in the experiment
    assert results.comparisons[["setting", "condition_a", "condition_b"]].values.tolist()[0] == [
        "experiment", "a: lin", "b: lin",
    ]  # fmt: skip
    with pytest.raises(FileNotFoundError, match="'nope'"):
        load_results("nope", tmp_path)


def _analyze(job: dict, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    path = tmp_path / "analyze.yml"
    path.write_text(yaml.safe_dump(job))
    environment = {
        **os.environ,
        "PATH_TO_GOOGLE_CREDENTIALS": str(tmp_path / "no_credentials.json"),
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "analyze.py"), "-y", str(path), *flags],
        capture_output=True, text=True, env=environment, timeout=180,
    )  # fmt: skip


def test_analyze_writes_tables_and_plots_and_prints_the_table(tmp_path):
    _experiment(tmp_path)
    job = {
        "experiments": ["exp"],
        "artifacts_directory": str(tmp_path),
        "report": {"tensorboard": False, "comet": False, "google_sheet": True},
    }
    result = _analyze(job, tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "exp" / "analysis"
    for name in ("runs.csv", "unfinished.csv", "statistics.csv", "statistics.md", "histories.csv"):
        assert (folder / name).is_file(), name
    for name in ("per_by_condition.png", "learning_curves.png"):
        assert (folder / name).read_bytes()[:8] == PNG_SIGNATURE
    statistics = pd.read_csv(folder / "statistics.csv").set_index(["condition", "partition"])
    assert statistics.loc[("lin", "dev"), "mean"] == pytest.approx(21.0)
    assert len(pd.read_csv(folder / "runs.csv")) == 3
    out = result.stdout
    assert "| lin | dev | 2 | 21.00 |" in out
    assert "Pairs of conditions that differ in one setting" in out
    assert "| model.convolutional_mellin | lin | mel | dev | 2 | 1 |" in out
    assert "Pairs of conditions" in (folder / "statistics.md").read_text()
    assert len(pd.read_csv(folder / "comparisons.csv")) == 2  # dev and test
    assert "exp/r4" in out and "trained, not evaluated" in out and "not started" in out
    assert "google_sheet: skipped: no Google credentials" in out
    assert str(folder / "per_by_condition.png") in out
    assert not list(folder.glob("*.tmp*"))


def test_dry_run_prints_the_sheet_rows(tmp_path):
    _experiment(tmp_path)
    job = {
        "experiments": ["exp"],
        "artifacts_directory": str(tmp_path),
        "report": {"google_sheet": True},
    }
    result = _analyze(job, tmp_path, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Google Sheet dry run" in result.stdout
    assert "r1\texp\tlin\t1\t20.0\t25.0" in result.stdout


def test_a_missing_experiment_is_a_clear_error(tmp_path):
    result = _analyze({"experiments": ["nope"], "artifacts_directory": str(tmp_path)}, tmp_path)
    assert result.returncode == 1
    assert "no runs of experiment 'nope'" in result.stderr and "Traceback" not in result.stderr
