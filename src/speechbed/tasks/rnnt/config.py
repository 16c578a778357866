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
        "tokenizer.model, e.g. ${CACHE_DIRECTORY}/synthetic_librispeech/spm-32; copied into "
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
    train_shards: str | None = Field(
        None,
        description="train from WebDataset shards (scripts/write_shards.py) instead of the train "
        "partition's manifest: their folder, a path or a brace pattern "
        "(.../shards-{000000..000009}.tar) with shards.json beside them",
    )
    shuffle_buffer: int = Field(
        1000, ge=0, description="shards: utterances in the shuffle buffer (0: read in order)"
    )
    mel_statistics: Path | None = Field(
        None,
        description="the training set's log-mel statistics folder (scripts/dump_mel_stats.py): "
        "streaming normalisation at evaluation, and the deployment checkpoint",
    )

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
        if self.train_shards is not None and self.max_duration is not None:
            raise ValueError(
                "max_duration applies to manifests; with train_shards, write the shards with "
                "scripts/write_shards.py's max_duration instead"
            )
        return self

    def manifests(self, partition: str) -> list[Path]:
        """The manifest files of a partition (several for a '+'-joined name)."""
        names = partition.split(PARTITION_JOINER)
        return [Path(self.data_folder) / f"{name}.json" for name in names]

    def source(self, partition: str) -> Path:
        """A partition's manifest; the data folder for a '+'-joined partition; the shards'
        folder for the train partition when it is read from shards."""
        if partition == self.train_partition and self.train_shards is not None:
            shards = Path(self.train_shards)
            return shards if "{" not in shards.name and shards.suffix != ".tar" else shards.parent
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
    lstm_gate_activation: Literal["sigmoid", "hard_sigmoid"] = Field(
        "sigmoid",
        description="the LSTMs' gate activation; hard_sigmoid (min(1, max(0, x/6 + 1/2))) uses "
        "speechbed.models.hard_lstm's cells, usually fine-tuned into from a soft run",
    )
    lstm_cell_activation: Literal["tanh", "hard_tanh"] = Field(
        "tanh", description="the LSTMs' cell activation; hard_tanh clips to [-1, 1]"
    )


class RnntTrainingConfig(TrainingConfig):
    """The trainer's settings, and the learning-rate factor of the joint's output layer."""

    joint_net_lr_factor: float = Field(
        1.0,
        gt=0.0,
        description="learning-rate factor of the joint network's output layer (Myrtle.ai's "
        "joint_net_lr_factor)",
    )
    fine_tune: bool = Field(
        False,
        description="start from the weights of training.checkpoint (a run's model.pt: its EMA "
        "weights; or a checkpoints/*.pt) with this run's own, fresh, optimiser and schedule; "
        "the source run is only read",
    )
    checkpoint: Path | None = Field(
        None, description="fine_tune: the model.pt or checkpoint file to start from"
    )

    @pydantic.model_validator(mode="after")
    def _checkpoint_with_fine_tune(self) -> RnntTrainingConfig:
        if self.fine_tune and self.checkpoint is None:
            raise ValueError("fine_tune: true needs checkpoint: PATH (a run's model.pt)")
        if self.checkpoint is not None and not self.fine_tune:
            raise ValueError("checkpoint is read only with fine_tune: true")
        return self


class RnntEvaluationConfig(EvaluationConfig):
    """How the transducer is scored: greedy decoding, then WER."""

    max_symbols_per_step: int = Field(
        30, ge=1, description="greedy decoding: most tokens emitted on one encoder frame"
    )
    max_symbols_per_sample: int | None = Field(
        None,
        ge=1,
        description="greedy decoding: most tokens emitted for one utterance (null: no limit; "
        "raise it for long utterances)",
    )
    normalizations: list[Literal["utterance", "stream_carried", "stream_reset"]] = Field(
        ["utterance"],
        min_length=1,
        description="feature normalisations scored (WER each, as wer_<name>): utterance (its "
        "own statistics, as training), stream_carried / stream_reset (running statistics from "
        "data.mel_statistics, carried across utterances or reset for each); the first gives "
        "the dev metric and the headline WER",
    )
    alpha: float = Field(
        0.001, ge=0.0, le=1.0, description="streaming normalisation: weight of the newest frame"
    )
    dump_predictions: bool = Field(
        False,
        description="write <role>.preds.txt: one hypothesis per manifest entry, in its order "
        "(a manifest without transcripts is then accepted, and its WER not reported)",
    )


class RnntRunConfig(RunConfig):
    """A speech recogniser's run: manifests and a tokenizer, RNN-T training, WER scoring."""

    score_key: ClassVar[str] = "wer"
    lower_is_better: ClassVar[bool] = True

    data: RnntDataConfig = Field(description="manifests, tokenizer, batching and augmentation")
    model: RnntModelConfig = Field(
        default_factory=RnntModelConfig, description="front end and transducer"
    )
    training: RnntTrainingConfig = Field(default_factory=RnntTrainingConfig, description="training")
    evaluation: RnntEvaluationConfig = Field(
        default_factory=RnntEvaluationConfig, description="greedy decoding and WER"
    )

    def training_inputs(self) -> dict[str, Path]:
        """The tokenizer, the fine-tune checkpoint, and the mel statistics when the dev metric
        (``evaluation.normalizations[0]``, which selects the best epoch and drives the plateau
        schedule) normalises with them."""
        inputs = {"data.tokenizer": Path(self.data.tokenizer)}
        if self.training.fine_tune and self.training.checkpoint is not None:
            inputs["training.checkpoint"] = Path(self.training.checkpoint)
        statistics = self.data.mel_statistics
        if statistics is not None and self.evaluation.normalizations[0] != "utterance":
            inputs["data.mel_statistics"] = Path(statistics)
        return inputs

    def evaluation_inputs(self) -> dict[str, Path]:
        """The mel statistics (streaming normalisation, the deployment checkpoint), when set;
        evaluation decodes with the tokenizer kept in model.pt, not ``data.tokenizer``."""
        statistics = self.data.mel_statistics
        return {} if statistics is None else {"data.mel_statistics": Path(statistics)}
