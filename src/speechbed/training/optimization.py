"""Optimiser, learning-rate schedule and the optimiser step (gradient scaling, accumulation).

Used by the trainer; the optimiser, schedule and scaler go into every checkpoint.
"""

from __future__ import annotations

import torch

from speechbed.training.config import TrainingConfig


def make_optimizer(config: TrainingConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    learning_rate = 10.0**config.log10_learning_rate
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=learning_rate)
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=0.9)
    return torch.optim.RMSprop(model.parameters(), lr=learning_rate)


def make_scheduler(
    config: TrainingConfig, optimizer: torch.optim.Optimizer, lower_is_better: bool = True
) -> torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """Reduce-on-plateau of the dev metric, or None when reduce_lr_factor is 1 (off)."""
    if config.reduce_lr_factor >= 1.0:
        return None
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="min" if lower_is_better else "max",
        factor=config.reduce_lr_factor,
        patience=config.reduce_lr_patience,
        threshold=config.reduce_lr_threshold,
        threshold_mode="rel",
        cooldown=config.reduce_lr_cooldown,
        eps=10.0**config.reduce_lr_log10_epsilon,
    )


class GradientStep:
    """Backward passes and optimiser steps of an epoch: loss scaling and gradient accumulation.

    Batches are taken in groups of ``accumulation`` (the epoch's last group may be shorter);
    each batch's loss is divided by its group's size, so a step follows the group's mean loss,
    and the optimiser steps once per group. With ``accumulation`` 1 every batch is a step.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        accumulation: int = 1,
    ) -> None:
        if accumulation < 1:
            raise ValueError(f"accumulation must be at least 1, got {accumulation}")
        self.optimizer = optimizer
        self.scaler = scaler
        self.accumulation = accumulation

    def __call__(self, loss: torch.Tensor, index: int, num_batches: int) -> None:
        """Back-propagate batch ``index`` (from 0) of ``num_batches``; step at a group's end."""
        position = index % self.accumulation
        group_size = min(self.accumulation, num_batches - (index - position))
        if position == 0:
            self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss if group_size == 1 else loss / group_size).backward()
        if position == group_size - 1:
            self.scaler.step(self.optimizer)
            self.scaler.update()
