"""The run config: one YAML file describing a training run and its evaluation.

Read by ``scripts/train.py`` and ``scripts/evaluate.py`` (it is their job file) and by the sweep,
which validates every expanded run against ``RunConfig``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydantic
from pydantic import Field

from speechbed.jobs import JobSchema
from speechbed.tasks import DEFAULT_TASK, TASKS, unknown_task


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
    """Which feature cache feeds the run and how it is batched."""

    cache_directory: Path = Field(
        description="folder holding <partition>.zarr for the feature, e.g. "
        "${CACHE_DIRECTORY}/synthetic_timit/fbank-81-10ms"
    )
    feature: str = Field(
        "fbank-81-10ms", description="feature name (fbank-81-10ms | sigbank-41-2ms | raw)"
    )
    train_partition: str = Field("train", description="partition trained on")
    dev_partition: str = Field(
        "dev", description="partition for model selection and the LR schedule"
    )
    test_partition: str = Field("test", description="partition scored once, at evaluation")
    batch_size: int = Field(32, ge=1, description="utterances per batch")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes (0: in-process)")
    in_memory: bool | Literal["auto"] = Field(
        "auto",
        description="hold each partition's frames in memory (read once): true, false (stream "
        "through a chunk cache), or auto (true when the partition's frames take at most 1 GiB)",
    )


class ModelConfig(JobSchema):
    """The CNN + RNN acoustic model (names as in the original study)."""

    use_log_compression: bool = Field(
        False, description="apply a learnable log(|x| + e^eps) to the input windows"
    )
    use_lift: bool = Field(
        False, description="apply a learnable lift x[..., j] * (j + 1)^tau along window time"
    )
    window_size: int = Field(10, ge=1, description="frames per window")
    window_stride: int = Field(
        3, ge=1, description="frames between window starts (one output each)"
    )
    convolutional_layers: int = Field(2, ge=0, description="number of 2-D correlation layers")
    convolutional_initial_channels: int = Field(
        8, ge=1, description="output channels of the first convolutional layer"
    )
    convolutional_kernel_time: int = Field(3, ge=1, description="kernel size along time")
    convolutional_kernel_freq: int = Field(3, ge=1, description="kernel size along frequency")
    convolutional_mellin: bool = Field(
        False, description="Mellin correlation along time (MCorrLCorr) instead of linear (Conv2d)"
    )
    convolutional_time_factor: int = Field(
        1,
        ge=1,
        description="time shrinks by this factor every convolutional_factor_schedule layers",
    )
    convolutional_freq_factor: int = Field(
        2,
        ge=1,
        description="frequency shrinks by this factor every convolutional_factor_schedule layers",
    )
    convolutional_channel_factor: int = Field(
        2, ge=1, description="channels multiply by this every convolutional_factor_schedule layers"
    )
    convolutional_factor_schedule: int = Field(
        1, ge=1, description="apply the factors after every this many layers"
    )
    convolutional_nonlinearity: Literal["relu", "sigmoid", "tanh"] = Field(
        "relu", description="nonlinearity after each convolutional layer"
    )
    convolutional_dropout_2d: bool = Field(
        True, description="drop whole channels (Dropout2d) rather than single values"
    )
    recurrent_type: Literal["LSTM", "GRU", "RNN"] = Field("LSTM", description="recurrent cell")
    recurrent_size: int = Field(128, ge=1, description="hidden units per direction")
    recurrent_layers: int = Field(2, ge=0, description="stacked recurrent layers (0: none)")
    recurrent_bidirectional: bool = Field(True, description="bidirectional recurrent layers")
    seed: int | None = Field(
        None, description="seed of the parameter initialisation (null: info.seed)"
    )


class TrainingConfig(JobSchema):
    """Training: optimiser, schedules, augmentation, checkpoints."""

    optimizer: Literal["adam", "sgd", "rms"] = Field("adam", description="optimiser")
    log10_learning_rate: float = Field(-3.0, description="initial learning rate, as log10")
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
        True, description="keep only the last and the best epoch's checkpoints"
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


class EvaluationConfig(JobSchema):
    """How the trained model is scored."""

    beam_width: int = Field(
        8, ge=0, description="CTC prefix beam width (0: greedy best-path decoding)"
    )
    partitions: list[Literal["dev", "test"]] = Field(
        ["dev", "test"], description="partitions scored (names refer to data.*_partition)"
    )
    batch_size: int = Field(16, ge=1, description="utterances per decoding batch")
    device: Literal["cpu", "cuda"] = Field("cpu", description="where to decode")


class RunConfig(JobSchema):
    """One training run and its evaluation: the job file of train.py and evaluate.py."""

    task: str = Field(
        DEFAULT_TASK,
        description=f"the recipe: its batches, model outputs, loss, dev metric and scoring "
        f"(known: {', '.join(sorted(TASKS))})",
    )
    info: InfoConfig = Field(description="name, seed and run folder")
    data: DataConfig = Field(description="feature cache and batching")
    model: ModelConfig = Field(default_factory=ModelConfig, description="acoustic model")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="training")
    evaluation: EvaluationConfig = Field(
        default_factory=EvaluationConfig, description="decoding and scoring"
    )

    @pydantic.field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        problem = unknown_task(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @property
    def model_seed(self) -> int:
        """The seed of the parameter initialisation."""
        return self.info.seed if self.model.seed is None else self.model.seed

    @property
    def training_seed(self) -> int:
        """The seed of batching, dropout and augmentation."""
        return self.info.seed if self.training.seed is None else self.training.seed
