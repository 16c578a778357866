"""The run config: one YAML file describing a training run and its evaluation.

Read by ``scripts/train.py`` and ``scripts/evaluate.py`` (it is their job file) and by the sweep
and the search, which validate every run they make. This module holds the sections every task
shares (``info``, ``training``) and the bases of those each task shapes (``data``, ``model``,
``evaluation``); a task's own run config (``speechbed.tasks.<name>.config``, found through the
registry in ``speechbed.tasks``) subclasses ``RunConfig`` with its sections.
``RunConfig.model_validate`` (and every subclass of it used as a job schema) picks the class
of the document's ``task``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal

import pydantic
import pydantic_core
from pydantic import Field

from speechbed.errors import UserInputError
from speechbed.jobs import JobSchema
from speechbed.tasks import DEFAULT_TASK, TASKS, task_entry, unknown_task


class InfoConfig(JobSchema):
    """Who the run is and where it writes."""

    name: str = Field("run", description="a readable name for the run (logs, reports)")
    seed: int = Field(
        0, description="the run's seed; model.seed and training.seed default to it when null"
    )
    run_dir: Path = Field(
        description="folder for hist.csv, TensorBoard events, checkpoints, model.pt, results.json "
        "and the trn files"
    )


class DataConfig(JobSchema):
    """Where a run's partitions come from and how they are batched (every task's ``data``)."""

    train_partition: str = Field("train", description="partition trained on")
    dev_partition: str = Field(
        "dev", description="partition for model selection and the LR schedule"
    )
    test_partition: str = Field("test", description="partition scored once, at evaluation")
    batch_size: int = Field(32, ge=1, description="items per batch")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes (0: in-process)")

    #: What a partition's source is, and what to do when it is missing (in error messages).
    source_name: ClassVar[str] = "partition source"
    missing_source_hint: ClassVar[str] = "make it with the corpus's data_prep pipeline"

    def source(self, partition: str) -> Path:
        """The file or folder a partition is read from (run lineage fingerprints it)."""
        raise NotImplementedError(f"{type(self).__name__} does not say where partitions are")

    def existing_source(self, partition: str) -> Path:
        """``source(partition)``, or a UserInputError naming it and how to make it."""
        path = self.source(partition)
        if not path.exists():
            raise UserInputError(
                f"data: no {self.source_name} for partition '{partition}' at {path}; "
                f"{self.missing_source_hint}"
            )
        return path


class FeatureStoreDataConfig(DataConfig):
    """Partitions read from a feature cache: ``<cache_directory>/<partition>.zarr``."""

    cache_directory: Path = Field(
        description="folder holding <partition>.zarr for the feature, e.g. "
        "${CACHE_DIRECTORY}/synthetic_timit/fbank-81-10ms"
    )
    feature: str = Field(
        "fbank-81-10ms", description="feature name (fbank-81-10ms | sigbank-41-2ms | raw)"
    )
    in_memory: bool | Literal["auto"] = Field(
        "auto",
        description="hold each partition's frames in memory (read once): true, false (stream "
        "through a chunk cache), or auto (true when the partition's frames take at most 1 GiB)",
    )

    source_name: ClassVar[str] = "feature cache"
    missing_source_hint: ClassVar[str] = (
        "compute it with scripts/compute_features.py or the data_prep pipeline (or fix "
        "data.cache_directory)"
    )

    def source(self, partition: str) -> Path:
        return Path(self.cache_directory) / f"{partition}.zarr"


class ModelConfig(JobSchema):
    """The base of every task's ``model`` section: the seed of the initialisation."""

    seed: int | None = Field(
        None, description="seed of the parameter initialisation (null: info.seed)"
    )


class TrainingConfig(JobSchema):
    """Training: optimiser, schedules, augmentation, checkpoints."""

    optimizer: Literal["adam", "adamw", "sgd", "rms", "rmsprop", "lamb"] = Field(
        "adam",
        description="optimiser: adam, adamw (decoupled weight decay), sgd, rms (RMSprop; "
        "rmsprop is the same), lamb (LAMB, from pytorch-optimizer)",
    )
    log10_learning_rate: float = Field(
        -3.0, description="the learning rate (a schedule's peak), as log10"
    )
    weight_decay: float = Field(
        0.0,
        ge=0.0,
        description="weight decay: added to the gradient (adam, sgd, rms) or decoupled from it "
        "(adamw, lamb)",
    )
    momentum: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="momentum of sgd and rms (null: sgd 0.9, rms 0; others ignore it)",
    )
    nesterov: bool = Field(
        False, description="Nesterov momentum (sgd, with a momentum above 0; others ignore it)"
    )
    adam_beta1: float = Field(
        0.9, ge=0.0, lt=1.0, description="adam, adamw, lamb: decay of the gradient's mean"
    )
    adam_beta2: float = Field(
        0.999, ge=0.0, lt=1.0, description="adam, adamw, lamb: decay of the squared gradient's mean"
    )
    optimizer_log10_epsilon: float | None = Field(
        None,
        description="log10 of the denominator's epsilon of adam, adamw, rms and lamb (null: the "
        "optimiser's own: 1e-8, lamb 1e-6)",
    )
    lr_schedule: Literal[
        "plateau", "onecycle", "cosine", "step", "multistep", "exponential", "warmup_hold_decay"
    ] = Field(
        "plateau",
        description="learning-rate schedule: plateau (reduce_lr_* on the dev metric, per epoch); "
        "step, multistep, exponential (lr_gamma per epoch); onecycle, cosine, warmup_hold_decay "
        "(per optimiser step, over num_epochs)",
    )
    lr_gamma: float = Field(
        0.1,
        gt=0.0,
        le=1.0,
        description="LR multiplier: every lr_step_epochs (step), at each of lr_milestones "
        "(multistep), after every epoch (exponential)",
    )
    lr_step_epochs: int = Field(10, ge=1, description="step: epochs between LR reductions")
    lr_milestones: list[int] = Field(
        [], description="multistep: the epochs after which the LR is multiplied by lr_gamma"
    )
    onecycle_pct_start: float = Field(
        0.3, gt=0.0, lt=1.0, description="onecycle: share of the steps spent rising to the peak"
    )
    onecycle_div_factor: float = Field(
        25.0, ge=1.0, description="onecycle: the starting LR is the peak divided by this"
    )
    onecycle_final_div_factor: float = Field(
        1e4, ge=1.0, description="onecycle: the last LR is the starting one divided by this"
    )
    warmup_steps: int = Field(
        0,
        ge=0,
        description="cosine, warmup_hold_decay: optimiser steps of linear warmup from min_lr",
    )
    hold_steps: int = Field(
        0, ge=0, description="warmup_hold_decay: optimiser steps at the peak after the warmup"
    )
    half_life_steps: int = Field(
        10000,
        ge=1,
        description="warmup_hold_decay: optimiser steps over which the LR halves after the hold",
    )
    min_lr: float = Field(
        0.0,
        ge=0.0,
        description="cosine, warmup_hold_decay: the warmup's start and the floor of the decay "
        "(scaled by a parameter group's lr_factor, as the peak is)",
    )
    max_grad_norm: float | None = Field(
        None,
        gt=0.0,
        description="clip the total gradient 2-norm of each optimiser step to this (null: off)",
    )
    ema_decay: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="keep an exponential moving average of the weights with this decay per "
        "optimiser step, e.g. 0.999; it is scored on dev and saved as model.pt (null: off)",
    )
    keep_best: int = Field(
        1, ge=1, description="pruning keeps this many best checkpoints by the dev metric"
    )
    save_frequency: int | None = Field(
        None, ge=1, description="pruning keeps every this many epochs' checkpoint (null: none)"
    )
    keep_epochs: list[int] = Field(
        [], description="pruning keeps the checkpoints of these epochs (milestones)"
    )
    global_batch_size: int | None = Field(
        None,
        ge=1,
        description="when set, must equal data.batch_size x gradient_accumulation x training "
        "processes (a check that the effective batch is what a recipe expects)",
    )
    num_epochs: int = Field(20, ge=1, description="maximum number of epochs")
    dropout_prob: float = Field(
        0.0, ge=0.0, lt=1.0, description="dropout after conv layers, between and after RNN layers"
    )
    reduce_lr_burnin: int = Field(0, ge=0, description="epochs before the plateau schedule acts")
    reduce_lr_patience: int = Field(
        1, ge=0, description="epochs without improvement of the dev metric before the LR is reduced"
    )
    reduce_lr_threshold: float = Field(
        0.0, ge=0.0, description="relative improvement of the dev metric that counts as improvement"
    )
    reduce_lr_factor: float = Field(
        0.5, gt=0.0, le=1.0, description="LR multiplier on a plateau (1: off)"
    )
    reduce_lr_cooldown: int = Field(0, ge=0, description="epochs to wait after a reduction")
    reduce_lr_log10_epsilon: float = Field(
        -8.0, description="log10 of the smallest LR change that is applied"
    )
    early_stopping_burnin: int = Field(0, ge=0, description="epochs before early stopping acts")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="stop after this many epochs without improvement (null: never)"
    )
    early_stopping_threshold: float = Field(
        0.0, ge=0.0, description="relative improvement of the dev metric that resets the patience"
    )
    max_time_warp: float = Field(
        0.0, ge=0.0, description="SpecAugment: largest time warp, in frames (0: off)"
    )
    max_freq_warp: float = Field(
        0.0, ge=0.0, description="SpecAugment: largest frequency warp, in bins (0: off)"
    )
    max_time_mask: int = Field(0, ge=0, description="SpecAugment: widest time mask, in frames")
    max_freq_mask: int = Field(0, ge=0, description="SpecAugment: widest frequency mask, in bins")
    max_time_mask_proportion: float = Field(
        1.0, ge=0.0, le=1.0, description="a time mask covers at most this share of the utterance"
    )
    num_time_mask: int = Field(0, ge=0, description="SpecAugment: time masks per utterance")
    num_time_mask_proportion: float = Field(
        0.0,
        ge=0.0,
        description="extra time masks per utterance frame (masks = num_time_mask + this * frames)",
    )
    num_freq_mask: int = Field(0, ge=0, description="SpecAugment: frequency masks per utterance")
    noise_eps: float = Field(
        0.0, ge=0.0, description="add Gaussian noise scaled by this times each utterance's std"
    )
    max_shift_proportion: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="drop up to this share of frames at the start (lengths updated)",
    )
    gradient_accumulation: int = Field(
        1,
        ge=1,
        description="batches whose gradients add up to one optimiser step (the loss is their "
        "mean; an epoch's last group may be shorter)",
    )
    mixed_precision: bool = Field(True, description="autocast to float16 on CUDA (ignored on CPU)")
    keep_last_and_best_only: bool = Field(
        True,
        description="prune the checkpoints to the newest, the keep_best best, every "
        "save_frequency-th and those of keep_epochs (false: keep every epoch's)",
    )
    device: Literal["cpu", "cuda"] = Field("cpu", description="where to train")
    num_threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads torch uses in training and evaluation (null: torch's default); "
        "1 is much faster on a machine whose cores are busy with other work",
    )
    seed: int | None = Field(
        None, description="seed of batching, dropout and augmentation (null: info.seed)"
    )

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> TrainingConfig:
        if self.nesterov and self.optimizer == "sgd" and self.momentum == 0.0:
            raise ValueError("nesterov needs a momentum above 0")
        milestones = self.lr_milestones
        if any(epoch < 1 for epoch in milestones) or milestones != sorted(set(milestones)):
            raise ValueError(f"lr_milestones must be increasing epochs from 1, got {milestones}")
        if any(epoch < 1 for epoch in self.keep_epochs):
            raise ValueError(f"keep_epochs must be epochs from 1, got {self.keep_epochs}")
        warms = self.lr_schedule in ("cosine", "warmup_hold_decay")
        if warms and self.min_lr > 10.0**self.log10_learning_rate:
            raise ValueError(
                f"min_lr {self.min_lr} is above the learning rate "
                f"{10.0**self.log10_learning_rate:g} (log10_learning_rate)"
            )
        return self


class EvaluationConfig(JobSchema):
    """How the trained model is scored (every task's ``evaluation``)."""

    partitions: list[Literal["dev", "test"]] = Field(
        ["dev", "test"], description="partitions scored (names refer to data.*_partition)"
    )
    batch_size: int = Field(16, ge=1, description="items per scoring batch")
    device: Literal["cpu", "cuda"] = Field("cpu", description="where to score")


class RunConfig(JobSchema):
    """One training run and its evaluation: the job file of train.py and evaluate.py.

    The base every task's run config subclasses; validating a mapping with it (or with a job
    schema derived from it) gives an instance of the class of the mapping's ``task``.
    """

    task: str = Field(
        DEFAULT_TASK,
        description=f"the recipe: its batches, model outputs, loss, dev metric and scoring "
        f"(known: {', '.join(sorted(TASKS))})",
    )
    info: InfoConfig = Field(description="name, seed and run folder")
    data: DataConfig = Field(description="where the partitions come from, and batching")
    model: ModelConfig = Field(default_factory=ModelConfig, description="the task's model")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="training")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig, description="scoring")

    #: Whether an experiment's cache step (scripts/compute_features.py from manifests, the
    #: sweep's ``populate_cache``) can make the task's data; else its data_prep pipeline does.
    feature_cache_step: ClassVar[bool] = False
    #: The task's headline score (set by each task's config, so the reports read it without
    #: torch): its results.json key ("per", "wer", "accuracy", "si_sdri"; ``dev_<key>`` in
    #: hist.csv), whether lower is better, whether it is a rate shown in % (else dB).
    score_key: ClassVar[str]
    lower_is_better: ClassVar[bool]
    score_is_percent: ClassVar[bool] = True

    @pydantic.model_validator(mode="wrap")
    @classmethod
    def _as_task_config(cls, value: Any, handler: Any) -> Any:
        if isinstance(value, Mapping):
            task = value.get("task", DEFAULT_TASK)
            problem = unknown_task(task) if isinstance(task, str) else None
            if problem is not None:  # the one error that matters: the other sections are moot
                raise pydantic_core.ValidationError.from_exception_data(
                    cls.__name__,
                    [{"type": "value_error", "loc": ("task",), "input": task,
                      "ctx": {"error": ValueError(problem)}}],
                )  # fmt: skip
            target = cls.schema_of(value)
            if target is not cls:
                return target.model_validate(value)
        return handler(value)

    @classmethod
    def schema_of(cls, raw: Mapping[str, Any]) -> type[RunConfig]:
        task = raw.get("task", DEFAULT_TASK)
        if not isinstance(task, str) or unknown_task(task) is not None:
            return cls
        return task_job_class(cls, run_config_class(task))

    @pydantic.field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        problem = unknown_task(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    def training_inputs(self) -> dict[str, Path]:
        """The files a run trains from besides its partitions, by config key
        (``{"data.tokenizer": path}``): the run lineage fingerprints them, and a changed one
        makes the trained run stale. None by default; a task's run config names its own."""
        return {}

    def evaluation_inputs(self) -> dict[str, Path]:
        """The files evaluation reads besides model.pt and the scored partitions, by config
        key: results.json records their fingerprints, and a changed one recomputes the
        results. None by default; a task's run config names its own."""
        return {}

    @property
    def model_seed(self) -> int:
        """The seed of the parameter initialisation."""
        return self.info.seed if self.model.seed is None else self.model.seed

    @property
    def training_seed(self) -> int:
        """The seed of batching, dropout and augmentation."""
        return self.info.seed if self.training.seed is None else self.training.seed


def run_config_class(task: str) -> type[RunConfig]:
    """The run config class of a registered task (its config module imported now)."""
    module, attribute = task_entry(task).config.split(":")
    return getattr(importlib.import_module(module), attribute)


@cache
def task_job_class(role: type[RunConfig], config: type[RunConfig]) -> type[RunConfig]:
    """A job schema that is both ``role`` (TrainingJob, EvaluationJob, RunConfig) and the
    task's ``config``: how one job class serves every task."""
    if issubclass(role, config):
        return role
    if issubclass(config, role):
        return config
    name = config.__name__.removesuffix("RunConfig") + role.__name__
    # The task's config first, so its sections win over the base sections the role inherits.
    return type(name, (config, role), {"__module__": role.__module__, "__doc__": role.__doc__})
