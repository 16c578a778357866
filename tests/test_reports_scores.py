"""Experiments analysed by their task's own score: an accuracy experiment (higher is better, %)
and a separation experiment (SI-SDRi in dB, higher is better), from hand-made run folders."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import yaml

from speechbed.errors import UserInputError
from speechbed.lineage import fingerprint
from speechbed.reports import analysis, plots
from speechbed.reports.analysis import send_reports, summary_text, write_tables_and_plots
from speechbed.reports.results import load_results, run_columns
from speechbed.reports.saved import print_saved_results
from speechbed.reports.score import PER, Score, read_score_record, score_of_results
from speechbed.reports.settings import ReportSettings
from speechbed.reports.statistics import comparisons_title
from speechbed.tasks import TASKS, TaskEntry

ROOT = Path(__file__).resolve().parent.parent
ACCURACY = Score("accuracy", lower_is_better=False, is_percent=True)
SI_SDRI = Score("si_sdri", lower_is_better=False, is_percent=False)
# {condition: (dev values, test values)} as results.json stores them (accuracy as a fraction)
KWS_RUNS = {
    "lstm": ([0.80, 0.84, 0.82], [0.79, 0.81, 0.80]),
    "tcresnet": ([0.90, 0.93, 0.87], [0.88, 0.91, 0.91]),
}
SEPARATION_RUNS = {"chimera": ([10.0, 11.0, 12.0], [9.5, 10.5, 11.5]), "dc": ([-1.0, 1.0, 3.0], [0.0, 1.0, 2.0])}  # fmt: skip


def _results(score: Score | None, dev: float, test: float | None) -> dict:
    """results.json as evaluation writes it (``score`` None: as older code wrote PER)."""
    key = (score or PER).key
    results = {"name": "run", "epoch": 2, f"dev_{key}": dev, "dev": {key: dev, "items": 10}}
    if test is not None:
        results.update({f"test_{key}": test, "test": {key: test, "items": 10}})
    if score is not None:
        results["score"] = {
            "key": score.key, "lower_is_better": score.lower_is_better,
            "is_percent": score.is_percent,
        }  # fmt: skip
    return results


def _run_folder(folder: Path, score: Score, dev: float | None, test: float | None) -> None:
    folder.mkdir(parents=True)
    (folder / "config.yml").write_text(yaml.safe_dump({"info": {"seed": 1}}))
    dev_curve = [dev - 0.1 if score.is_percent else -2.0, dev] if dev is not None else [0.5, 0.6]
    pd.DataFrame(
        {
            "epoch": [1, 2],
            "loss": [1.0, 0.5],
            f"dev_{score.key}": dev_curve,
            "learning_rate": [1e-3, 1e-3],
            "seconds": [2.0, 3.0],
        }  # fmt: skip
    ).to_csv(folder / "hist.csv", index=False)
    if dev is not None:
        (folder / "results.json").write_text(json.dumps(_results(score, dev, test)))


def _experiment(artifacts: Path, name: str, score: Score, runs: dict, setting: str) -> Path:
    folder = artifacts / name
    index = {}
    for condition, (devs, tests) in runs.items():
        for seed, (dev, test) in enumerate(zip(devs, tests, strict=True), 1):
            run_id = f"{condition}-{seed}"
            _run_folder(folder / run_id, score, dev, test)
            index[run_id] = {
                "condition": condition, "seed": seed, "settings": {setting: condition, "seed": seed}
            }  # fmt: skip
    (folder / "runs.json").write_text(json.dumps(index))
    return folder


def _kws(artifacts: Path) -> Path:
    folder = _experiment(artifacts, "kws_exp", ACCURACY, KWS_RUNS, "model.architecture")
    # evaluated, but without a test score: listed as unfinished
    _run_folder(folder / "half", ACCURACY, 0.5, None)
    index = json.loads((folder / "runs.json").read_text())
    index["half"] = {"condition": "lstm", "seed": 9, "settings": {"model.architecture": "lstm"}}
    (folder / "runs.json").write_text(json.dumps(index))
    return folder


def _separation(artifacts: Path) -> Path:
    return _experiment(artifacts, "sep_exp", SI_SDRI, SEPARATION_RUNS, "training.loss")


def _sd(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def test_the_score_is_read_from_results_and_is_per_for_older_results():
    assert score_of_results({}) == PER
    assert score_of_results(_results(ACCURACY, 0.9, 0.8)) == ACCURACY
    assert (ACCURACY.label, SI_SDRI.label, PER.label) == ("accuracy (%)", "SI-SDRi (dB)", "PER (%)")
    assert Score("wer").label == "WER (%)"
    assert SI_SDRI.shown(10.5) == 10.5 and ACCURACY.shown(0.25) == 25.0
    with pytest.raises(UserInputError, match="r1/results.json: 'score' needs a 'key'"):
        score_of_results({"score": {"lower_is_better": False}}, "r1/results.json")


def test_an_accuracy_experiment_has_accuracy_columns_statistics_and_comparisons(tmp_path):
    _kws(tmp_path)
    results = load_results("kws_exp", tmp_path)
    assert results.score == ACCURACY
    assert list(results.runs.columns) == run_columns(ACCURACY)
    assert {"dev_accuracy", "test_accuracy"} <= set(results.runs.columns)
    assert not any("per" in column.split("_") for column in results.runs.columns)
    runs = results.runs.set_index("run_id")
    assert runs.loc["lstm-2", "dev_accuracy"] == pytest.approx(84.0)  # shown in %
    assert runs.loc["tcresnet-3", "test_accuracy"] == pytest.approx(91.0)
    (half,) = results.unfinished.itertuples()
    assert half.run_id == "half" and half.status == "evaluated without dev and test accuracy"
    history = results.histories.set_index("run_id").loc["lstm-1"]
    assert history["dev_accuracy"].tolist() == pytest.approx([70.0, 80.0])

    statistics = results.statistics.set_index(["condition", "partition"])
    for condition, (devs, tests) in KWS_RUNS.items():
        for partition, values in (("dev", devs), ("test", tests)):
            percent = sorted(100 * v for v in values)
            row = statistics.loc[(condition, partition)]
            assert row["n"] == 3
            assert row["mean"] == pytest.approx(sum(percent) / 3)
            assert row["sd"] == pytest.approx(_sd(percent))
            assert row["median"] == pytest.approx(percent[1])
            assert (row["min"], row["max"]) == pytest.approx((percent[0], percent[2]))
            assert percent[0] <= row["ci95_low"] <= row["mean"] <= row["ci95_high"] <= percent[2]
    assert statistics.loc[("lstm", "dev"), "sd"] == pytest.approx(2.0)  # 80, 84, 82
    assert statistics.loc[("tcresnet", "dev"), "sd"] == pytest.approx(3.0)  # 90, 93, 87

    # a = lstm (mean 82 %), b = tcresnet (90 %): a - b < 0, and higher is better: b is better
    comparison = results.comparisons.set_index("partition").loc["dev"]
    assert (comparison["condition_a"], comparison["condition_b"]) == ("lstm", "tcresnet")
    assert comparison["setting"] == "model.architecture"
    assert comparison["difference"] == pytest.approx(82.0 - 90.0)
    welch_t = -8.0 / math.sqrt(4.0 / 3 + 9.0 / 3)
    welch_df = (4.0 / 3 + 9.0 / 3) ** 2 / ((4.0 / 3) ** 2 / 2 + (9.0 / 3) ** 2 / 2)
    assert comparison["welch_t"] == pytest.approx(welch_t)
    assert comparison["welch_df"] == pytest.approx(welch_df)
    assert comparison["cohens_d"] == pytest.approx(-8.0 / math.sqrt((2 * 4.0 + 2 * 9.0) / 4))
    assert comparison["rank_biserial"] == pytest.approx(-1.0)  # every lstm run below tcresnet
    title = comparisons_title(ACCURACY)
    assert "of accuracy (%), higher is better (a is better when it is positive)" in title
    assert "lower is better (a is better when it is negative)" in comparisons_title(PER)


def test_a_decibel_score_is_not_scaled_and_its_axes_take_in_negative_values(tmp_path):
    _separation(tmp_path)
    results = load_results("sep_exp", tmp_path)
    assert results.score == SI_SDRI
    runs = results.runs.set_index("run_id")
    assert runs.loc["dc-1", "dev_si_sdri"] == -1.0 and runs.loc["chimera-3", "test_si_sdri"] == 11.5
    statistics = results.statistics.set_index(["condition", "partition"])
    assert statistics.loc[("dc", "dev"), "mean"] == pytest.approx(1.0)
    assert statistics.loc[("dc", "dev"), "sd"] == pytest.approx(2.0)  # -1, 1, 3
    assert statistics.loc[("chimera", "test"), "mean"] == pytest.approx(10.5)
    comparison = results.comparisons.set_index("partition").loc["dev"]
    assert comparison["difference"] == pytest.approx(11.0 - 1.0)  # a = chimera: a is better
    assert comparison["welch_t"] == pytest.approx(10.0 / math.sqrt(1.0 / 3 + 4.0 / 3))
    assert results.histories.set_index("run_id").loc["dc-1", "dev_si_sdri"].tolist() == [-2.0, -1.0]

    figure = plots.score_by_condition(results.runs, score=results.score)
    for axis, partition in zip(figure.axes, ("dev", "test"), strict=True):
        assert axis.get_ylabel() == "SI-SDRi (dB)"
        assert axis.get_title() == f"{partition}: SI-SDRi (dB) per condition, one point per run"
        bottom, top = axis.get_ylim()
        column = results.runs[f"{partition}_si_sdri"]
        assert bottom <= min(0.0, column.min()) and top >= column.max()
    assert figure.axes[0].get_ylim()[0] < -1.0  # dc's -1 dB inside the panel, not on its edge
    plt.close(figure)
    figure = plots.learning_curves(results.histories, score=results.score)
    score_axis, loss_axis = figure.axes
    assert score_axis.get_title() == "dev SI-SDRi (dB) per epoch"  # no decoding to name
    assert score_axis.get_ylabel() == "SI-SDRi (dB)" and score_axis.get_ylim()[0] <= -2.0
    assert loss_axis.get_ylabel() == "loss" and "CTC" not in loss_axis.get_title()
    plt.close(figure)


def test_the_analysis_folder_and_reports_are_in_the_experiments_score(tmp_path, monkeypatch):
    _kws(tmp_path)
    results = load_results("kws_exp", tmp_path)
    folder = tmp_path / "kws_exp" / "analysis"
    outputs = write_tables_and_plots(results, folder)
    assert (folder / "accuracy_by_condition.png").is_file()
    assert not (folder / "per_by_condition.png").exists()
    assert read_score_record(folder) == ACCURACY
    assert json.loads((folder / "score.json").read_text())["label"] == "accuracy (%)"
    assert list(pd.read_csv(folder / "runs.csv").columns) == run_columns(ACCURACY)
    assert "higher is better" in (folder / "statistics.md").read_text()
    summary = summary_text(results, outputs)
    assert "accuracy (%) per condition and partition:" in summary and "PER" not in summary
    printed = io.StringIO()
    assert print_saved_results(folder, printed)
    assert printed.getvalue().startswith("accuracy (%) per condition and partition (kws_exp):")

    # the saved figure's axes, read back from the figure the analysis drew
    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: drawn.append(figure) or path)
    write_tables_and_plots(results, tmp_path / "again")
    by_condition, curves = drawn
    assert [axis.get_ylabel() for axis in by_condition.axes] == ["accuracy (%)"] * 2
    assert curves.axes[0].get_title() == "dev accuracy (%) per epoch"
    assert curves.axes[1].get_ylabel() == "cross-entropy loss"
    for figure in drawn:
        plt.close(figure)

    # comet and TensorBoard hparams get the final accuracy; the Sheet its columns and titles
    logged = {}

    def log_run(run_dir, run_id, experiment, config, history, final, *rest, **options):
        logged[run_id] = (final, history)
        return "offline: archive"

    monkeypatch.setattr(analysis.comet, "log_run", log_run)
    monkeypatch.setattr(analysis.tensorboard, "write_history_scalars", lambda *a, **k: None)
    hparams = {}
    monkeypatch.setattr(
        analysis.tensorboard,
        "describe_run",
        lambda run_dir, metrics: hparams.setdefault(Path(run_dir).name, metrics) and run_dir,
    )
    settings = ReportSettings(tensorboard=True, comet=True, google_sheet=False)
    statuses = send_reports(results, ["kws_exp"], settings, environ={})
    assert statuses["comet"] == "6 offline"
    final, history = logged["tcresnet-2"]
    assert final == pytest.approx({"dev_accuracy": 93.0, "test_accuracy": 91.0})
    assert history["dev_accuracy"].tolist() == pytest.approx([83.0, 93.0])
    assert hparams["lstm-1"] == pytest.approx({"dev_accuracy": 80.0, "test_accuracy": 79.0})


def test_the_sheet_dry_run_names_the_score(tmp_path, capsys):
    _separation(tmp_path)
    results = load_results("sep_exp", tmp_path)
    settings = ReportSettings(tensorboard=False, google_sheet=True)
    send_reports(results, ["sep_exp"], settings, dry_run=True, environ={})
    printed = capsys.readouterr().out.splitlines()
    header = printed[1].strip().split("\t")
    assert header[4:6] == ["dev_si_sdri", "test_si_sdri"]
    assert "  summary: SI-SDRi (dB)" in printed
    assert any("higher SI-SDRi is better" in line for line in printed)


def test_a_trained_but_unevaluated_experiment_takes_its_score_from_hist_csv(tmp_path):
    folder = tmp_path / "exp"
    _run_folder(folder / "r1", ACCURACY, None, None)
    (folder / "runs.json").write_text(json.dumps({"r1": {"condition": "c", "seed": 1}}))
    results = load_results("exp", tmp_path)
    assert results.score == ACCURACY and len(results.runs) == 0
    assert results.histories["dev_accuracy"].tolist() == pytest.approx([50.0, 60.0])
    figure = plots.learning_curves(results.histories, score=results.score)
    assert figure.axes[0].get_ylabel() == "accuracy (%)"
    plt.close(figure)


def test_experiments_scored_differently_are_refused_together(tmp_path):
    _kws(tmp_path)
    _separation(tmp_path)
    with pytest.raises(UserInputError) as refused:
        load_results(["kws_exp", "sep_exp"], tmp_path)
    message = str(refused.value)
    assert "cannot analyse these experiments together" in message
    assert "kws_exp: accuracy (%), higher is better" in message
    assert "sep_exp: SI-SDRi (dB), higher is better" in message

    # one experiment whose runs were scored differently: the runs are named
    folder = tmp_path / "mixed"
    _run_folder(folder / "old", PER, 0.2, 0.3)
    (folder / "old" / "results.json").write_text(json.dumps(_results(None, 0.2, 0.3)))
    _run_folder(folder / "new", ACCURACY, 0.9, 0.8)
    index = {"old": {"condition": "c", "seed": 1}, "new": {"condition": "c", "seed": 2}}
    (folder / "runs.json").write_text(json.dumps(index))
    with pytest.raises(UserInputError, match=r"experiment 'mixed' has runs scored differently"):
        load_results("mixed", tmp_path)
    assert load_results("mixed", tmp_path, runs=["new"]).score == ACCURACY

    job = tmp_path / "analyze.yml"
    job.write_text(
        yaml.safe_dump(
            {"experiments": ["kws_exp", "sep_exp"], "artifacts_directory": str(tmp_path)}
        )
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "analyze.py"), "-y", str(job)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 1
    assert "cannot analyse these experiments together" in result.stderr
    assert "kws_exp" in result.stderr and "sep_exp" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "kws_exp+sep_exp" / "analysis" / "runs.csv").exists()


def _store(path: Path, content: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "zarr.json").write_text(content)


def test_stale_reads_the_source_the_runs_task_reads_a_partition_from(tmp_path, monkeypatch):
    """A kws run that augments audio trains on the audio store, not the feature cache."""
    if "kws" not in TASKS:  # (registered with the task; the reports need its config only)
        entry = TaskEntry(
            task="speechbed.tasks.kws.task:KwsTask",
            config="speechbed.tasks.kws.config:KwsRunConfig",
        )
        monkeypatch.setitem(TASKS, "kws", entry)
    cache, audio = tmp_path / "cache" / "kws" / "mfcc", tmp_path / "cache" / "kws" / "audio"
    for partition in ("train", "dev", "test"):
        _store(cache / f"{partition}.zarr", f"{partition} features v1")
        _store(audio / f"{partition}.zarr", f"{partition} audio v1")
    monkeypatch.setenv("CACHE_DIRECTORY", str(tmp_path / "cache"))
    folder = _experiment(tmp_path / "artifacts", "kws_exp", ACCURACY, {"c": ([0.9], [0.8])}, "x")
    run = folder / "c-1"
    config = {
        "task": "kws",
        "info": {"name": "c-1", "seed": 1, "run_dir": str(run)},
        "data": {
            "cache_directory": "${CACHE_DIRECTORY}/kws/mfcc",  # as the sweep writes it
            "audio_directory": "${CACHE_DIRECTORY}/kws/audio",
        },
        "training": {"time_shift_ms": 100.0},
    }
    (run / "config.yml").write_text(yaml.safe_dump(config))
    results = json.loads((run / "results.json").read_text())
    results["data_fingerprints"] = {
        "train": fingerprint(audio / "train.zarr"),
        "dev": fingerprint(cache / "dev.zarr"),
        "test": fingerprint(cache / "test.zarr"),
    }
    (run / "results.json").write_text(json.dumps(results))
    assert len(load_results("kws_exp", tmp_path / "artifacts").runs) == 1

    _store(cache / "train.zarr", "train features v2")  # not what this run trained on
    assert len(load_results("kws_exp", tmp_path / "artifacts").runs) == 1
    _store(audio / "train.zarr", "train audio v2")
    stale = load_results("kws_exp", tmp_path / "artifacts").stale.set_index("run_id")
    assert stale.loc["c-1", "status"] == (
        f"stale: its train data {audio / 'train.zarr'} changed since the run"
    )
    assert stale.loc["c-1", "dev_accuracy"] == pytest.approx(90.0)


def test_a_run_whose_tokenizer_changed_is_stale(tmp_path, monkeypatch):
    """results.json's input_fingerprints (rnnt's tokenizer, mel statistics) are checked too."""
    wer = Score("wer", lower_is_better=True, is_percent=True)
    data = tmp_path / "cache" / "asr"
    data.mkdir(parents=True)
    for partition in ("train", "dev", "test"):
        (data / f"{partition}.json").write_text(f"[] {partition}")
    tokenizer = tmp_path / "cache" / "spm" / "tokenizer.model"
    tokenizer.parent.mkdir()
    tokenizer.write_bytes(b"pieces v1")
    monkeypatch.setenv("CACHE_DIRECTORY", str(tmp_path / "cache"))
    folder = _experiment(tmp_path / "artifacts", "asr_exp", wer, {"c": ([0.4], [0.3])}, "x")
    run = folder / "c-1"
    config = {
        "task": "rnnt",
        "info": {"name": "c-1", "seed": 1, "run_dir": str(run)},
        "data": {"data_folder": "${CACHE_DIRECTORY}/asr", "tokenizer": "${CACHE_DIRECTORY}/spm"},
    }
    (run / "config.yml").write_text(yaml.safe_dump(config))
    results = json.loads((run / "results.json").read_text())
    results["data_fingerprints"] = {
        partition: fingerprint(data / f"{partition}.json") for partition in ("train", "dev", "test")
    }
    results["input_fingerprints"] = {"data.tokenizer": fingerprint(tokenizer.parent)}
    (run / "results.json").write_text(json.dumps(results))
    assert len(load_results("asr_exp", tmp_path / "artifacts").runs) == 1

    time.sleep(0.01)
    tokenizer.write_bytes(b"pieces v2, retrained")
    stale = load_results("asr_exp", tmp_path / "artifacts").stale.set_index("run_id")
    assert stale.loc["c-1", "status"] == (
        f"stale: its data.tokenizer {tokenizer.parent} changed since the run"
    )
