"""Optimiser, parameter groups and the optimiser step (gradient scaling, accumulation, clipping).

Used by the trainer; the optimiser and scaler go into every checkpoint. The learning-rate
schedules are in speechbed.training.schedules.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from speechbed.training.config import TrainingConfig
from speechbed.training.distributed import ALONE, ProcessGroup


def learning_rate(config: TrainingConfig) -> float:
    """The run's learning rate (each parameter group's is this times its ``lr_factor``)."""
    return 10.0**config.log10_learning_rate


def parameter_groups(
    model: torch.nn.Module, groups: Iterable[Mapping[str, Any]] | None, base_rate: float
) -> list[dict[str, Any]] | Iterable[torch.nn.Parameter]:
    """Torch's parameter groups from a task's (``Task.parameter_groups``), or all parameters.

    A group is ``{"params": [...], "lr_factor": f, ...}``: its rate is ``base_rate * f``
    (f defaults to 1); other keys (``weight_decay``) go to the optimiser as they are. Every
    parameter of the model must be in exactly one group.
    """
    if groups is None:
        return model.parameters()
    built, seen = [], set()
    for number, group in enumerate(groups):
        if "params" not in group:
            raise ValueError(f"parameter group {number} has no 'params'")
        params = list(group["params"])
        factor = float(group.get("lr_factor", 1.0))
        if not factor > 0.0:
            raise ValueError(f"parameter group {number}: lr_factor must be positive, got {factor}")
        for param in params:
            if id(param) in seen:
                raise ValueError(f"parameter group {number} repeats a parameter of another group")
            seen.add(id(param))
        built.append({**group, "params": params, "lr": base_rate * factor, "lr_factor": factor})
    missing = [name for name, param in model.named_parameters() if id(param) not in seen]
    if missing:
        raise ValueError(
            f"the task's parameter groups leave out {len(missing)} parameters of the model "
            f"({', '.join(missing[:5])}); every parameter must be in one group"
        )
    return built


def make_optimizer(
    config: TrainingConfig,
    model: torch.nn.Module,
    groups: Iterable[Mapping[str, Any]] | None = None,
) -> torch.optim.Optimizer:
    """``config.optimizer`` over the model's parameters (or the task's ``groups``).

    adam, adamw and lamb use ``adam_beta1``/``adam_beta2``; sgd and rms (rmsprop is the same)
    ``momentum`` (null: sgd 0.9, rms 0, as before the setting existed) and sgd ``nesterov``;
    every one ``weight_decay`` (AdamW and LAMB decoupled, the others added to the gradient)
    and ``optimizer_log10_epsilon`` (null: the optimiser's own default) where it has one.
    """
    rate = learning_rate(config)
    params = parameter_groups(model, groups, rate)
    options: dict[str, Any] = {"lr": rate, "weight_decay": config.weight_decay}
    if config.optimizer_log10_epsilon is not None and config.optimizer != "sgd":
        options["eps"] = 10.0**config.optimizer_log10_epsilon
    betas = (config.adam_beta1, config.adam_beta2)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, betas=betas, **options)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, betas=betas, **options)
    if config.optimizer == "lamb":
        from pytorch_optimizer import Lamb  # slow import, only for the runs that use it

        # adam_debias: the step is lr, not lr / (1 - beta1^t): as in You et al.'s LAMB each
        # tensor moves by lr * min(|w|, 10) (the trust ratio), its first steps included
        return Lamb(params, betas=betas, adam_debias=True, **options)
    if config.optimizer == "sgd":
        momentum = 0.9 if config.momentum is None else config.momentum
        return torch.optim.SGD(params, momentum=momentum, nesterov=config.nesterov, **options)
    momentum = 0.0 if config.momentum is None else config.momentum
    return torch.optim.RMSprop(params, momentum=momentum, **options)


class NonFiniteGradients(ArithmeticError):
    """The gradients of an optimiser step hold inf or NaN (without a grad scaler to skip it)."""

    def __init__(self, norm: float) -> None:
        super().__init__(f"the gradient norm is {norm}")
        self.norm = norm


@dataclass(frozen=True)
class StepOutcome:
    """An optimiser step: the total gradient norm (before clipping) and whether it was taken.

    With mixed precision the grad scaler skips a step whose gradients overflowed (and lowers
    its scale); ``norm`` is then inf or NaN and ``taken`` False.
    """

    norm: float
    taken: bool
    #: Whether a rank asked to stop (``GradientStep.stop_wanted``): every rank sees the same.
    stop: bool = False


class GradientStep:
    """Backward passes and optimiser steps of an epoch: loss scaling, accumulation, clipping.

    Batches are taken in groups of ``accumulation`` (the epoch's last group may be shorter);
    each batch's loss is divided by its group's size, so a step follows the group's mean loss,
    and the optimiser steps once per group. With ``accumulation`` 1 every batch is a step.
    Before a step the gradients are unscaled and their total 2-norm measured; with
    ``max_grad_norm`` they are scaled down to at most that norm. A non-finite norm without an
    enabled grad scaler raises ``NonFiniteGradients`` and leaves the weights untouched.

    With data-parallel ranks (``group``) a group is ``accumulation x world_size`` batches of
    the epoch, batch i on rank i mod world_size; the ranks' gradients are summed before the
    step. With ``rank_local`` (a loader that splits itself over the ranks) a group is each
    rank's next ``accumulation`` batches, however many each has left; the step divides by the
    batches it summed (speechbed.training.distributed).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        accumulation: int = 1,
        max_grad_norm: float | None = None,
        group: ProcessGroup = ALONE,
        rank_local: bool = False,
    ) -> None:
        if accumulation < 1:
            raise ValueError(f"accumulation must be at least 1, got {accumulation}")
        self.optimizer = optimizer
        self.scaler = scaler
        self.accumulation = accumulation
        self.max_grad_norm = max_grad_norm
        self.group = group
        self.rank_local = rank_local
        self.steps_in_epoch = 0
        self.stop_wanted = False  # this rank's vote, summed with the others' at each step
        self.any_rank_has_more = True  # (rank_local) from the latest step's all-reduce

    def __call__(
        self, loss: torch.Tensor, index: int, num_batches: int, last: bool = False
    ) -> StepOutcome | None:
        """Back-propagate this rank's batch ``index`` (from 0) of the epoch's ``num_batches``
        (on all ranks); step at a group's end. ``rank_local``: ``num_batches`` is not known,
        ``last`` says whether this is the rank's last batch of the epoch.

        Returns the step's outcome after the group's last batch, None before it.
        """
        if self.rank_local:
            return self._rank_local(loss, index, last)
        ranks, rank = self.group.world_size, self.group.rank
        batch = index * ranks + rank  # the batch's place in the epoch, over all ranks
        span = self.accumulation * ranks
        start = batch - batch % span
        group_size = min(span, num_batches - start)
        if batch - start < ranks:  # this rank's first batch of the group
            self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss if group_size == 1 else loss / group_size).backward()
        if batch + ranks < start + group_size:
            return None
        return self.step()

    def _rank_local(self, loss: torch.Tensor, index: int, last: bool) -> StepOutcome | None:
        """A batch of a rank that reads its own: its loss is divided by a full step's batch
        count here, and the step corrects that when the ranks summed fewer."""
        position = index % self.accumulation
        if position == 0:
            self.optimizer.zero_grad(set_to_none=True)
        span = self.accumulation * self.group.world_size
        self.scaler.scale(loss if span == 1 else loss / span).backward()
        if position + 1 < self.accumulation and not last:
            return None
        return self.step(batches=position + 1, more=not last)

    def finish(self, num_batches: int) -> Iterator[StepOutcome]:
        """End an epoch of ``num_batches`` (over all ranks; unused with ``rank_local``).

        A rank with no batch left takes steps with zero gradients while the others still
        take theirs, as they wait for its sum: in the epoch's last, short group of a sampler,
        or (``rank_local``) until no rank has batches left. Yields those steps' outcomes; the
        caller stops taking them at one that says stop (every rank sees the same).
        """
        if self.rank_local:
            while self.any_rank_has_more:
                self.optimizer.zero_grad(set_to_none=True)
                outcome = self.step(batches=0, more=False)
                if outcome is not None:
                    yield outcome
            self.any_rank_has_more = True
        else:
            steps = -(-num_batches // (self.accumulation * self.group.world_size))
            if self.group.parallel and self.steps_in_epoch < steps:
                self.optimizer.zero_grad(set_to_none=True)
                outcome = self.step()
                if outcome is not None:
                    yield outcome
        self.steps_in_epoch = 0

    def step(self, batches: int = 0, more: bool = False) -> StepOutcome | None:
        """Unscale, measure, clip, and step with the gradients the parameters hold.

        ``rank_local``: ``batches`` is how many this rank summed into them and ``more``
        whether it has batches left; a step with no batch on any rank is not taken (None).
        """
        self.steps_in_epoch += 1
        stop = self.stop_wanted
        params = [param for group in self.optimizer.param_groups for param in group["params"]]
        if self.group.parallel or self.rank_local:
            extras = (float(self.stop_wanted), float(batches), float(more))
            votes, total, more_ranks = self.group.sum_gradients(params, extras)
            stop = votes > 0
            if self.rank_local:
                self.any_rank_has_more = more_ranks > 0
                span = self.accumulation * self.group.world_size
                if total == 0:
                    self.optimizer.zero_grad(set_to_none=True)
                    return None
                if total != span:  # fewer batches than a full step: their mean, not /span
                    for param in params:
                        if param.grad is not None:
                            param.grad.mul_(span / total)
        self.scaler.unscale_(self.optimizer)
        params = [param for param in params if param.grad is not None]
        total_norm = torch.nn.utils.get_total_norm([param.grad for param in params])
        norm = float(total_norm)
        finite = math.isfinite(norm)
        if not finite and not self.scaler.is_enabled():
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteGradients(norm)  # every rank sees the same summed norm
        if finite and self.max_grad_norm is not None:
            torch.nn.utils.clip_grads_with_norm_(params, self.max_grad_norm, total_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return StepOutcome(norm, taken=finite, stop=stop)
