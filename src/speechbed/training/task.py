"""The task interface: what a recipe supplies to the one training loop and to evaluation.

The run config's ``task`` names a task registered in ``TASKS``; ``make_task`` imports its module
only then (tasks import the training layer, never the other way round). Implemented in
speechbed.tasks; called by speechbed.training.trainer, .loop and .evaluation.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from difflib import get_close_matches
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

if TYPE_CHECKING:  # the run config is read where torch is not: no torch import at run time here
    import torch
    from torch.utils.data import DataLoader

    from speechbed.run_folder import RunFolder
    from speechbed.training.config import RunConfig

#: Task name (the run config's ``task``) -> ``module:class`` of its implementation.
TASKS: dict[str, str] = {
    "ctc_phones": "speechbed.tasks.ctc_phones:CtcPhonesTask",
}
DEFAULT_TASK = "ctc_phones"


class BuiltModel(NamedTuple):
    """A new model and the plain values that rebuild it (saved in model.pt and checkpoints)."""

    model: torch.nn.Module
    description: dict[str, Any]


class Task(ABC):
    """One recipe: its batches, model, loss, dev metric and evaluation.

    The loop calls, per run: ``open_loader`` (train, then dev), ``build_model``; per training
    batch: ``augment``, ``forward`` (under autocast when mixed precision is on), ``loss``,
    ``batch_size``; per epoch: ``dev_metric``. Evaluation calls ``load_model``, then
    ``result_header`` and ``evaluate`` per scored partition.
    """

    #: The per-epoch dev metric: its hist.csv column and model.pt key (the best epoch's value).
    metric: ClassVar[str]
    #: Whether a lower metric is better (PER) or a higher one (accuracy).
    lower_is_better: ClassVar[bool]

    def __init__(self, config: RunConfig) -> None:
        self.config = config

    @abstractmethod
    def open_loader(
        self,
        partition: str,
        *,
        shuffle: bool,
        seed: int = 0,
        batch_size: int | None = None,
        generator: torch.Generator | None = None,
    ) -> DataLoader:
        """Batches of one partition; a shuffled loader's ``batch_sampler`` has ``set_epoch``."""

    @abstractmethod
    def build_model(self, train_loader: DataLoader) -> BuiltModel:
        """A fresh model for the run (its initialisation from the run's model seed)."""

    @abstractmethod
    def load_model(self, description: Mapping[str, Any]) -> torch.nn.Module:
        """The model a ``BuiltModel.description`` (as saved in model.pt) describes, untrained."""

    def augment(self, batch: Any, generator: torch.Generator) -> Any:
        """A training batch, augmented with draws from ``generator`` only (default: as it is)."""
        return batch

    @abstractmethod
    def forward(self, model: torch.nn.Module, batch: Any, device: torch.device) -> Any:
        """The model's outputs for a batch (run under autocast with mixed precision)."""

    @abstractmethod
    def loss(self, outputs: Any, batch: Any, device: torch.device) -> torch.Tensor:
        """The batch's loss (a mean over its items), outside autocast."""

    @abstractmethod
    def batch_size(self, batch: Any) -> int:
        """Items in a batch (weights the epoch's mean loss)."""

    @abstractmethod
    def dev_metric(self, model: torch.nn.Module, loader: DataLoader, device: torch.device) -> float:
        """The metric of one pass over the dev loader."""

    def describe_metric(self, value: float) -> str:
        """The metric for a log line."""
        return f"{self.metric} {value:.4g}"

    @abstractmethod
    def result_header(self, saved: Mapping[str, Any]) -> dict[str, Any]:
        """results.json fields that follow ``name`` and ``epoch`` (from model.pt's record)."""

    @abstractmethod
    def evaluate(
        self,
        model: torch.nn.Module,
        saved: Mapping[str, Any],
        role: str,
        partition: str,
        run: RunFolder,
    ) -> dict[str, Any]:
        """Score one partition (``role`` dev or test); the results.json fields it adds.

        May write its own files into the run folder (transcripts).
        """


def task_class(name: str) -> type[Task]:
    """The class registered as ``name``; ValueError naming the known tasks when unknown."""
    if name not in TASKS:
        close = get_close_matches(name, TASKS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{name!r} is not a task (known: {', '.join(sorted(TASKS))}){hint}")
    module, attribute = TASKS[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def make_task(config: RunConfig) -> Task:
    """The run's task, set up with its config."""
    return task_class(config.task)(config)
