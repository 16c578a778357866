"""Tests of the task layer: registry, the trainer's collaborators, token lists (the import
graph and its layers: test_imports.py).

The ctc_phones task's training and scoring themselves are tested in test_training*.py and
test_decoding.py; here: what any task relies on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from speechbed.errors import UserInputError
from speechbed.features.cache import FeatureStoreWriter
from speechbed.run_folder import RunFolder
from speechbed.tasks import TASKS, task_class
from speechbed.tasks.ctc_phones import CtcPhonesTask
from speechbed.training.checkpoints import Checkpointer, CheckpointStore, GeneratorState
from speechbed.training.config import RunConfig
from speechbed.training.evaluation import evaluate_run
from speechbed.training.loop import train_run, training_fingerprint
from speechbed.training.optimization import GradientStep
from speechbed.training.run_log import best_epoch
from speechbed.training.stopping import EarlyStopping
from speechbed.training.task import Task, make_task


def test_the_run_config_and_registry_import_no_ml_code():
    # the sweep validates runs against RunConfig and never imports the ML code
    code = (
        "import sys, speechbed.training.config, speechbed.tasks;"
        "print(sorted(m for m in sys.modules if m in ('torch', 'speechbed.models',"
        " 'speechbed.decoding', 'speechbed.tasks.ctc_phones')))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert found.strip() == "[]"


def test_tasks_are_found_by_name_and_unknown_names_are_refused():
    base = {"info": {"run_dir": "run"}, "data": {"cache_directory": "cache"}}
    assert RunConfig.model_validate(base).task == "ctc_phones"
    assert task_class("ctc_phones") is CtcPhonesTask
    assert isinstance(make_task(RunConfig.model_validate(base)), Task)
    for name in TASKS:
        assert issubclass(task_class(name), Task)
    with pytest.raises(ValueError, match=r"'ctc_phone' is not a task .*did you mean 'ctc_phones'"):
        RunConfig.model_validate({**base, "task": "ctc_phone"})


def test_settings_added_later_keep_the_fingerprints_of_runs_before_them(tmp_path):
    write_store(tmp_path / "train.zarr", 4, seed=0)
    write_store(tmp_path / "dev.zarr", 2, seed=1)
    base = run_settings(tmp_path / "run", tmp_path)
    stated = {**base, "task": "ctc_phones"}
    stated["training"] = {**base["training"], "gradient_accumulation": 1}
    fingerprint = training_fingerprint(RunConfig.model_validate(base))
    assert training_fingerprint(RunConfig.model_validate(stated)) == fingerprint
    stated["training"]["gradient_accumulation"] = 2
    assert training_fingerprint(RunConfig.model_validate(stated)) != fingerprint


def test_gradient_accumulation_steps_on_the_mean_loss_of_each_group():
    def trained(accumulation: int, groups: list[list[int]]) -> torch.Tensor:
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        step = GradientStep(optimizer, torch.amp.GradScaler("cpu", enabled=False), accumulation)
        inputs = torch.arange(15.0).reshape(5, 3) / 10
        if accumulation == 1:  # the reference: one step per group on the group's mean loss
            for group in groups:
                losses = torch.stack([model(inputs[index]).pow(2).sum() for index in group])
                step(losses.mean(), 0, 1)
        else:
            for index in range(5):
                step(model(inputs[index]).pow(2).sum(), index, 5)
        return torch.cat([parameter.detach().flatten() for parameter in model.parameters()])

    # 5 batches in groups of 2: [0, 1], [2, 3], then the short group [4]
    expected = trained(1, [[0, 1], [2, 3], [4]])
    torch.testing.assert_close(trained(2, []), expected, rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="accumulation"):
        GradientStep(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1), None, 0)


def test_checkpointer_restores_every_named_object(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters())
    generator = torch.Generator().manual_seed(7)
    store = CheckpointStore(RunFolder(tmp_path))
    objects = {"model": model, "optimizer": optimizer, "generator": GeneratorState(generator)}
    checkpointer = Checkpointer(store, {**objects, "scheduler": None})
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    checkpointer.save(3, {"note": "kept"})
    saved = {name: value.clone() for name, value in model.state_dict().items()}
    draw = torch.rand(4, generator=generator)
    with torch.no_grad():
        model.weight.add_(1.0)
    checkpoint = store.latest()
    assert checkpoint["epoch"] == 3 and checkpoint["note"] == "kept"
    assert checkpoint["scheduler"] is None
    checkpointer.restore(checkpoint)
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved[name]), name
    assert torch.equal(torch.rand(4, generator=generator), draw)
    assert store.epochs() == [3] and store.path(3) == tmp_path / "checkpoints" / "epoch-0003.pt"


def test_a_higher_is_better_metric_stops_and_picks_its_best_epoch():
    stopper = EarlyStopping(patience=2, threshold=0.1, burnin=0, lower_is_better=False)
    # 0.5 best; 0.54 (< 0.55, no); 0.56 (best); 0.6 (< 0.616, no); 0.61 (no) -> stop
    decisions = [
        stopper.update(epoch, v) for epoch, v in enumerate([0.5, 0.54, 0.56, 0.6, 0.61], 1)
    ]
    assert decisions == [False, False, False, False, True]
    history = [{"epoch": 1, "acc": 0.5}, {"epoch": 2, "acc": 0.7}, {"epoch": 3, "acc": 0.7}]
    assert best_epoch(history, "acc", lower_is_better=False) == 2
    assert best_epoch(history, "acc", lower_is_better=True) == 1
    nan = [{"epoch": 1, "acc": float("nan")}, {"epoch": 2, "acc": 0.1}]
    assert best_epoch(nan, "acc", lower_is_better=False) == 2


# --------------------------------------------------------------------------- token lists

#: The store's own labels: five TIMIT phones, token id = index in this list.
TOKENS = ["aa", "b", "d", "f", "iy"]


def write_store(
    path: Path, utterances: int, seed: int, token_list: list[str] | None = None
) -> None:
    rng = np.random.default_rng(seed)
    prototypes = np.random.default_rng(3).normal(size=(len(TOKENS), 4)) * 2
    feats, tokens = [], []
    for _ in range(utterances):
        sequence = rng.permutation(len(TOKENS))[:3]
        frames = [prototypes[t] + 0.3 * rng.normal(size=(4, 4)) for t in sequence]
        feats.append(np.concatenate(frames).astype(np.float32))
        tokens.append(sequence.tolist())
    attributes = {} if token_list is None else {"token_list": token_list}
    ids = [f"utt{index}" for index in range(utterances)]
    with FeatureStoreWriter(path, ids, [len(f) for f in feats], 4, tokens, attributes) as writer:
        writer.write(0, feats)
        writer.commit()


def run_settings(run_dir: Path, cache: Path, **training) -> dict:
    return {
        "info": {"name": "tokens", "seed": 1, "run_dir": str(run_dir)},
        "data": {"cache_directory": str(cache), "batch_size": 3},
        "model": {"window_size": 3, "window_stride": 2, "convolutional_layers": 1,
                  "convolutional_initial_channels": 2, "convolutional_freq_factor": 1,
                  "recurrent_size": 8, "recurrent_layers": 1},
        "training": {"num_epochs": 2, "num_threads": 1, **training},
        "evaluation": {"beam_width": 2, "batch_size": 3},
    }  # fmt: skip


def test_the_model_outputs_the_stores_tokens_and_a_blank(tmp_path):
    cache = tmp_path / "cache"
    for partition, count, seed in (("train", 9, 0), ("dev", 3, 1), ("test", 3, 2)):
        write_store(cache / f"{partition}.zarr", count, seed, TOKENS)
    config = RunConfig.model_validate(
        run_settings(tmp_path / "run", cache, gradient_accumulation=2)
    )
    summary = train_run(config, progress=False)
    assert summary.epochs_run == 2
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=False)
    assert saved["token_list"] == TOKENS
    assert saved["model"]["output.weight"].shape[0] == len(TOKENS) + 1
    results = evaluate_run(config)
    assert results["test"]["reference_phones"] == 9
    assert (
        json.loads((tmp_path / "run" / "results.json").read_text())["test_per"]
        == (results["test_per"])
    )
    # a scored store with other labels is refused: its ids would not mean the same phones
    write_store(cache / "other.zarr", 3, 3, ["iy", "f", "d", "b", "aa"])
    other = run_settings(tmp_path / "run", cache, gradient_accumulation=2)
    other["data"]["test_partition"] = "other"
    with pytest.raises(UserInputError, match="token list differs"):
        evaluate_run(RunConfig.model_validate(other), force=True)


def test_labels_that_are_not_phones_are_refused_by_ctc_phones(tmp_path):
    cache = tmp_path / "cache"
    write_store(cache / "train.zarr", 4, 0, ["yes", "no", "up", "down", "go"])
    write_store(cache / "dev.zarr", 2, 1, ["yes", "no", "up", "down", "go"])
    config = RunConfig.model_validate(run_settings(tmp_path / "run", cache))
    with pytest.raises(UserInputError, match="not TIMIT's 48 phones"):
        train_run(config, progress=False)
