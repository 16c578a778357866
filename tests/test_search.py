"""Tests of the hyperparameter search: the search-file grammar, parallel workers ending with the
exact trial count, a SIGKILLed worker's trial retried, and best/importance on hand-made studies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from speechbed.errors import UserInputError
from speechbed.search import results
from speechbed.search.search_file import load_search
from speechbed.search.storage import check_parallel_storage, describe_storage
from speechbed.search.worker import SURPLUS_ATTR, open_study

REPOSITORY = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

TINY = {
    "data": {"batch_size": 4},
    "model": {
        "window_size": 4,
        "window_stride": 2,
        "convolutional_layers": 1,
        "convolutional_initial_channels": 4,
        "convolutional_freq_factor": 1,
        "recurrent_size": 16,
        "recurrent_layers": 1,
    },
    "training": {"num_epochs": 2, "log10_learning_rate": -2, "num_threads": 1},
}


def run_script(
    environ: dict[str, str], script: str, *args: str, timeout: float
) -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS`` in the repository with ``environ``, output captured."""
    return subprocess.run(
        [PYTHON, script, *args],
        cwd=REPOSITORY, env=environ, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture
def environ(tmp_path: Path, monkeypatch) -> dict[str, str]:
    monkeypatch.setenv("ARTIFACTS_DIRECTORY", str(tmp_path / "artifacts"))
    monkeypatch.setenv("SPEECHBED_LEASE_DIR", str(tmp_path / "leases"))
    env = {k: v for k, v in os.environ.items() if k not in ("SPEECHBED_GPUS", "ENV_FILE")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONPATH"] = str(REPOSITORY / "src")
    return env


def search_file(tmp_path: Path, cache: Path, **settings) -> Path:
    document = {
        "study": "tiny",
        "num_trials": 3,
        "sampler": "random",
        "sampler_seed": 1,
        "pruner": "none",
        "heartbeat_seconds": 1,
        "grace_seconds": 3,
        **TINY,
        "space": {
            "model.recurrent_size": {"int": [8, 32], "log": True},
            "training.log10_learning_rate": {"float": [-3.0, -1.5]},
        },
    }
    document["data"] = {**TINY["data"], "cache_directory": str(cache)}
    document.update(settings)
    path = tmp_path / "search.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


# --------------------------------------------------------------------------- the search file


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("model.recurrent_sise: {int: [8, 64]}", "did you mean 'model.recurrent_size'"),
        ("training.device: {choice: [cpu, cuda]}", "'training.device' is not tunable"),
        ("info.seed: {int: [1, 4]}", "only data, model, training settings"),
        ("model.recurrent_size: {float: [8, 64]}", "does not take fractions; use int"),
        ("model.recurrent_type: {int: [1, 4]}", "is not a number; use choice"),
        ("model.recurrent_size: {int: [0, 64]}", "cannot be 0"),
        ("model.recurrent_type: {choice: [GRU, GLU]}", "cannot be 'GLU'"),
        ("model.recurrent_size: {int: [64, 8]}", "low 64 is above high 8"),
        ("training.dropout_prob: {float: [0.0, 0.5], log: true}", "log needs a positive low"),
        ("model.recurrent_size: {int: [8, 64], choice: [8]}", "exactly one of int, float, choice"),
        ("model.recurrent_size: {range: [8, 64]}", "unknown key"),
    ],
)
def test_search_space_errors_name_file_and_line(tmp_path: Path, entry: str, message: str):
    path = tmp_path / "bad.yml"
    path.write_text(
        "num_trials: 2\ndata: {cache_directory: /nowhere}\nspace:\n"
        f"  model.window_size: {{int: [2, 4]}}\n  {entry}\n"
    )
    with pytest.raises(UserInputError) as error:
        load_search(path)
    assert f"{path}:5:" in str(error.value) and message in str(error.value)


def test_search_file_defaults_and_space(tmp_path: Path):
    path = tmp_path / "ok.yml"
    path.write_text(
        "num_trials: 2\nstorage: ${SEARCH_STORAGE:-}\ndata:\n  cache_directory: ${CACHE_X:-/c}\n"
        "space:\n  model.recurrent_size: {int: [64, 1024], log: true}\n"
        "  training.optimizer: {choice: [adam, sgd, rms]}\n"
        "  training.dropout_prob: {float: [0.0, 0.4], step: 0.1}\n"
    )
    search = load_search(path, {})
    assert search.study == "ok" and search.settings.storage == "journal"
    assert search.settings.sampler == "tpe" and search.settings.grace == 90
    assert search.written_sections["data"] == {"cache_directory": "${CACHE_X:-/c}"}
    config = search.run_config({"model.recurrent_size": 99}, "n", Path("/r"))
    assert config["model"]["recurrent_size"] == 99 and config["info"]["run_dir"] == "/r"


def test_storage_descriptions_hide_credentials_and_sqlite_is_refused_in_parallel():
    url = "postgresql+psycopg://user:s3cret@db.example:5433/studies"
    described = describe_storage(url, Path("j"))
    assert "s3cret" not in described and "user" not in described
    assert described == "postgresql database studies on db.example:5433"
    check_parallel_storage("sqlite:///s.db", 1)
    with pytest.raises(UserInputError, match="locks the whole database file"):
        check_parallel_storage("sqlite:///s.db", 2)


# --------------------------------------------------------------------------- workers


def finished(study: optuna.Study) -> int:
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials())


def test_two_parallel_workers_end_with_exactly_num_trials(tmp_path, cache_directory, environ):
    path = search_file(tmp_path, cache_directory, num_trials=4, pruner="median")
    done = run_script(
        environ, "scripts/search.py", "-y", str(path), "--num_workers", "2", timeout=180
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    study = open_study(load_search(path), create=False)
    assert finished(study) == 4
    live = [t for t in study.get_trials() if not t.system_attrs.get(SURPLUS_ATTR)]
    assert all(t.state != TrialState.RUNNING for t in live)
    assert (tmp_path / "artifacts/search/tiny/trials.csv").is_file()  # each worker's report
    for trial in study.get_trials():
        if trial.state == TrialState.COMPLETE:
            assert (Path(trial.user_attrs["run_dir"]) / "model.pt").is_file()
    # rerun: the study is complete, so the pipeline's workers are done (or find nothing to do)
    again = run_script(
        environ, "scripts/search.py", "-y", str(path), "--num_workers", "2", timeout=120
    )
    assert again.returncode == 0 and finished(open_study(load_search(path), create=False)) == 4


def test_a_sigkilled_workers_trial_is_retried_and_the_study_completes(
    tmp_path, cache_directory, environ
):
    training = {**TINY["training"], "num_epochs": 6}
    path = search_file(tmp_path, cache_directory, num_trials=3, training=training)
    search = load_search(path)
    victim = subprocess.Popen(
        [PYTHON, "scripts/search.py", "-y", str(path)],
        cwd=REPOSITORY,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        killed_trial = None
        while killed_trial is None and time.monotonic() < deadline:
            time.sleep(0.2)
            if (tmp_path / "artifacts/search/tiny/journal.log").exists():
                try:
                    study = open_study(search, create=False)
                except UserInputError:
                    continue
                for trial in study.get_trials():
                    if trial.state == TrialState.RUNNING and "run_dir" in trial.user_attrs:
                        killed_trial = trial.number  # its run is training now
        assert killed_trial is not None, "the worker never started training a trial"
        os.kill(victim.pid, signal.SIGKILL)
    finally:
        victim.kill()
        victim.wait(timeout=10)
    survivor = run_script(environ, "scripts/search.py", "-y", str(path), timeout=180)
    assert survivor.returncode == 0, survivor.stdout[-3000:] + survivor.stderr[-3000:]
    study = open_study(search, create=False)
    trials = study.get_trials()
    assert finished(study) == 3
    assert trials[killed_trial].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed_trial]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == trials[killed_trial].params
    assert f"retries trial {killed_trial}" in survivor.stdout


# --------------------------------------------------------------------------- best and importance

SIZE = IntDistribution(16, 32, step=16)
CELL = CategoricalDistribution(["GRU", "LSTM"])
#: (recurrent_size, recurrent_type, dev PER). Best trial: 3 (32, LSTM). Independently, the
#: medians are 16 -> 0.32 < 32 -> 0.40 and GRU -> 0.32 < LSTM -> 0.50: (16, GRU).
HAND_MADE = [
    (16, "GRU", 0.30),
    (16, "LSTM", 0.50),
    (32, "GRU", 0.40),
    (32, "LSTM", 0.20),
    (16, "GRU", 0.32),
    (32, "LSTM", 0.60),
]


def hand_made_study(tmp_path: Path, cache: Path) -> tuple:
    path = search_file(
        tmp_path,
        cache,
        space={
            "model.recurrent_size": {"int": [16, 32], "step": 16},
            "model.recurrent_type": {"choice": ["GRU", "LSTM"]},
        },
    )
    search = load_search(path)
    study = open_study(search)
    for size, cell, value in HAND_MADE:
        study.add_trial(
            create_trial(
                params={"model.recurrent_size": size, "model.recurrent_type": cell},
                distributions={"model.recurrent_size": SIZE, "model.recurrent_type": CELL},
                value=value,
            )
        )
    study.add_trial(
        create_trial(
            state=TrialState.PRUNED,
            params={"model.recurrent_size": 16},
            distributions={"model.recurrent_size": SIZE},
        )
    )
    return path, search, study


def test_best_and_independent_best_on_hand_made_trials(tmp_path, cache_directory, environ):
    path, search, study = hand_made_study(tmp_path, cache_directory)
    assert results.best_params(study) == {
        "model.recurrent_size": 32,
        "model.recurrent_type": "LSTM",
    }
    assert results.best_params(study, independent=True) == {
        "model.recurrent_size": 16,
        "model.recurrent_type": "GRU",
    }
    out = tmp_path / "tiny_tuned.yml"
    done = run_script(
        environ,
        "scripts/search.py",
        "-y",
        str(path),
        "--best",
        "--independent",
        "-o",
        str(out),
        "--seeds",
        "1,2",
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "study 'tiny'" in text and "6 complete trial(s) (0, 1, 2, 3, 4, 5; 1 pruned)" in text
    experiment = yaml.safe_load(text)
    assert experiment["model"]["recurrent_size"] == 16
    assert experiment["model"]["recurrent_type"] == "GRU"
    assert experiment["sweep"] == [{"seed": [1, 2]}]
    expanded = run_script(
        environ, "scripts/sweep_experiment.py", "-y", str(out), "--dry-run", timeout=60
    )
    assert expanded.returncode == 0, expanded.stderr
    assert "tiny_tuned: 2 run(s)" in expanded.stdout


def test_importance_keeps_the_parameter_that_decides(tmp_path, cache_directory, environ):
    path = search_file(tmp_path, cache_directory)
    search = load_search(path)
    study = open_study(search)
    rate = FloatDistribution(-3.0, -1.5)
    size = IntDistribution(8, 32, log=True)
    for index in range(16):
        learning_rate = -3.0 + 1.5 * index / 15
        study.add_trial(
            create_trial(
                params={
                    "training.log10_learning_rate": learning_rate,
                    "model.recurrent_size": [8, 16, 32][index % 3],
                },
                distributions={"training.log10_learning_rate": rate, "model.recurrent_size": size},
                value=(learning_rate + 2.0) ** 2,  # decided by the learning rate alone
            )
        )
    importances = results.important_params(study)
    assert list(importances) == ["training.log10_learning_rate", "model.recurrent_size"]
    assert importances["model.recurrent_size"] < 0.05
    out = tmp_path / "include.yml"
    done = run_script(
        environ,
        "scripts/search.py",
        "-y",
        str(path),
        "--important",
        "--top-k",
        "1",
        "-o",
        str(out),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(out.read_text()) == {"include": ["training.log10_learning_rate"]}


def test_the_demo_search_file_loads(monkeypatch):
    monkeypatch.setenv("CACHE_DIRECTORY", "/cache")
    monkeypatch.delenv("SEARCH_STORAGE", raising=False)
    search = load_search(REPOSITORY / "experiments/search/demo.yml")
    assert search.study == "demo" and search.settings.storage == "journal"
    assert search.settings.training.device == "cpu" and len(search.settings.space) == 3


def test_report_writes_the_trials_table_best_trials_and_figures(tmp_path, cache_directory, environ):
    import csv

    path, search, study = hand_made_study(tmp_path, cache_directory)
    done = run_script(environ, "scripts/search.py", "-y", str(path), "--report", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "6 complete trial(s); best trial 3: dev PER 0.2000" in done.stdout
    folder = tmp_path / "artifacts/search/tiny"
    with open(folder / "trials.csv") as table:
        trials = list(csv.DictReader(table))
    assert [row["state"] for row in trials] == ["COMPLETE"] * 6 + ["PRUNED"]
    assert trials[3]["params_model.recurrent_type"] == "LSTM" and trials[3]["value"] == "0.2"
    with open(folder / "best_trials.csv") as table:
        best = [int(row["number"]) for row in csv.DictReader(table)]
    assert best == [3, 0, 4, 2, 1]  # values 0.20, 0.30, 0.32, 0.40, 0.50
    for figure in ("optimization_history.png", "param_importances.png"):
        data = (folder / figure).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000, figure
