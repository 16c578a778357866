"""Early stopping on the dev PER: stop after a number of epochs without a relative improvement.

Used by the training loop; its state goes into every checkpoint.
"""

from __future__ import annotations

import math
from typing import Any


class EarlyStopping:
    """Counts epochs since the last improvement of at least ``threshold`` (relative) after burn-in."""

    def __init__(self, patience: int | None, threshold: float, burnin: int) -> None:
        self.patience = patience
        self.threshold = threshold
        self.burnin = burnin
        self.best = math.inf
        self.epochs_without_improvement = 0

    def update(self, epoch: int, value: float) -> bool:
        """Record an epoch's value; True when training should stop now."""
        if value < self.best * (1 - self.threshold) or math.isinf(self.best):
            self.best = value
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        if self.patience is None or epoch <= self.burnin:
            return False
        return self.epochs_without_improvement >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "epochs_without_improvement": self.epochs_without_improvement}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state["best"]
        self.epochs_without_improvement = state["epochs_without_improvement"]
