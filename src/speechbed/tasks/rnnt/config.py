"""The rnnt run config: JSON manifests and a sentencepiece tokenizer, the transducer, greedy WER.

Registered with the task in ``speechbed.tasks``; imports only the schema layer (the sweep and
the search validate runs with it without importing torch). The defaults are Myrtle.ai's
``testing`` configuration (features, SpecAugment, model sizes); experiments/rnnt_demo.yml
shrinks them for a CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import pydantic
from pydantic import Field

from speechbed.training.config import (
    DataConfig,
    EvaluationConfig,
    ModelConfig,
    RunConfig,
    TrainingConfig,
)

#: Joins several manifests into one partition: ``train-clean-100+train-clean-360``.
PARTITION_JOINER = "+"


class RnntDataConfig(DataConfig):
    """Manifests (``<data_folder>/<partition>.json``), the tokenizer, and training augmentation."""

    data_folder: Path = Field(
        description="folder holding <partition>.json manifests (the Myrtle/MLPerf JSON format) "
        "and the audio they name, e.g. ${CACHE_DIRECTORY}/synthetic_librispeech/wav"
    )
    tokenizer: Path = Field(
        description="sentencepiece tokenizer folder (scripts/train_tokenizer.py) or its "
        "tokenizer.model, e.g. ${CACHE_DIRECTORY}/synthetic_librispeech/spm-128; copied into "
        "the run folder"
    )
    train_partition: str = Field(
        "train-clean-100",
        description="manifest trained on; several joined by '+' (train-clean-100+train-clean-360)",
    )
    dev_partition: str = Field("dev-clean", description="manifest of the per-epoch dev WER")
    test_partition: str = Field("test-clean", description="manifest scored once, at evaluation")
    batch_size: int = Field(16, ge=1, description="utterances per batch")
    normalize_transcripts: bool = Field(
        True,
        description="normalise transcripts to the 28-character set as they are read (for "
        "manifests kept raw; a normalised transcript stays as it is)",
    )
    max_duration: float | None = Field(
        None, gt=0.0, description="train only on utterances of at most this many seconds"
    )
    in_memory: bool | Literal["auto"] = Field(
        "auto",
        description="hold a partition's audio in memory after the first read: true, false, or "
        "auto (when its samples take at most 1 GiB as float32)",
    )
    freq_masks: int = Field(2, ge=0, description="SpecAugment: frequency masks per utterance")
    max_freq: int = Field(20, ge=0, description="SpecAugment: widest frequency mask, in mel bins")
    time_masks: int = Field(10, ge=0, description="SpecAugment: time masks per utterance")
    max_time: float = Field(
        0.03,
        ge=0.0,
        description="SpecAugment: widest time mask; below 1 a share of the utterance's frames, "
        "else a number of frames",
    )
    speed_min_rate: float = Field(
        1.0, gt=0.0, description="speed perturbation: slowest rate (1 with speed_max_rate 1: off)"
    )
    speed_max_rate: float = Field(1.0, gt=0.0, description="speed perturbation: fastest rate")

    source_name: ClassVar[str] = "manifest"
    missing_source_hint: ClassVar[str] = (
        "make it with the corpus's data_prep pipeline (e.g. data_prep/synthetic_librispeech/"
        "pipeline.yml), or fix data.data_folder"
    )

    @pydantic.model_validator(mode="after")
    def _rates_in_order(self) -> RnntDataConfig:
        if self.speed_min_rate > self.speed_max_rate:
            raise ValueError(
                f"speed_min_rate {self.speed_min_rate} is above speed_max_rate "
                f"{self.speed_max_rate}"
            )
        return self

    def manifests(self, partition: str) -> list[Path]:
        """The manifest files of a partition (several for a '+'-joined name)."""
        names = partition.split(PARTITION_JOINER)
        return [Path(self.data_folder) / f"{name}.json" for name in names]

    def source(self, partition: str) -> Path:
        """A partition's manifest; the data folder for a '+'-joined partition."""
        manifests = self.manifests(partition)
        return manifests[0] if len(manifests) == 1 else Path(self.data_folder)


class RnntModelConfig(ModelConfig):
    """The front end (log-mel, stacking) and the transducer's sizes (Myrtle.ai's ``testing``)."""

    num_mels: int = Field(80, ge=1, description="mel bands of the log-mel features")
    fft_size: int = Field(512, ge=16, description="FFT points per window")
    window_seconds: float = Field(0.02, gt=0.0, description="analysis window (Hann), seconds")
    hop_seconds: float = Field(0.01, gt=0.0, description="frame shift, seconds")
    preemphasis: float = Field(0.97, ge=0.0, lt=1.0, description="pre-emphasis coefficient")
    dither: float = Field(
        1e-5, ge=0.0, description="std of the Gaussian noise added to training audio"
    )
    frame_stacking: int = Field(3, ge=1, description="feature frames joined into one input")
    frame_subsampling: int = Field(3, ge=1, description="keep every this many stacked frames")
    encoder_hidden: int = Field(1024, ge=1, description="encoder LSTM units")
    encoder_pre_layers: int = Field(2, ge=1, description="encoder LSTM layers before stacking")
    encoder_post_layers: int = Field(3, ge=1, description="encoder LSTM layers after stacking")
    encoder_stack_factor: int = Field(
        2, ge=1, description="encoder frames joined by the time-stacking layer"
    )
    encoder_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout in the encoder")
    prediction_hidden: int = Field(512, ge=1, description="prediction network LSTM units")
    prediction_layers: int = Field(2, ge=1, description="prediction network LSTM layers")
    prediction_dropout: float = Field(
        0.3, ge=0.0, lt=1.0, description="dropout in the prediction network"
    )
    joint_hidden: int = Field(512, ge=1, description="joint network hidden units")
    joint_dropout: float = Field(0.3, ge=0.0, lt=1.0, description="dropout in the joint network")
    forget_gate_bias: float = Field(1.0, description="initial forget-gate bias of every LSTM")
    weights_init_scale: float = Field(
        0.5, gt=0.0, description="LSTM weights are scaled by this at initialisation"
    )


class RnntTrainingConfig(TrainingConfig):
    """The trainer's settings, and the learning-rate factor of the joint's output layer."""

    joint_net_lr_factor: float = Field(
        1.0,
        gt=0.0,
        description="learning-rate factor of the joint network's output layer (Myrtle.ai's "
        "joint_net_lr_factor)",
    )


class RnntEvaluationConfig(EvaluationConfig):
    """How the transducer is scored: greedy decoding, then WER."""

    max_symbols_per_step: int = Field(
        30, ge=1, description="greedy decoding: most tokens emitted on one encoder frame"
    )


class RnntRunConfig(RunConfig):
    """A speech recogniser's run: manifests and a tokenizer, RNN-T training, WER scoring."""

    data: RnntDataConfig = Field(description="manifests, tokenizer, batching and augmentation")
    model: RnntModelConfig = Field(
        default_factory=RnntModelConfig, description="front end and transducer"
    )
    training: RnntTrainingConfig = Field(default_factory=RnntTrainingConfig, description="training")
    evaluation: RnntEvaluationConfig = Field(
        default_factory=RnntEvaluationConfig, description="greedy decoding and WER"
    )
