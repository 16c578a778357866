"""A run's ``model.pt``: the best epoch's weights with what rebuilds the model, and its record.

Written by the training loop (speechbed.training.loop); read by it (to skip a trained run)
and by evaluation (speechbed.training.evaluation), which rebuilds the model through the task.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from speechbed.errors import UserInputError
from speechbed.lineage import FINGERPRINT_FILE, digest, fingerprint
from speechbed.outputs import write_text_atomic
from speechbed.run_folder import RunFolder
from speechbed.training.checkpoints import save_atomically
from speechbed.training.run_lineage import RunIdentity
from speechbed.training.task import Task


def save_model_record(
    run: RunFolder,
    weights: Mapping[str, torch.Tensor],
    description: Mapping[str, Any],
    record: Mapping[str, Any],
) -> None:
    """model.pt: ``model`` (the weights), the task's model ``description``, then ``record``."""
    save_atomically({"model": weights, **description, **record}, run.model)


def load_model_record(path: Path) -> dict[str, Any] | None:
    """The saved record of ``path`` (a model.pt), or None when there is none."""
    # our own file, holding plain python values besides tensors: not loadable with weights_only
    return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None


def mark_trained(run: RunFolder, identity: RunIdentity) -> None:
    """The run folder's lineage fingerprint: what it was trained from and the model it holds."""
    model = fingerprint(run.model) or ""
    write_text_atomic(run.path / FINGERPRINT_FILE, digest([identity.fingerprint, model]) + "\n")


def load_trained_model(
    task: Task, run: RunFolder, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The run's saved best model (eval mode), rebuilt by its task, and its record."""
    saved = load_model_record(run.model)
    if saved is None:
        raise UserInputError(
            f"{run.model}: no trained model; run scripts/train.py on this config first"
        )
    model = task.load_model(saved)
    model.load_state_dict(saved["model"])
    return model.to(device).eval(), saved
