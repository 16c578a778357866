"""Early stopping on the dev metric: stop after a number of epochs without a relative improvement.

Used by the trainer; its state goes into every checkpoint.
"""

from __future__ import annotations

import math
from typing import Any


class EarlyStopping:
    """Counts epochs since the last improvement of at least ``threshold`` (relative) after burn-in.

    With ``lower_is_better`` (an error rate) a value improves on ``best`` when it is below
    ``best * (1 - threshold)``; otherwise (an accuracy) when it is above ``best * (1 + threshold)``.
    """

    def __init__(
        self, patience: int | None, threshold: float, burnin: int, lower_is_better: bool = True
    ) -> None:
        self.patience = patience
        self.threshold = threshold
        self.burnin = burnin
        self.lower_is_better = lower_is_better
        self.best = math.inf if lower_is_better else -math.inf
        self.epochs_without_improvement = 0

    def _improves(self, value: float) -> bool:
        if math.isinf(self.best):
            return True
        if self.lower_is_better:
            return value < self.best * (1 - self.threshold)
        return value > self.best * (1 + self.threshold)

    def update(self, epoch: int, value: float) -> bool:
        """Record an epoch's value; True when training should stop now."""
        if self._improves(value):
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
