"""Epoch checkpoints of a run: written atomically, found again on restart, pruned by a policy.

Used by the trainer: a ``Checkpointer`` saves and restores a mapping of named objects that
know their own state (``state_dict``/``load_state_dict``), so a checkpoint holds everything
needed to continue bit-for-bit and no key is listed twice.
"""

from __future__ import annotations

import io
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from speechbed.outputs import PARTIAL_MARK, remove_dead_partials, write_bytes_atomic
from speechbed.run_folder import RunFolder

_NAME = re.compile(r"epoch-(\d+)\.pt")


def save_atomically(payload: Any, path: Path) -> None:
    """Serialize ``payload`` in memory, then write it through speechbed.outputs.

    Serializing first makes a full disk an ``OutputError`` that names the file and the space
    needed (torch.save straight to a file reports a failed write as a bare RuntimeError).
    """
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def remove_dead_leftovers(folder: Path) -> None:
    """Remove the temporaries (``.name.partial-<pid>``) that dead processes left in ``folder``.

    ``atomic_output`` removes those of the file it writes; a killed epoch's checkpoint may
    never be written under that name again, so a run clears every name at its start.
    """
    if not folder.is_dir():
        return
    for entry in list(folder.iterdir()):
        if entry.name.startswith(".") and PARTIAL_MARK in entry.name:
            target = entry.name[1:].rsplit(PARTIAL_MARK, 1)[0]
            remove_dead_partials(folder / target)


def capture_random_states() -> dict[str, Any]:
    """The global random states a training epoch draws from (torch CPU and CUDA, numpy, python)."""
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: dict[str, Any]) -> None:
    """Put back what ``capture_random_states`` saved."""
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class Stateful(Protocol):
    """What a checkpointed object offers (modules, optimizers, schedulers, scalers, ...)."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


class GeneratorState:
    """A ``torch.Generator`` as a checkpointed object (its state is the generator's bytes)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def state_dict(self) -> torch.Tensor:
        return self.generator.get_state()

    def load_state_dict(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)


class GlobalRandomStates:
    """The process-wide random states (torch CPU and CUDA, numpy, python) as a checkpointed object."""

    def state_dict(self) -> dict[str, Any]:
        return capture_random_states()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        restore_random_states(state)


class CheckpointStore:
    """``<run_dir>/checkpoints/epoch-NNNN.pt``, one per completed epoch."""

    def __init__(self, run: RunFolder) -> None:
        self.run = run
        self.folder = run.checkpoints

    def path(self, epoch: int) -> Path:
        return self.run.checkpoint(epoch)

    def epochs(self) -> list[int]:
        """Epochs with a complete checkpoint, in order (partial files never match the name)."""
        if not self.folder.is_dir():
            return []
        found = (_NAME.fullmatch(entry.name) for entry in self.folder.iterdir())
        return sorted(int(match.group(1)) for match in found if match)

    def save(self, epoch: int, state: dict[str, Any]) -> None:
        save_atomically(state, self.path(epoch))

    def load(self, epoch: int) -> dict[str, Any]:
        # our own files, holding numpy and python RNG states: not loadable with weights_only
        return torch.load(self.path(epoch), map_location="cpu", weights_only=False)

    def latest(self) -> dict[str, Any] | None:
        epochs = self.epochs()
        return self.load(epochs[-1]) if epochs else None

    def prune(self, keep: set[int]) -> None:
        """Delete every checkpoint whose epoch is not in ``keep``."""
        for epoch in self.epochs():
            if epoch not in keep:
                self.path(epoch).unlink(missing_ok=True)


def best_epochs(
    history: Sequence[Mapping[str, Any]], metric: str, lower_is_better: bool, count: int
) -> list[int]:
    """The ``count`` epochs of best ``metric``, best first (earlier first on ties, NaN last)."""
    sign = 1.0 if lower_is_better else -1.0

    def rank(row: Mapping[str, Any]) -> tuple[float, int]:
        value = row[metric]
        return (math.inf if math.isnan(value) else sign * value, row["epoch"])

    return [row["epoch"] for row in sorted(history, key=rank)[:count]]


@dataclass(frozen=True)
class RetentionPolicy:
    """Which epoch checkpoints pruning keeps (``training.keep_*``, ``save_frequency``).

    Always the newest (a restart resumes from it; at the end it is the final epoch's), the
    ``keep_best`` best by the dev metric, every ``save_frequency``-th epoch and the
    milestone epochs of ``keep_epochs``.
    """

    keep_best: int = 1
    save_frequency: int | None = None
    keep_epochs: tuple[int, ...] = ()

    def kept(
        self, history: Sequence[Mapping[str, Any]], metric: str, lower_is_better: bool
    ) -> set[int]:
        epochs = [row["epoch"] for row in history]
        kept = {epochs[-1]} if epochs else set()
        kept.update(best_epochs(history, metric, lower_is_better, self.keep_best))
        if self.save_frequency is not None:
            kept.update(epoch for epoch in epochs if epoch % self.save_frequency == 0)
        kept.update(epoch for epoch in epochs if epoch in self.keep_epochs)
        return kept


class Checkpointer:
    """Saves and restores named objects: ``{"model": model, "optimizer": optimizer, ...}``.

    A checkpoint maps each name to the object's ``state_dict()`` (None for an object that is
    None, such as a schedule that is off), beside plain ``metadata`` (epoch, fingerprints).
    """

    def __init__(self, store: CheckpointStore, objects: Mapping[str, Stateful | None]) -> None:
        self.store = store
        self.objects = dict(objects)

    def save(self, epoch: int, metadata: Mapping[str, Any]) -> None:
        states = {
            name: None if item is None else item.state_dict() for name, item in self.objects.items()
        }
        self.store.save(epoch, {"epoch": epoch, **metadata, **states})

    def restore(self, checkpoint: Mapping[str, Any]) -> None:
        """Put every object back as ``checkpoint`` (a loaded one) holds it."""
        for name, item in self.objects.items():
            if item is not None:
                item.load_state_dict(checkpoint[name])
