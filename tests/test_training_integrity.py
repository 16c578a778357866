"""Training and evaluation lineage, concurrency and crash safety.

A run records the feature stores it trained on and is moved aside when they change; two
trainers of one run end with one trained run; dead processes' temporaries are removed; a
full disk while saving a checkpoint is one line. Tiny stores, tiny models, one or two epochs.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from speechbed.errors import UserInputError
from speechbed.features.cache import FeatureStoreWriter
from speechbed.lineage import Lineage, fingerprint
from speechbed.outputs import OutputLock
from speechbed.step_runner import run_jobs_cli
from speechbed.training.evaluation import EvaluationJob, evaluate_run
from speechbed.training.loop import TrainingJob, train_run

REPOSITORY = Path(__file__).resolve().parents[1]
NUM_FEATURES = 6
PHONES = [0, 7, 11, 18]  # aa, b, d, f: distinct after folding to 39


def write_store(path: Path, utterances: int, seed: int) -> None:
    """A partition whose frames are a noisy fixed vector per phone, 3-6 frames each."""
    rng = np.random.default_rng(seed)
    prototypes = np.random.default_rng(99).normal(size=(len(PHONES), NUM_FEATURES)) * 2
    feats, tokens = [], []
    for _ in range(utterances):
        sequence = rng.permutation(len(PHONES))[: int(rng.integers(2, 5))]
        frames = [
            prototypes[p] + 0.3 * rng.normal(size=(rng.integers(3, 7), NUM_FEATURES))
            for p in sequence
        ]
        feats.append(np.concatenate(frames).astype(np.float32))
        tokens.append([PHONES[p] for p in sequence])
    ids = [f"utt{index:03d}" for index in range(utterances)]
    with FeatureStoreWriter(path, ids, [len(f) for f in feats], NUM_FEATURES, tokens, {}) as writer:
        writer.write(0, feats)
        writer.commit()


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    folder = tmp_path / "cache"
    write_store(folder / "train.zarr", 16, seed=1)
    write_store(folder / "dev.zarr", 4, seed=2)
    write_store(folder / "test.zarr", 3, seed=3)
    return folder


def run_config(run_dir: Path, cache: Path, epochs: int = 1, **model: int) -> dict:
    return {
        "info": {"name": "tiny", "seed": 5, "run_dir": str(run_dir)},
        "data": {"cache_directory": str(cache), "batch_size": 4},
        "model": {
            "window_size": 3,
            "window_stride": 2,
            "convolutional_layers": 1,
            "convolutional_initial_channels": 2,
            "convolutional_freq_factor": 1,
            "recurrent_size": 8,
            "recurrent_layers": 1,
            **model,
        },
        "training": {"num_epochs": epochs, "num_threads": 1},
        "evaluation": {"beam_width": 0, "batch_size": 4},
    }


def write_job(path: Path, config: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def model_record(run_dir: Path) -> dict:
    return torch.load(run_dir / "model.pt", map_location="cpu", weights_only=False)


def test_changed_store_moves_the_trained_run_aside_and_trains_again(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "runs" / "r1"
    settings = run_config(run_dir, cache)
    job = write_job(run_dir / "config.yml", settings)  # as a sweep writes it
    config = TrainingJob.model_validate(settings)
    inputs, outputs = config.lineage_paths()
    assert inputs == [cache / "train.zarr", cache / "dev.zarr"]
    assert outputs == [run_dir, run_dir / "model.pt"]
    assert EvaluationJob.model_validate(settings).lineage_paths() == (
        [run_dir / "model.pt", cache / "dev.zarr", cache / "test.zarr"],
        [run_dir / "results.json"],
    )

    train_run(config, progress=False, keep=[job])
    evaluate_run(config)
    first = model_record(run_dir)
    stores = {name: fingerprint(cache / f"{name}.zarr") for name in ("train", "dev", "test")}
    assert first["data_fingerprints"] == {"train": stores["train"], "dev": stores["dev"]}
    results = json.loads((run_dir / "results.json").read_text())
    assert results["data_fingerprints"] == stores
    recorded = Lineage.measure(inputs, outputs, {}, {}, tmp_path)  # what the pipeline keeps
    run_fingerprint = fingerprint(run_dir)
    capsys.readouterr()

    write_store(cache / "train.zarr", 16, seed=11)  # same shape, other frames
    assert "input train.zarr changed" in str(recorded.why_outdated({}, {}, tmp_path))
    train_run(config, progress=False, keep=[job])
    said = capsys.readouterr().out
    (stale,) = (tmp_path / "runs").glob("r1.stale-*")
    assert (
        f"{run_dir}: the feature store of 'train' changed since it was trained; moved it to {stale.name}"
        in said
    )
    assert torch.equal(
        model_record(stale)["model"]["output.weight"], first["model"]["output.weight"]
    )
    assert json.loads((stale / "results.json").read_text()) == results  # the old run is kept
    assert (
        (run_dir / "config.yml").read_text()
        == job.read_text()
        == (stale / "config.yml").read_text()
    )
    assert not (run_dir / "results.json").exists()
    second = model_record(run_dir)
    assert second["data_fingerprints"]["train"] == fingerprint(cache / "train.zarr")
    assert second["data_fingerprints"]["train"] != first["data_fingerprints"]["train"]
    assert second["data_fingerprints"]["dev"] == first["data_fingerprints"]["dev"]
    assert second["fingerprint"] != first["fingerprint"]
    assert fingerprint(run_dir) != run_fingerprint
    assert train_run(config, progress=False).skipped

    # other settings are still refused, and nothing is moved
    other = TrainingJob.model_validate(run_config(run_dir, cache, recurrent_size=6))
    with pytest.raises(UserInputError, match="other settings"):
        train_run(other, progress=False)
    assert len(list((tmp_path / "runs").glob("r1.stale-*"))) == 1

    # a model trained on a dev store that changed since is never scored as current
    write_store(cache / "dev.zarr", 4, seed=12)
    with pytest.raises(UserInputError, match="trained on another 'dev' feature store"):
        evaluate_run(config)


def test_two_trainers_of_one_run_train_it_once(tmp_path: Path, cache: Path) -> None:
    run_dir = tmp_path / "runs" / "r1"
    job = write_job(tmp_path / "run.yml", run_config(run_dir, cache, epochs=2))
    outputs, processes = [], []
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    # both start while the test holds the run's lock, so they run at the same time
    with OutputLock(run_dir):
        for index in range(2):
            outputs.append((tmp_path / f"{index}.out", tmp_path / f"{index}.err"))
            with outputs[-1][0].open("w") as stdout, outputs[-1][1].open("w") as stderr:
                command = [sys.executable, str(REPOSITORY / "scripts" / "train.py"), "-y", str(job)]
                processes.append(
                    subprocess.Popen(command, stdout=stdout, stderr=stderr, env=environment)
                )
        deadline = time.monotonic() + 120
        while not all(
            "waiting for process" in err.read_text() or process.poll() is not None
            for (_, err), process in zip(outputs, processes, strict=True)
        ):
            assert time.monotonic() < deadline, "the trainers did not start within two minutes"
            time.sleep(0.05)
    for (_, err), process in zip(outputs, processes, strict=True):
        assert process.wait(timeout=300) == 0, err.read_text()
    said = [out.read_text() for out, _ in outputs]
    assert sorted("already trained" in text for text in said) == [False, True]
    history = (run_dir / "hist.csv").read_text().splitlines()
    assert len(history) == 1 + 2
    assert not list((tmp_path / "runs").glob("*.stale-*"))
    assert model_record(run_dir)["epoch"] in (1, 2)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_dead_processes_checkpoint_leftovers_are_removed(tmp_path: Path, cache: Path) -> None:
    run_dir = tmp_path / "run"
    dead = dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        checkpoints = run_dir / "checkpoints"
        checkpoints.mkdir(parents=True)
        dead_ones = [
            checkpoints / f".epoch-0001.pt.partial-{dead}",
            checkpoints / f".epoch-0007.pt.partial-{dead}",
            run_dir / f".hist.csv.partial-{dead}",
            run_dir / f".model.pt.partial-{dead}",
        ]
        live_one = checkpoints / f".epoch-0003.pt.partial-{live.pid}"
        for path in [*dead_ones, live_one]:
            path.write_bytes(b"half a checkpoint")
        train_run(TrainingJob.model_validate(run_config(run_dir, cache)), progress=False)
        assert [path for path in dead_ones if path.exists()] == []
        assert live_one.exists()  # another process may still be writing it
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait()


def test_full_disk_while_saving_a_checkpoint_is_one_line(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    job = write_job(tmp_path / "run.yml", run_config(run_dir, cache))
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        if ".epoch-" in os.readlink(f"/proc/self/fd/{descriptor}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    code = run_jobs_cli(
        TrainingJob,
        lambda config, context: train_run(config, progress=False),
        None,
        ["-y", str(job)],
    )
    error = capsys.readouterr().err
    assert code != 0  # 1 or 2: a storage problem is not a bug
    assert "Traceback" not in error
    (line,) = [text for text in error.splitlines() if "cannot write" in text]
    assert f"{run_dir / 'checkpoints' / 'epoch-0001.pt'}: the disk is full (about" in line
    assert "MiB needed" in line
    assert not (run_dir / "model.pt").exists()
    assert not [path for path in run_dir.rglob("*") if "epoch-" in path.name]

    monkeypatch.setattr(os, "fsync", real_fsync)  # space freed: the run trains
    assert (
        run_jobs_cli(TrainingJob, lambda c, _: train_run(c, progress=False), None, ["-y", str(job)])
        == 0
    )
    assert model_record(run_dir)["epoch"] == 1
