"""Condition labels, only= and set= picks of an experiment, and expansion on a machine without GPUs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from speechbed.errors import UserInputError
from speechbed.sweep.expansion import expand
from speechbed.sweep.experiment import load_experiment, write_experiment
from speechbed.sweep.selection import parse_overrides, parse_selection

ROOT = Path(__file__).resolve().parent.parent

LABELLED = """
info: {seed: 0}
data: {cache_directory: "${CACHE_DIRECTORY}/corpus/fbank-81-10ms", feature: fbank-81-10ms}
model: {recurrent_size: 8, recurrent_layers: 1, convolutional_layers: 1}
training: {num_epochs: 1}
report: {comet: false}
sweep:
  - multiple_parameters_model:
      lcorr: {convolutional_mellin: false}
      mcorr: {convolutional_mellin: true}
    seed: [1, 2, 3, 4]
    populate_cache: true
"""
UNLABELLED = LABELLED.replace(
    "      lcorr: {convolutional_mellin: false}\n      mcorr: {convolutional_mellin: true}\n",
    "      - {convolutional_mellin: false}\n      - {convolutional_mellin: true}\n",
)


def _experiment(folder: Path, text: str = LABELLED, name: str = "labelled") -> Path:
    path = folder / f"{name}.yml"
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- labels


def test_a_labelled_bundle_names_the_condition_and_keeps_the_run_ids(tmp_path):
    labelled = load_experiment(_experiment(tmp_path))
    plain = load_experiment(_experiment(tmp_path, UNLABELLED, "labelled"))
    assert [run.condition() for run in labelled.runs[:5:4]] == ["lcorr", "mcorr"]
    assert plain.runs[0].condition() == "convolutional_mellin=False"
    # a label lives in the conditions only: the configs, and so the run ids, are the same
    assert [r.run_id for r in labelled.runs] == [r.run_id for r in plain.runs]


def test_the_default_label_is_the_settings_last_name():
    base = {"model": {"recurrent_size": 8}, "training": {"num_epochs": 1}}
    runs = expand({**base, "sweep": [{"model.recurrent_size": [8, 16]}]}).runs
    assert [run.condition() for run in runs] == ["recurrent_size=8", "recurrent_size=16"]


def test_labels_reach_runs_json_tables_and_plots(tmp_path):
    from speechbed.reports.plots import per_by_condition
    from speechbed.reports.results import load_results
    from speechbed.reports.statistics import statistics_markdown

    experiment = load_experiment(_experiment(tmp_path))
    artifacts = tmp_path / "artifacts"
    write_experiment(experiment, tmp_path / "repo", artifacts)
    index = json.loads((artifacts / "labelled" / "runs.json").read_text())
    assert {entry["condition"] for entry in index.values()} == {"lcorr", "mcorr"}
    for number, run in enumerate(experiment.runs):
        folder = artifacts / "labelled" / run.run_id
        per = {"dev": {"per": 0.2 + number / 100}, "test": {"per": 0.3}}
        (folder / "results.json").write_text(json.dumps({"partitions": per}))
    results = load_results("labelled", artifacts)
    assert set(results.runs["condition"]) == {"lcorr", "mcorr"}
    assert results.runs["dev_per"].between(20, 30).all()  # PER in percent
    assert "| lcorr |" in statistics_markdown(results.statistics)
    figure = per_by_condition(results.runs)
    labels = [tick.get_text() for tick in figure.axes[0].get_xticklabels()]
    assert labels == ["lcorr", "mcorr"]
    # two experiments in one table: conditions get the experiment's name, once
    other = load_experiment(
        _experiment(tmp_path, LABELLED.replace("lcorr:", "other-lcorr:"), "other")
    )
    write_experiment(other, tmp_path / "repo", artifacts)
    both = load_results(["labelled", "other"], artifacts)
    assert set(both.runs["condition"]) == {"labelled: lcorr", "labelled: mcorr"}
    assert set(both.unfinished["condition"]) == {"other: mcorr", "other-lcorr"}


def test_the_study_files_label_their_conditions_with_the_studys_names():
    for name in ("lcorr", "mcorr"):
        conditions = {
            run.condition() for run in load_experiment(ROOT / f"experiments/{name}.yml").runs
        }
        assert conditions == {f"{name}-fbank-81-10ms", f"{name}-sigbank-41-2ms"}
    for name in ("demo", "small"):
        conditions = {
            run.condition() for run in load_experiment(ROOT / f"experiments/{name}.yml").runs
        }
        assert conditions == {"lcorr", "mcorr"}


def test_the_demos_run_ids_are_pinned():
    """Users' run folders are named by these ids: labels must never change them."""
    runs = load_experiment(ROOT / "experiments" / "demo.yml").runs
    assert [run.run_id for run in runs] == [
        "c1ff64cd96",
        runs[1].run_id,
        runs[2].run_id,
        "8dbec33159",
    ]


# --------------------------------------------------------------------------- only= and set=


def test_selection_words_parse_ranges_lists_and_yaml_scalars():
    assert parse_selection("feature=fbank-81-10ms seed=1-3,7") == {
        "feature": ["fbank-81-10ms"],
        "seed": [1, 2, 3, 7],
    }
    assert parse_overrides("training.num_epochs=2 recurrent_bidirectional=false") == {
        "training.num_epochs": 2,
        "recurrent_bidirectional": False,
    }
    with pytest.raises(UserInputError, match="'seed' is not key=value"):
        parse_selection("seed")


def test_only_picks_runs_by_setting_and_by_condition_and_keeps_their_ids(tmp_path):
    path = _experiment(tmp_path)
    every = load_experiment(path)
    picked = load_experiment(path, only="seed=2-3 convolutional_mellin=true")
    assert [(r.condition(), r.seed()) for r in picked.runs] == [("mcorr", 2), ("mcorr", 3)]
    ids = {(r.condition(), r.seed()): r.run_id for r in every.runs}
    assert [r.run_id for r in picked.runs] == [ids["mcorr", 2], ids["mcorr", 3]]
    by_label = load_experiment(path, only=["condition=lcorr", "seed=4"])
    assert [(r.condition(), r.seed()) for r in by_label.runs] == [("lcorr", 4)]


def test_only_writes_pipelines_for_the_picked_runs_and_keeps_the_matrix_in_runs_json(tmp_path):
    experiment = load_experiment(_experiment(tmp_path), only="seed=1")
    artifacts, root = tmp_path / "artifacts", tmp_path / "repo"
    write_experiment(experiment, root, artifacts)
    out = root / "experiments" / "out" / "labelled"
    train = yaml.safe_load((out / "train.yml").read_text())
    assert len(train["jobs"]) == 2
    analyze = yaml.safe_load((out / "analyze.yml").read_text())
    assert analyze["runs"] == [run.run_id for run in experiment.runs]
    assert len(json.loads((artifacts / "labelled" / "runs.json").read_text())) == 8


@pytest.mark.parametrize(
    "only, message",
    [
        ("sed=1", "only=: key 'sed' matches no setting of the runs (did you mean 'seed'?)"),
        ("seed=9", "only= leaves no run; the runs have seed: 1, 2, 3, 4"),
    ],
)
def test_a_bad_pick_is_an_error_naming_the_key(tmp_path, only, message):
    with pytest.raises(UserInputError) as caught:
        load_experiment(_experiment(tmp_path), only=only)
    assert message in str(caught.value) and "labelled.yml" in str(caught.value)


def test_set_overrides_every_run_and_changes_the_ids(tmp_path):
    path = _experiment(tmp_path)
    before = load_experiment(path)
    after = load_experiment(path, overrides="training.num_epochs=3 recurrent_size=4")
    assert all(run.config["training"]["num_epochs"] == 3 for run in after.runs)
    assert all(run.config["model"]["recurrent_size"] == 4 for run in after.runs)
    assert [r.condition() for r in after.runs] == [r.condition() for r in before.runs]
    assert not {r.run_id for r in after.runs} & {r.run_id for r in before.runs}
    again = load_experiment(path, overrides="training.num_epochs=3 recurrent_size=4")
    assert [r.run_id for r in again.runs] == [r.run_id for r in after.runs]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ("training.num_epoch=2", "set=: key 'training.num_epoch' matches no setting"),
        ("training.num_epochs=two", "key 'training.num_epochs'"),
        ("num_epochs", "'num_epochs' is not key=value"),
    ],
)
def test_a_bad_override_is_an_error_naming_the_key(tmp_path, overrides, message):
    with pytest.raises(UserInputError) as caught:
        load_experiment(_experiment(tmp_path), overrides=overrides)
    assert message in str(caught.value)


# --------------------------------------------------------------------------- no GPU here


def _sweep(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    manifests = tmp_path / "cache" / "corpus" / "manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    for partition in ("train", "dev", "test"):
        (manifests / f"{partition}.jsonl").write_text("")
    environ = {
        **os.environ,
        "CACHE_DIRECTORY": str(tmp_path / "cache"),
        "ARTIFACTS_DIRECTORY": str(tmp_path / "artifacts"),
        "SPEECHBED_GPUS": "",
        "CUDA_VISIBLE_DEVICES": "",
        "PATH": "/usr/bin:/bin",  # no nvidia-smi
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sweep_experiment.py"), *args],
        capture_output=True, text=True, env=environ, timeout=120,
    )  # fmt: skip


def test_expansion_for_gpus_succeeds_on_a_machine_without_any(tmp_path):
    path = _experiment(tmp_path, name="no_gpu_here_study")
    try:
        result = _sweep(["-y", str(path), "--num_gpus", "1", "--dry-run"], tmp_path)
        assert result.returncode == 0, result.stderr
        assert "8 run(s); each needs 1 GPU(s) when it runs" in result.stdout
        assert "dry run: nothing written" in result.stdout
        assert not (tmp_path / "artifacts").exists()
        picked = _sweep(["-y", str(path), "--num_gpus", "1", "--only", "seed=1"], tmp_path)
        assert picked.returncode == 0, picked.stderr
        assert "2 run(s) of 8 (only=)" in picked.stdout
        train = ROOT / "experiments" / "out" / "no_gpu_here_study" / "train.yml"
        assert all(job["num_gpus"] == 1 for job in yaml.safe_load(train.read_text())["jobs"])
        running = _sweep(["-y", str(path), "--num_gpus", "1", "--run"], tmp_path)
        assert running.returncode == 2 and "asks for 1 GPU(s)" in running.stderr
    finally:
        import shutil

        shutil.rmtree(ROOT / "experiments" / "out" / "no_gpu_here_study", ignore_errors=True)
