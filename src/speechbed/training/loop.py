"""The CTC training loop of a run: epochs, dev PER, LR plateau schedule, early stopping, resume.

``scripts/train.py`` calls ``train_run``; a killed run restarted with the same config continues
from its last complete epoch and ends with the parameters an uninterrupted run would have.
A run trained on other data (or by other training code) is moved aside and trained afresh
(see speechbed.training.run_lineage); a run of other settings is refused.
"""

from __future__ import annotations

import math
import random
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from speechbed.decoding import phone_error_counts, transcribe
from speechbed.errors import UserInputError
from speechbed.lineage import FINGERPRINT_FILE, digest, fingerprint
from speechbed.models import BLANK_INDEX, AcousticModel, build_model
from speechbed.outputs import make_folder, write_text_atomic
from speechbed.training.augmentation import augment_batch
from speechbed.training.checkpoints import (
    CheckpointStore,
    capture_random_states,
    remove_dead_leftovers,
    restore_random_states,
    save_atomically,
)
from speechbed.training.config import RunConfig, TrainingConfig
from speechbed.training.data import num_features, open_loader, sample_frames, store_path
from speechbed.training.run_lineage import TRAINING_CODE_VERSION, RunIdentity, move_run_aside
from speechbed.training.run_log import RunLog
from speechbed.training.stopping import EarlyStopping

MODEL_FILE = "model.pt"


class TrainingJob(RunConfig):
    """The run config as the job of scripts/train.py: reads the train and dev stores, writes the run.

    Its outputs are the run folder (whose lock, ``.<run_dir name>.lock`` beside it, makes a
    second trainer of the same run wait, then find it trained) and ``model.pt``.
    """

    code_versions: ClassVar[dict[str, int]] = {"training": TRAINING_CODE_VERSION}

    def lineage_paths(self) -> tuple[list[Path], list[Path]]:
        data, run_dir = self.data, Path(self.info.run_dir)
        stores = [store_path(data, data.train_partition), store_path(data, data.dev_partition)]
        return stores, [run_dir, run_dir / MODEL_FILE]


@dataclass(frozen=True)
class TrainingSummary:
    """What a finished (or skipped) run reports."""

    best_epoch: int
    best_dev_per: float
    epochs_run: int
    skipped: bool


def training_fingerprint(config: RunConfig) -> str:
    """What a run's parameters depend on: its settings, its train/dev stores and the code."""
    return RunIdentity.of(config).fingerprint


def make_optimizer(config: TrainingConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    learning_rate = 10.0**config.log10_learning_rate
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=learning_rate)
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=0.9)
    return torch.optim.RMSprop(model.parameters(), lr=learning_rate)


def make_scheduler(
    config: TrainingConfig, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """Reduce-on-plateau of the dev PER, or None when reduce_lr_factor is 1 (off)."""
    if config.reduce_lr_factor >= 1.0:
        return None
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="min",
        factor=config.reduce_lr_factor,
        patience=config.reduce_lr_patience,
        threshold=config.reduce_lr_threshold,
        threshold_mode="rel",
        cooldown=config.reduce_lr_cooldown,
        eps=10.0**config.reduce_lr_log10_epsilon,
    )


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserInputError("training.device is 'cuda' but torch sees no CUDA device; use 'cpu'")
    return torch.device(name)


def train_epoch(
    model: AcousticModel,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    config: TrainingConfig,
    augmentation: torch.Generator,
    device: torch.device,
    description: str,
    progress: bool,
) -> float:
    """One pass over the training batches; returns the utterance-weighted mean CTC loss."""
    model.train()
    ctc = torch.nn.CTCLoss(blank=BLANK_INDEX, reduction="mean", zero_infinity=True)
    use_autocast = device.type == "cuda" and config.mixed_precision
    total_loss, total_utterances = 0.0, 0
    # in a log file (no terminal) a bar redrawn every few seconds would bury the epoch lines
    bar = tqdm(
        loader,
        desc=description,
        unit="batch",
        leave=False,
        disable=not progress,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
    )
    for features, lengths, targets, target_lengths, _ in bar:
        features, lengths = augment_batch(features, lengths, config, augmentation)
        features = features.to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_autocast):
            logits, counts = model(features, lengths.to(device))
        log_probs = torch.log_softmax(logits.float(), dim=-1).transpose(0, 1)
        loss = ctc(log_probs, targets.to(device), counts, target_lengths.to(device))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total_loss += loss.item() * len(lengths)
        total_utterances += len(lengths)
        bar.set_postfix(loss=f"{total_loss / total_utterances:.3f}")
    return total_loss / max(total_utterances, 1)


def dev_phone_error_rate(model: AcousticModel, loader: DataLoader, device: torch.device) -> float:
    """Greedy-decoded PER (39 phones) of the dev partition."""
    hypotheses, references = transcribe(model, loader, beam_width=0, device=device)
    return phone_error_counts(references, hypotheses).error_rate


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _clear_run(run_dir: Path, store: CheckpointStore) -> None:
    shutil.rmtree(store.folder, ignore_errors=True)
    shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
    for name in (MODEL_FILE, "hist.csv", FINGERPRINT_FILE):
        (run_dir / name).unlink(missing_ok=True)


def _mark_trained(run_dir: Path, identity: RunIdentity) -> None:
    """The run folder's lineage fingerprint: what it was trained from and the model it holds."""
    model = fingerprint(run_dir / MODEL_FILE) or ""
    write_text_atomic(run_dir / FINGERPRINT_FILE, digest([identity.fingerprint, model]) + "\n")


def _load_model_record(path: Path) -> dict[str, Any] | None:
    # our own file, holding plain python values besides tensors: not loadable with weights_only
    return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None


def train_run(
    config: RunConfig, force: bool = False, progress: bool = True, keep: Iterable[Path] = ()
) -> TrainingSummary:
    """Train (or continue training) the run described by ``config`` and save its best model.

    A run folder trained on other data or by other training code is moved aside (the files
    of ``keep`` in it, such as its job file, are copied back) and the run starts afresh.
    """
    run_dir = Path(config.info.run_dir)
    identity = RunIdentity.of(config)
    make_folder(run_dir)
    store = CheckpointStore(run_dir / "checkpoints")
    if force:
        _clear_run(run_dir, store)
    model_path = run_dir / MODEL_FILE
    saved, state = _load_model_record(model_path), store.latest()
    differences = [
        difference
        for recorded in (saved, state)
        if recorded is not None and (difference := identity.difference(recorded, config))
    ]
    if any(other_settings for other_settings, _ in differences):
        raise UserInputError(
            f"info.run_dir {run_dir} holds a run trained with other settings; "
            "use another run_dir, or --force to start this run over"
        )
    if differences:
        stale = move_run_aside(run_dir, keep)
        print(f"{run_dir}: {differences[0][1]}; moved it to {stale.name}; training afresh")
        saved = state = None
    if saved is not None:
        if not (run_dir / FINGERPRINT_FILE).is_file():
            _mark_trained(run_dir, identity)
        print(f"{run_dir}: already trained (best epoch {saved['epoch']}); skipped")
        return TrainingSummary(saved["epoch"], saved["dev_per"], 0, skipped=True)
    (run_dir / FINGERPRINT_FILE).unlink(missing_ok=True)  # not trained until model.pt is saved
    remove_dead_leftovers(run_dir)
    remove_dead_leftovers(store.folder)
    training = config.training
    device = resolve_device(training.device)
    if training.num_threads is not None:
        torch.set_num_threads(training.num_threads)
    seed = config.training_seed
    _seed_everything(seed)
    loader_generator = torch.Generator().manual_seed(seed + 1)
    augmentation = torch.Generator().manual_seed(seed + 2)
    train_loader = open_loader(
        config.data,
        config.data.train_partition,
        shuffle=True,
        seed=seed,
        generator=loader_generator,
    )
    dev_loader = open_loader(
        config.data, config.data.dev_partition, shuffle=False, generator=torch.Generator()
    )
    features = num_features(train_loader)
    model = build_model(config.model, features, config.model_seed, training.dropout_prob)
    model.fit_input_normalization(sample_frames(train_loader.dataset))
    model = model.to(device)
    optimizer = make_optimizer(training, model)
    scheduler = make_scheduler(training, optimizer)
    stopper = EarlyStopping(
        training.early_stopping_patience,
        training.early_stopping_threshold,
        training.early_stopping_burnin,
    )
    scaler = torch.amp.GradScaler(
        device.type, enabled=device.type == "cuda" and training.mixed_precision
    )
    history: list[dict[str, Any]] = []
    stopped = False
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        stopper.load_state_dict(state["early_stopping"])
        scaler.load_state_dict(state["scaler"])
        loader_generator.set_state(state["loader_generator"])
        augmentation.set_state(state["augmentation_generator"])
        restore_random_states(state["random_states"])
        history, stopped = state["history"], state["stopped"]
        print(f"{run_dir}: resuming after epoch {state['epoch']}")
    log = RunLog(run_dir, history)
    try:
        epoch = len(history)
        while not stopped and epoch < training.num_epochs:
            epoch += 1
            started = time.perf_counter()
            train_loader.batch_sampler.set_epoch(epoch)
            learning_rate = optimizer.param_groups[0]["lr"]
            loss = train_epoch(
                model, train_loader, optimizer, scaler, training, augmentation, device,
                f"{config.info.name} epoch {epoch}/{training.num_epochs}", progress,
            )  # fmt: skip
            dev_per = dev_phone_error_rate(model, dev_loader, device)
            if scheduler is not None and epoch > training.reduce_lr_burnin:
                scheduler.step(dev_per)
            stopped = stopper.update(epoch, dev_per)
            row = {
                "epoch": epoch,
                "loss": loss,
                "dev_per": dev_per,
                "learning_rate": learning_rate,
                "seconds": round(time.perf_counter() - started, 3),
            }
            log.add(row)
            print(
                f"{config.info.name} epoch {epoch}: loss {loss:.4f}, dev PER {100 * dev_per:.2f}%, "
                f"lr {learning_rate:.3g}, {row['seconds']:.1f} s"
                + (" (early stop)" if stopped else "")
            )
            store.save(
                epoch,
                {
                    "epoch": epoch,
                    **identity.record(),
                    "num_features": features,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "early_stopping": stopper.state_dict(),
                    "scaler": scaler.state_dict(),
                    "loader_generator": loader_generator.get_state(),
                    "augmentation_generator": augmentation.get_state(),
                    "random_states": capture_random_states(),
                    "history": log.history,
                    "stopped": stopped,
                },
            )
            if training.keep_last_and_best_only:
                store.prune({epoch, _best_epoch(log.history)})
    finally:
        log.close()
    best_epoch = _best_epoch(log.history)
    best = store.load(best_epoch)
    save_atomically(
        {
            "model": best["model"],
            "model_config": config.model.model_dump(mode="json"),
            "num_features": features,
            "epoch": best_epoch,
            "dev_per": log.history[best_epoch - 1]["dev_per"],
            **identity.record(),
            "run_name": config.info.name,
        },
        model_path,
    )
    _mark_trained(run_dir, identity)
    best_dev_per = log.history[best_epoch - 1]["dev_per"]
    print(f"{config.info.name}: best epoch {best_epoch}, dev PER {100 * best_dev_per:.2f}%")
    return TrainingSummary(best_epoch, best_dev_per, len(log.history), skipped=False)


def _best_epoch(history: list[dict[str, Any]]) -> int:
    """The earliest epoch with the lowest dev PER (NaN never wins)."""
    scores = [row["dev_per"] if not math.isnan(row["dev_per"]) else math.inf for row in history]
    return history[scores.index(min(scores))]["epoch"]


def load_trained_model(
    run_dir: Path, device: str | torch.device = "cpu"
) -> tuple[AcousticModel, dict]:
    """The run's saved best model (eval mode) and its record (epoch, dev_per, ...)."""
    from speechbed.training.config import ModelConfig

    path = Path(run_dir) / MODEL_FILE
    if not path.exists():
        raise UserInputError(f"{path}: no trained model; run scripts/train.py on this config first")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    model = AcousticModel(ModelConfig(**saved["model_config"]), saved["num_features"])
    model.load_state_dict(saved["model"])
    return model.to(device).eval(), saved
