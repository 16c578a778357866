"""An exponential moving average of a model's weights (``training.ema_decay``).

Used by the trainer: updated after each optimiser step, swapped into the model for the dev
metric, saved in every checkpoint (``ema``) and, in place of the raw weights, in model.pt.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class WeightAverage:
    """``average = decay * average + (1 - decay) * weight`` for every floating-point entry.

    The entries are those of the model's ``state_dict`` (parameters and buffers, so a
    normalisation's statistics are averaged too); an integer buffer (a counter) is copied
    as it is at each update. The average starts as a copy of the model's weights. It is kept
    in float32 on the model's device, whatever precision the forward pass runs in.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.average = {name: value.detach().clone() for name, value in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average toward the model's current weights (after an optimiser step)."""
        for name, value in model.state_dict().items():
            kept = self.average[name]
            if kept.is_floating_point():
                kept.mul_(self.decay).add_(value.detach(), alpha=1.0 - self.decay)
            else:
                kept.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights: a state dict the model loads as it is (model.pt's weights)."""
        return self.average

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.average) ^ set(state)
        if missing:
            raise ValueError(f"the checkpoint's weight average differs in {sorted(missing)[:5]}")
        for name, value in state.items():
            self.average[name].copy_(value)

    @contextmanager
    def swapped_into(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """The model holding the averaged weights inside the block, its own ones again after."""
        own = {name: value.detach().clone() for name, value in model.state_dict().items()}
        model.load_state_dict(self.average)
        try:
            yield model
        finally:
            model.load_state_dict(own)
