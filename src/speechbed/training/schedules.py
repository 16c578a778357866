"""Learning-rate schedules (``training.lr_schedule``): when each one steps and what it computes.

Used by the trainer, which calls ``after_step`` after every optimiser step and
``after_epoch`` after each epoch's dev metric; the schedule's state goes into every
checkpoint (``scheduler``). Every schedule scales each parameter group's own learning rate
(a group's ``lr_factor`` times the run's rate), so group ratios hold throughout.

- ``plateau`` (default): reduce-on-plateau of the dev metric, per epoch after
  ``reduce_lr_burnin`` epochs (off when ``reduce_lr_factor`` is 1).
- ``step`` / ``multistep`` / ``exponential``: per epoch, ``lr_gamma`` every
  ``lr_step_epochs`` epochs, at each of ``lr_milestones``, or after every epoch.
- ``onecycle``: per step, torch's one-cycle policy peaking at the run's rate.
- ``cosine``: per step, a linear warmup from ``min_lr`` over ``warmup_steps``, then half a
  cosine down to ``min_lr`` at the last step of the run.
- ``warmup_hold_decay`` (the RNN-T policy): per step, a linear warmup from ``min_lr`` over
  ``warmup_steps``, the peak held for ``hold_steps``, then a halving every
  ``half_life_steps``, never below ``min_lr``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.optim.lr_scheduler import (
    ExponentialLR,
    LambdaLR,
    LRScheduler,
    MultiStepLR,
    OneCycleLR,
    ReduceLROnPlateau,
    StepLR,
)

from speechbed.training.config import TrainingConfig

#: Schedules stepped after every optimiser step; the others step once an epoch.
PER_STEP = ("onecycle", "cosine", "warmup_hold_decay")


@dataclass(frozen=True)
class WarmupHoldDecay:
    """The learning rate before optimiser step ``step`` (from 0) of the RNN-T policy.

    Steps ``0 .. warmup_steps - 1`` rise linearly from ``min_lr`` (step 0) toward ``peak``
    (reached at step ``warmup_steps``); the next ``hold_steps`` steps stay at ``peak``; after
    that the rate halves every ``half_life_steps`` steps, floored at ``min_lr``.
    """

    peak: float
    min_lr: float
    warmup_steps: int
    hold_steps: int
    half_life_steps: int

    def learning_rate(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.min_lr + (self.peak - self.min_lr) * step / self.warmup_steps
        decaying = step - self.warmup_steps - self.hold_steps
        if decaying <= 0:
            return self.peak
        return max(self.min_lr, self.peak * 0.5 ** (decaying / self.half_life_steps))

    def __call__(self, step: int) -> float:
        """The factor on each group's rate (what ``LambdaLR`` multiplies by)."""
        return self.learning_rate(step) / self.peak


@dataclass(frozen=True)
class WarmupCosine:
    """Linear warmup from ``min_lr`` over ``warmup_steps``, then half a cosine from ``peak``
    down to ``min_lr`` at step ``total_steps`` (the step after the run's last)."""

    peak: float
    min_lr: float
    warmup_steps: int
    total_steps: int

    def learning_rate(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.min_lr + (self.peak - self.min_lr) * step / self.warmup_steps
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return self.min_lr + (self.peak - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def __call__(self, step: int) -> float:
        return self.learning_rate(step) / self.peak


def _uses_momentum(optimizer: torch.optim.Optimizer) -> bool:
    defaults = optimizer.defaults
    return "betas" in defaults or defaults.get("momentum", 0.0) > 0.0


def _build(
    config: TrainingConfig,
    optimizer: torch.optim.Optimizer,
    lower_is_better: bool,
    steps_per_epoch: int,
) -> LRScheduler | ReduceLROnPlateau | None:
    kind = config.lr_schedule
    peak = 10.0**config.log10_learning_rate
    total_steps = config.num_epochs * steps_per_epoch
    if kind == "plateau":
        if config.reduce_lr_factor >= 1.0:
            return None
        return ReduceLROnPlateau(
            optimizer,
            mode="min" if lower_is_better else "max",
            factor=config.reduce_lr_factor,
            patience=config.reduce_lr_patience,
            threshold=config.reduce_lr_threshold,
            threshold_mode="rel",
            cooldown=config.reduce_lr_cooldown,
            eps=10.0**config.reduce_lr_log10_epsilon,
        )
    if kind == "step":
        return StepLR(optimizer, step_size=config.lr_step_epochs, gamma=config.lr_gamma)
    if kind == "multistep":
        return MultiStepLR(optimizer, milestones=config.lr_milestones, gamma=config.lr_gamma)
    if kind == "exponential":
        return ExponentialLR(optimizer, gamma=config.lr_gamma)
    if kind == "onecycle":
        return OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=total_steps,
            pct_start=config.onecycle_pct_start,
            div_factor=config.onecycle_div_factor,
            final_div_factor=config.onecycle_final_div_factor,
            cycle_momentum=_uses_momentum(optimizer),
        )
    if kind == "cosine":
        shape = WarmupCosine(peak, config.min_lr, config.warmup_steps, total_steps)
        return LambdaLR(optimizer, shape)
    shape = WarmupHoldDecay(
        peak, config.min_lr, config.warmup_steps, config.hold_steps, config.half_life_steps
    )
    return LambdaLR(optimizer, shape)


class LearningRateSchedule:
    """The run's schedule (torch's scheduler, or none), stepped at the right moments.

    Its state is the torch scheduler's own ``state_dict`` (None when there is none), so a
    checkpoint written before the schedules were many resumes as it did.
    """

    def __init__(
        self,
        scheduler: LRScheduler | ReduceLROnPlateau | None,
        when: Literal["step", "epoch", "plateau"],
        burnin: int = 0,
    ) -> None:
        self.scheduler = scheduler
        self.when = when
        self.burnin = burnin

    def after_step(self) -> None:
        """Called after every optimiser step (also one the grad scaler skipped)."""
        if self.when == "step" and self.scheduler is not None:
            self.scheduler.step()

    def after_epoch(self, epoch: int, value: float) -> None:
        """Called after epoch ``epoch`` with its dev metric ``value``."""
        if self.scheduler is None:
            return
        if self.when == "plateau":
            if epoch > self.burnin:
                self.scheduler.step(value)
        elif self.when == "epoch":
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any] | None:
        return None if self.scheduler is None else self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scheduler is not None and state is not None:
            self.scheduler.load_state_dict(state)


def make_schedule(
    config: TrainingConfig,
    optimizer: torch.optim.Optimizer,
    lower_is_better: bool = True,
    steps_per_epoch: int = 1,
) -> LearningRateSchedule:
    """The schedule ``config.lr_schedule`` names, over ``num_epochs * steps_per_epoch`` steps."""
    kind = config.lr_schedule
    when = "plateau" if kind == "plateau" else "step" if kind in PER_STEP else "epoch"
    scheduler = _build(config, optimizer, lower_is_better, steps_per_epoch)
    return LearningRateSchedule(scheduler, when, config.reduce_lr_burnin)
