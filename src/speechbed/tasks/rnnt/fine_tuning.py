"""Fine-tuning an RNN-T run from another run's weights (``training.fine_tune``, ``checkpoint``).

Called by the rnnt task's ``build_model``: the new run's transducer starts from the weights of
a run's model.pt (its EMA weights when the run kept an average) or of one of its checkpoints
(``ema`` when present, else ``model``), then trains with its own, fresh, optimiser and
learning-rate schedule (warmup and hold from its own training section). The source file is only
read. Optionally the LSTMs are then swapped for hard-activation ones (speechbed.models.hard_lstm).
"""

from __future__ import annotations

from pathlib import Path

import torch

from speechbed.errors import UserInputError


def source_weights(path: Path) -> dict[str, torch.Tensor]:
    """The weights to start from in a run's model.pt or checkpoint file."""
    try:
        # a run's own file, holding plain python values besides tensors
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise UserInputError(
            f"training.checkpoint: {path} not found (a run's model.pt or checkpoints/*.pt)"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise UserInputError(f"training.checkpoint: cannot read {path}: {error}") from None
    if not isinstance(saved, dict) or "model" not in saved:
        raise UserInputError(f"training.checkpoint: {path} is not a run's model.pt or checkpoint")
    weights = saved.get("ema") if saved.get("ema") is not None else saved["model"]
    return dict(weights)


def start_from(model: torch.nn.Module, path: Path) -> None:
    """Load ``path``'s weights into ``model``; a model of other sizes is a clear error."""
    weights = source_weights(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    misshapen = [
        f"{key} {tuple(weights[key].shape)} vs {tuple(value.shape)}"
        for key, value in own.items()
        if key in weights and weights[key].shape != value.shape
    ]
    if missing or unexpected or misshapen:
        problems = (
            ([f"missing {', '.join(missing[:3])}"] if missing else [])
            + ([f"unexpected {', '.join(unexpected[:3])}"] if unexpected else [])
            + ([f"other shapes: {'; '.join(misshapen[:3])}"] if misshapen else [])
        )
        raise UserInputError(
            f"training.checkpoint: {path} does not fit this run's model section "
            f"({'; '.join(problems)}); fine-tuning keeps the source run's sizes"
        )
    model.load_state_dict(weights)
