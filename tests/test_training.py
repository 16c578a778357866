"""Tests of CTC training: overfitting, exact kill-and-resume, run files, config errors."""

from __future__ import annotations

import csv
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

from speechbed.features.cache import FeatureStoreWriter
from speechbed.jobs import load_jobs
from speechbed.training import data as training_data
from speechbed.training.augmentation import augment_batch
from speechbed.training.config import FeatureStoreDataConfig, RunConfig, TrainingConfig
from speechbed.training.loop import train_run, training_fingerprint

REPOSITORY = Path(__file__).resolve().parents[1]
NUM_FEATURES = 8
#: Phone ids whose 39-phone folds all differ (aa, b, d, f, g, iy): any confusion is an error.
PHONES = [0, 7, 11, 18, 19, 24]


def write_cache(path: Path, utterances: int, seed: int) -> None:
    """A partition whose frames spell their phones: each phone a noisy fixed vector for 4-8 frames."""
    generator = np.random.default_rng(seed)
    prototypes = np.random.default_rng(1234).normal(size=(len(PHONES), NUM_FEATURES)) * 2
    feats, tokens, ids = [], [], []
    for index in range(utterances):
        sequence = [int(generator.integers(len(PHONES)))]
        while len(sequence) < generator.integers(3, 7):  # no phone twice in a row: no boundary
            sequence.append(int((sequence[-1] + generator.integers(1, len(PHONES))) % len(PHONES)))
        frames = [
            prototypes[p] + 0.3 * generator.normal(size=(generator.integers(4, 9), NUM_FEATURES))
            for p in sequence
        ]
        feats.append(np.concatenate(frames).astype(np.float32))
        tokens.append([PHONES[p] for p in sequence])
        ids.append(f"utt{index:03d}")
    with FeatureStoreWriter(
        path, ids, [len(f) for f in feats], NUM_FEATURES, tokens, {"feature": "test"}
    ) as writer:
        writer.write(0, feats)
        writer.commit()


@pytest.fixture(scope="module")
def cache_directory(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cache")
    write_cache(folder / "handful.zarr", 6, seed=0)
    write_cache(folder / "train.zarr", 48, seed=1)
    write_cache(folder / "dev.zarr", 8, seed=2)
    return folder


TINY_MODEL = {
    "window_size": 4,
    "window_stride": 2,
    "convolutional_layers": 1,
    "convolutional_initial_channels": 4,
    "convolutional_freq_factor": 1,
    "recurrent_size": 24,
    "recurrent_layers": 1,
}


def run_config(run_dir: Path, cache_directory: Path, **sections) -> dict:
    config = {
        "info": {"name": "tiny", "seed": 3, "run_dir": str(run_dir)},
        "data": {"cache_directory": str(cache_directory), "batch_size": 4},
        "model": dict(TINY_MODEL),
        "training": {"num_epochs": 4, "log10_learning_rate": -2, "num_threads": 1},
    }
    for section, values in sections.items():
        config[section].update(values)
    return config


@pytest.mark.parametrize("mellin", [False, True])
def test_small_model_overfits_a_handful_of_utterances(tmp_path, cache_directory, mellin):
    config = run_config(
        tmp_path / "run",
        cache_directory,
        data={"train_partition": "handful", "dev_partition": "handful", "batch_size": 3},
        model={"convolutional_mellin": mellin},
        training={"num_epochs": 30, "reduce_lr_factor": 1.0},
    )
    summary = train_run(RunConfig.model_validate(config), progress=False)
    assert summary.best_dev_per <= 0.02
    assert summary.epochs_run == 30


def read_history(run_dir: Path) -> list[dict]:
    with open(run_dir / "hist.csv") as handle:
        return list(csv.DictReader(handle))


def train_command(config_path: Path) -> list[str]:
    return [sys.executable, str(REPOSITORY / "scripts" / "train.py"), "-y", str(config_path)]


def test_killed_run_resumes_to_the_uninterrupted_parameters(tmp_path, cache_directory):
    # dropout, noise, masks and shifts make every random state matter
    training = {
        "num_epochs": 6,
        "dropout_prob": 0.2,
        "noise_eps": 0.1,
        "max_time_mask": 3,
        "num_time_mask": 1,
        "max_shift_proportion": 0.1,
        "reduce_lr_patience": 0,
    }
    paths = {}
    for name in ("whole", "killed"):
        paths[name] = tmp_path / f"{name}.yml"
        config = run_config(tmp_path / name, cache_directory, training=training)
        paths[name].write_text(yaml.safe_dump(config))
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(train_command(paths["whole"]), check=True, env=environment, capture_output=True)

    process = subprocess.Popen(
        train_command(paths["killed"]),
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 120
    # any checkpoint from epoch 2 on (older ones may already be pruned when we look)
    while not [path for path in checkpoints.glob("epoch-*.pt") if path.name >= "epoch-0002.pt"]:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint of epoch 2 within two minutes"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (tmp_path / "killed" / "model.pt").exists()
    killed_at = len(read_history(tmp_path / "killed"))
    assert 2 <= killed_at < 6

    resumed = subprocess.run(
        train_command(paths["killed"]), check=True, env=environment, capture_output=True, text=True
    )
    assert "resuming after epoch" in resumed.stdout

    whole = torch.load(tmp_path / "whole" / "model.pt", weights_only=False)
    killed = torch.load(tmp_path / "killed" / "model.pt", weights_only=False)
    assert whole["epoch"] == killed["epoch"]
    for name, value in whole["model"].items():
        assert torch.equal(value, killed["model"][name]), name
    last = {
        name: torch.load(tmp_path / name / "checkpoints" / "epoch-0006.pt", weights_only=False)
        for name in ("whole", "killed")
    }
    for name, value in last["whole"]["model"].items():
        assert torch.equal(value, last["killed"]["model"][name]), name
    columns = ("epoch", "loss", "dev_per", "learning_rate")
    history = {name: read_history(tmp_path / name) for name in ("whole", "killed")}
    assert [[row[c] for c in columns] for row in history["whole"]] == [
        [row[c] for c in columns] for row in history["killed"]
    ]
    assert len(history["whole"]) == 6

    # a finished run is skipped when started again
    again = subprocess.run(
        train_command(paths["killed"]), check=True, env=environment, capture_output=True, text=True
    )
    assert "already trained" in again.stdout


def test_sigusr1_stops_at_a_batch_and_the_run_resumes_from_its_newest_checkpoint(
    tmp_path, cache_directory
):
    # What Slurm sends before a time limit (--signal=B:USR1@seconds, passed on to the job)
    path = tmp_path / "run.yml"
    config = run_config(tmp_path / "run", cache_directory, training={"num_epochs": 12})
    path.write_text(yaml.safe_dump(config))
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        train_command(path), env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    checkpoints = tmp_path / "run" / "checkpoints"
    deadline = time.monotonic() + 120
    while not list(checkpoints.glob("epoch-*.pt")):
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.02)
    process.send_signal(signal.SIGUSR1)
    output = process.communicate(timeout=120)[0].decode()
    assert process.returncode == 75, output
    assert "SIGUSR1: stopping in epoch" in output and "Traceback" not in output
    stopped_after = len(read_history(tmp_path / "run"))
    assert 1 <= stopped_after < 12 and not (tmp_path / "run" / "model.pt").exists()
    resumed = subprocess.run(
        train_command(path), check=True, env=environment, capture_output=True, text=True
    )
    assert f"resuming after epoch {stopped_after}" in resumed.stdout
    assert len(read_history(tmp_path / "run")) == 12


def test_run_files_and_keep_last_and_best_only(tmp_path, cache_directory):
    config = RunConfig.model_validate(
        run_config(tmp_path / "run", cache_directory, training={"num_epochs": 3})
    )
    summary = train_run(config, progress=False)
    run_dir = tmp_path / "run"
    history = read_history(run_dir)
    assert list(history[0]) == [
        "epoch",
        "loss",
        "dev_per",
        "learning_rate",
        "seconds",
        "max_grad_norm",
    ]
    assert [int(row["epoch"]) for row in history] == [1, 2, 3]
    kept = sorted(path.name for path in (run_dir / "checkpoints").iterdir())
    assert kept == sorted({f"epoch-{summary.best_epoch:04d}.pt", "epoch-0003.pt"})
    assert any((run_dir / "tensorboard").iterdir())
    saved = torch.load(run_dir / "model.pt", weights_only=False)
    best_row = min(history, key=lambda row: float(row["dev_per"]))
    assert saved["epoch"] == int(best_row["epoch"]) == summary.best_epoch


def test_checkpoints_of_other_settings_are_refused(tmp_path, cache_directory):
    first = run_config(tmp_path / "run", cache_directory, training={"num_epochs": 1})
    train_run(RunConfig.model_validate(first), progress=False)
    (tmp_path / "run" / "model.pt").unlink()
    changed = run_config(
        tmp_path / "run", cache_directory, training={"num_epochs": 1}, model={"recurrent_size": 8}
    )
    from speechbed.errors import UserInputError

    with pytest.raises(UserInputError, match="other settings"):
        train_run(RunConfig.model_validate(changed), progress=False)
    # --force starts over
    summary = train_run(RunConfig.model_validate(changed), force=True, progress=False)
    assert summary.epochs_run == 1


def test_missing_cache_and_unknown_keys_are_user_errors(tmp_path, cache_directory):
    config = run_config(tmp_path / "run", tmp_path / "nowhere")
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(train_command(path), capture_output=True, text=True)
    assert result.returncode == 1
    assert "no feature cache for partition 'train'" in result.stderr
    assert "Traceback" not in result.stderr

    config = run_config(tmp_path / "run", cache_directory, model={"recurent_size": 3})
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(Exception, match="did you mean 'recurrent_size'"):
        load_jobs(path, RunConfig)


def test_in_memory_option_picks_how_frames_are_read_not_what_is_read(cache_directory, monkeypatch):
    def epoch_of_batches(in_memory):
        data = FeatureStoreDataConfig(
            cache_directory=cache_directory, batch_size=5, in_memory=in_memory
        )
        loader = training_data.open_loader(data, "train", shuffle=True, seed=4)
        loader.batch_sampler.set_epoch(1)
        return loader.dataset.cache.in_memory, list(loader)

    streamed, reference = epoch_of_batches(False)
    assert not streamed
    for setting, held in (("auto", True), (True, True)):
        in_memory, batches = epoch_of_batches(setting)
        assert in_memory == held
        assert len(batches) == len(reference)
        for batch, expected in zip(batches, reference, strict=True):
            assert batch.utt_ids == expected.utt_ids
            assert torch.equal(batch.feats, expected.feats)
            assert torch.equal(batch.targets, expected.targets)
    monkeypatch.setattr(training_data, "IN_MEMORY_AUTO_BYTES", 100)  # train.zarr holds more
    assert epoch_of_batches("auto")[0] is False
    # how frames are read does not change what a run trains, so checkpoints stay usable
    settings = run_config(Path("run"), cache_directory)
    fingerprints = set()
    for in_memory in ("auto", True, False):
        settings["data"]["in_memory"] = in_memory
        fingerprints.add(training_fingerprint(RunConfig.model_validate(settings)))
    assert len(fingerprints) == 1


def test_augmentation_keeps_lengths_consistent_and_is_reproducible():
    config = TrainingConfig(
        max_time_warp=3,
        max_freq_warp=2,
        max_time_mask=4,
        num_time_mask=2,
        max_freq_mask=3,
        num_freq_mask=1,
        noise_eps=0.1,
        max_shift_proportion=0.2,
    )
    features = torch.randn(3, 40, 10)
    lengths = torch.tensor([40, 25, 11])
    first = augment_batch(features, lengths, config, torch.Generator().manual_seed(1))
    second = augment_batch(features, lengths, config, torch.Generator().manual_seed(1))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    augmented, new_lengths = first
    # a shift drops at most 20% of the frames, from the start
    assert all(
        0.8 * old <= new <= old
        for old, new in zip(lengths.tolist(), new_lengths.tolist(), strict=True)
    )
    assert augmented.shape[1] == int(new_lengths.max())
    for row, length in enumerate(new_lengths.tolist()):
        assert torch.all(augmented[row, length:] == 0)
    # nothing to do: the very same tensors come back
    plain = augment_batch(features, lengths, TrainingConfig(), torch.Generator())
    assert plain[0] is features and plain[1] is lengths


def test_run_config_documents_what_the_reports_read():
    # the experiments' reports read these names; keep them
    from speechbed.tasks.ctc_phones.config import CtcPhonesRunConfig

    schema = json.dumps(CtcPhonesRunConfig.model_json_schema())
    for key in (
        "window_size",
        "convolutional_mellin",
        "recurrent_bidirectional",
        "log10_learning_rate",
        "reduce_lr_log10_epsilon",
        "early_stopping_patience",
        "num_time_mask_proportion",
        "beam_width",
    ):
        assert key in schema


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mixed_precision_training_on_cuda(tmp_path, cache_directory):
    config = run_config(
        tmp_path / "run",
        cache_directory,
        data={"train_partition": "handful", "dev_partition": "handful", "batch_size": 3},
        training={"num_epochs": 30, "device": "cuda", "mixed_precision": True},
    )
    summary = train_run(RunConfig.model_validate(config), progress=False)
    assert summary.best_dev_per <= 0.1


def test_early_stopping_counts_epochs_without_relative_improvement():
    from speechbed.training.stopping import EarlyStopping

    # threshold 0.1: a new value must be below 0.9 x best to count.
    # epoch 1: 0.50 best; 2: 0.46 (> 0.45, no); 3: 0.44 (< 0.45, best); 4: 0.43 (> 0.396, no);
    # 5: 0.42 (no) -> two epochs without improvement = patience: stop at epoch 5
    stopper = EarlyStopping(patience=2, threshold=0.1, burnin=0)
    decisions = [
        stopper.update(epoch, value) for epoch, value in enumerate([0.5, 0.46, 0.44, 0.43, 0.42], 1)
    ]
    assert decisions == [False, False, False, False, True]
    # with a burn-in of 5 epochs the same values never stop it before epoch 6
    stopper = EarlyStopping(patience=2, threshold=0.1, burnin=5)
    decisions = [
        stopper.update(epoch, value)
        for epoch, value in enumerate([0.5, 0.46, 0.44, 0.43, 0.42, 0.41], 1)
    ]
    assert decisions == [False, False, False, False, False, True]
    assert not any(EarlyStopping(None, 0.0, 0).update(epoch, 1.0) for epoch in range(1, 20))


def test_plateau_schedule_follows_the_run_config():
    from speechbed.training.optimization import make_optimizer
    from speechbed.training.schedules import make_schedule

    config = TrainingConfig(log10_learning_rate=-2, reduce_lr_patience=1, reduce_lr_factor=0.5)
    model = torch.nn.Linear(2, 2)
    optimizer = make_optimizer(config, model)
    schedule = make_schedule(config, optimizer)
    rates = []
    for epoch, dev_per in enumerate([0.5, 0.5, 0.5, 0.5, 0.4], 1):
        schedule.after_epoch(epoch, dev_per)
        rates.append(optimizer.param_groups[0]["lr"])
    # no improvement at epochs 2 and 3: the second bad epoch exceeds patience 1 -> halve;
    # the counter restarts, epoch 4 is bad once, epoch 5 improves
    assert rates == pytest.approx([1e-2, 1e-2, 5e-3, 5e-3, 5e-3])
    assert make_schedule(TrainingConfig(reduce_lr_factor=1.0), optimizer).scheduler is None
