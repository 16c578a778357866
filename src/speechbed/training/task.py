"""The task interface: what a recipe supplies to the one training loop and to evaluation.

Implemented by the tasks in speechbed.tasks (registered there by name); ``make_task`` finds
the run's task; called by speechbed.training.trainer, .loop and .evaluation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from speechbed.tasks import task_class

if TYPE_CHECKING:  # types only: the interface itself needs neither torch nor the config
    import torch
    from torch.utils.data import DataLoader

    from speechbed.run_folder import RunFolder
    from speechbed.training.config import RunConfig


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

    @property
    def score_key(self) -> str:
        """The headline score's key (the run config's ``score_key``: "per", "wer", ...)."""
        return self.config.score_key

    @property
    def lower_is_better(self) -> bool:
        return self.config.lower_is_better

    @property
    def score_is_percent(self) -> bool:
        return self.config.score_is_percent

    @property
    def metric(self) -> str:
        """The per-epoch dev score, ``dev_<score_key>``: its hist.csv column and model.pt key
        (the best epoch's value); the reports read it by that name."""
        return f"dev_{self.score_key}"

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

    def parameter_groups(self, model: torch.nn.Module) -> list[dict[str, Any]] | None:
        """The optimiser's parameter groups, or None (the default): one group of all of them.

        Each group is ``{"params": [...], "lr_factor": f}`` (its learning rate is the run's
        times ``f``, default 1, under every schedule), optionally with other optimiser keys
        (``weight_decay``); every parameter of the model must be in exactly one group. The
        RNN-T task gives its joint network's output layer ``joint_net_lr_factor`` so.
        """
        return None

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
        """Score one partition (``role`` dev or test): its results.json entry, holding at least
        ``score_key``. May write its own files into the run folder (transcripts).
        """


def make_task(config: RunConfig) -> Task:
    """The run's task (``config.task``, looked up by name in speechbed.tasks), set up with it."""
    return task_class(config.task)(config)
