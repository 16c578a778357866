"""Tests of the trainer's weight average, retention, exact resume and divergence stop in runs.

Tiny ctc_phones runs (16 utterances, batches of 4, two batches per optimiser step, three
epochs at most): validation scores the averaged weights and model.pt holds them; pruning
keeps what the policy says; a run that lost its last epoch resumes to the same state; a
NaN gradient stops the run naming its step and epoch; per-step TensorBoard scalars.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from test_training import TINY_MODEL, write_cache

from speechbed.errors import UserInputError
from speechbed.tasks.ctc_phones.task import CtcPhonesTask
from speechbed.training.checkpoints import RetentionPolicy
from speechbed.training.config import RunConfig
from speechbed.training.loop import train_run
from speechbed.training.trainer import TrainingDiverged, check_global_batch_size


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cache")
    write_cache(folder / "train.zarr", 16, seed=1)
    write_cache(folder / "dev.zarr", 4, seed=2)
    return folder


def run_config(run_dir: Path, cache: Path, **training) -> RunConfig:
    return RunConfig.model_validate(
        {
            "info": {"name": "tiny", "seed": 3, "run_dir": str(run_dir)},
            "data": {"cache_directory": str(cache), "batch_size": 4},
            "model": dict(TINY_MODEL),
            "training": {
                "num_epochs": 3,
                "log10_learning_rate": -2,
                "num_threads": 1,
                "gradient_accumulation": 2,
                "dropout_prob": 0.1,
                **training,
            },
        }
    )


def load(path: Path) -> dict:
    return torch.load(path, weights_only=False)


def read_history(run_dir: Path) -> list[dict]:
    with open(run_dir / "hist.csv") as handle:
        return list(csv.DictReader(handle))


def step_scalars(run_dir: Path) -> dict[str, list[int]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "tensorboard" / "steps"))
    accumulator.Reload()
    return {
        tag: [event.step for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def test_averaged_weights_are_validated_saved_and_resumed_exactly(tmp_path, cache, monkeypatch):
    scored = []
    dev_metric = CtcPhonesTask.dev_metric

    def spy(self, model, loader, device):
        scored.append({name: value.clone() for name, value in model.state_dict().items()})
        return dev_metric(self, model, loader, device)

    def output_layer_apart(self, model):  # as RNN-T's joint_net_lr_factor does it
        output = list(model.output.parameters())
        rest = [param for param in model.parameters() if all(param is not o for o in output)]
        return [{"params": rest}, {"params": output, "lr_factor": 0.1}]

    monkeypatch.setattr(CtcPhonesTask, "dev_metric", spy)
    monkeypatch.setattr(CtcPhonesTask, "parameter_groups", output_layer_apart)
    run_dir = tmp_path / "run"
    config = run_config(
        run_dir,
        cache,
        ema_decay=0.8,
        lr_schedule="warmup_hold_decay",
        warmup_steps=2,
        hold_steps=1,
        half_life_steps=2,
        min_lr=1e-4,
        max_grad_norm=5.0,
        optimizer="adamw",
        weight_decay=0.01,
        keep_epochs=[2],
    )
    summary = train_run(config, progress=False)
    history = read_history(run_dir)
    kept = RetentionPolicy(keep_epochs=(2,)).kept(
        [{"epoch": int(row["epoch"]), "dev_per": float(row["dev_per"])} for row in history],
        "dev_per",
        True,
    )
    assert {2, 3} <= kept
    assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == [
        f"epoch-{epoch:04d}.pt" for epoch in sorted(kept)
    ]
    # each epoch's dev metric scored the average, which differs from the trained weights
    for epoch in (2, 3):
        checkpoint = load(run_dir / "checkpoints" / f"epoch-{epoch:04d}.pt")
        for name, value in checkpoint["ema"].items():
            assert torch.equal(scored[epoch - 1][name], value), name
        assert not torch.equal(
            checkpoint["ema"]["output.weight"], checkpoint["model"]["output.weight"]
        )
    # the schedule scaled both groups: the output layer's rate stays a tenth of the others'
    groups = load(run_dir / "checkpoints" / "epoch-0003.pt")["optimizer"]["param_groups"]
    assert [group["lr_factor"] for group in groups] == [1.0, 0.1]
    assert groups[1]["lr"] == pytest.approx(0.1 * groups[0]["lr"])
    assert groups[0]["lr"] == pytest.approx(1e-2 * 0.5 ** ((6 - 3) / 2))  # after 6 steps
    best = load(run_dir / "checkpoints" / f"epoch-{summary.best_epoch:04d}.pt")
    saved = load(run_dir / "model.pt")
    assert all(torch.equal(value, best["ema"][name]) for name, value in saved["model"].items())
    # per-step scalars: 2 optimiser steps an epoch; every epoch's largest gradient norm
    scalars = step_scalars(run_dir)
    assert scalars["step/grad_norm"] == scalars["step/learning_rate"] == list(range(1, 7))
    assert all(math.isfinite(float(row["max_grad_norm"])) for row in history)

    # lose the last epoch (as a kill would): the restarted run resumes after epoch 2 and
    # ends in the state the uninterrupted run had
    last = load(run_dir / "checkpoints" / "epoch-0003.pt")
    (run_dir / "checkpoints" / "epoch-0003.pt").unlink()
    (run_dir / "model.pt").unlink()
    train_run(config, progress=False)
    again = load(run_dir / "checkpoints" / "epoch-0003.pt")
    for key in ("model", "ema"):
        for name, value in last[key].items():
            assert torch.equal(value, again[key][name]), (key, name)
    assert again["scheduler"] == last["scheduler"]
    assert again["optimizer"]["param_groups"] == last["optimizer"]["param_groups"]
    columns = ("epoch", "loss", "dev_per", "learning_rate", "max_grad_norm")
    assert [[row[c] for c in columns] for row in read_history(run_dir)] == [
        [row[c] for c in columns] for row in history
    ]
    assert step_scalars(run_dir)["step/grad_norm"] == list(range(1, 7))


def test_a_nan_gradient_stops_the_run_naming_its_step_and_epoch(tmp_path, cache, monkeypatch):
    calls = []
    loss = CtcPhonesTask.loss

    def poisoned(self, outputs, batch, device):
        calls.append(1)
        value = loss(self, outputs, batch, device)
        return value * math.nan if len(calls) == 6 else value

    monkeypatch.setattr(CtcPhonesTask, "loss", poisoned)
    run_dir = tmp_path / "run"
    # 4 batches an epoch, 2 per step: batch 6 is epoch 2's second, in its first step (3rd)
    with pytest.raises(TrainingDiverged) as stopped:
        train_run(run_config(run_dir, cache, num_epochs=2), progress=False)
    assert isinstance(stopped.value, UserInputError)  # one line and exit status 1 in train.py
    message = str(stopped.value)
    assert "gradient norm is nan at optimiser step 3 (epoch 2, batch 2)" in message
    assert "newest checkpoint: epoch 1's" in message
    assert not (run_dir / "model.pt").exists()
    assert [path.name for path in (run_dir / "checkpoints").iterdir()] == ["epoch-0001.pt"]
    weights = load(run_dir / "checkpoints" / "epoch-0001.pt")["model"]
    assert all(torch.isfinite(value).all() for value in weights.values())


def test_global_batch_size_must_match_batch_accumulation_and_processes(tmp_path, cache):
    check_global_batch_size(run_config(tmp_path, cache, global_batch_size=8))
    check_global_batch_size(run_config(tmp_path, cache, global_batch_size=16), processes=2)
    with pytest.raises(UserInputError) as error:
        check_global_batch_size(run_config(tmp_path, cache, global_batch_size=16))
    assert "data.batch_size 4 x training.gradient_accumulation 2 x 1 training process" in str(
        error.value
    )
