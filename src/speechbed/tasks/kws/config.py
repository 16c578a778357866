"""The kws run config: clip feature stores, TC-ResNet or LSTM, audio augmentation, backends.

Registered with the task in ``speechbed.tasks``; imports only the schema layer (pydantic,
speechbed.jobs, speechbed.training.config), so the sweep and the search validate runs with it
without importing torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import pydantic
from pydantic import Field

from speechbed.jobs import JobSchema
from speechbed.training.config import (
    EvaluationConfig,
    FeatureStoreDataConfig,
    ModelConfig,
    RunConfig,
    TrainingConfig,
)


class KwsDataConfig(FeatureStoreDataConfig):
    """Clip feature stores (``<cache_directory>/<partition>.zarr``) and, for augmentation, audio."""

    feature: str = Field(
        "mfcc", description="the clip feature of cache_directory (mfcc | melspec | spectrogram)"
    )
    audio_directory: Path | None = Field(
        None,
        description="folder of the raw clip stores (<partition>.zarr and the training noise); "
        "needed when training augments audio (training.time_shift_ms or noise_probability), "
        "as training then computes its features from the augmented audio",
    )
    noise_partition: str = Field(
        "noise", description="store in audio_directory of the training background noise"
    )
    #: Whether training reads audio (set from the training section by the run config).
    _augment_audio: bool = pydantic.PrivateAttr(False)

    def feature_store(self, partition: str) -> Path:
        """``<cache_directory>/<partition>.zarr``, also for an augmenting run's train partition."""
        return super().source(partition)

    def source(self, partition: str) -> Path:
        # an augmenting run trains on audio: run lineage fingerprints that store
        if self._augment_audio and partition == self.train_partition and self.audio_directory:
            return Path(self.audio_directory) / f"{partition}.zarr"
        return super().source(partition)


class KwsModelConfig(ModelConfig):
    """The keyword classifier."""

    architecture: Literal["tc-resnet", "lstm"] = Field(
        "tc-resnet", description="tc-resnet (TC-ResNet8 at width 1) or lstm (recurrent baseline)"
    )
    width: float = Field(
        1.0, gt=0.0, le=8.0, description="tc-resnet: channel multiplier (TC-ResNet8-1.5: 1.5)"
    )
    dropout: float = Field(0.5, ge=0.0, lt=1.0, description="dropout before the classifier")
    hidden_size: int = Field(64, ge=1, description="lstm: hidden units per layer")
    num_layers: int = Field(2, ge=1, description="lstm: stacked layers")


class KwsTrainingConfig(TrainingConfig):
    """The trainer's settings plus label smoothing and audio augmentation."""

    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0, description="cross-entropy label smoothing (0: off)"
    )
    time_shift_ms: float = Field(
        0.0, ge=0.0, le=500.0, description="shift each training clip by up to +- this (0: off)"
    )
    noise_probability: float = Field(
        0.0, ge=0.0, le=1.0, description="share of training clips mixed with background noise"
    )
    min_snr_db: float = Field(0.0, ge=-30.0, le=60.0, description="lowest signal-to-noise ratio")
    max_snr_db: float = Field(20.0, ge=-30.0, le=60.0, description="highest signal-to-noise ratio")

    @property
    def augments_audio(self) -> bool:
        return self.time_shift_ms > 0 or self.noise_probability > 0

    @pydantic.model_validator(mode="after")
    def _snr_range(self) -> KwsTrainingConfig:
        if self.min_snr_db > self.max_snr_db:
            raise ValueError(f"min_snr_db {self.min_snr_db} > max_snr_db {self.max_snr_db}")
        return self


class KwsBackendConfig(JobSchema):
    """Deployment backends the evaluation also scores (speechbed.deployment)."""

    onnx: bool = Field(False, description="export to ONNX and score with ONNX Runtime (CPU)")
    int8: bool = Field(
        False, description="ONNX Runtime static int8 quantization (calibrated on train), scored"
    )
    calibration_clips: int = Field(
        256, ge=1, description="training clips the int8 calibration reads (evenly spaced)"
    )
    latency_clips: int = Field(
        100, ge=1, description="scripts/export.py: test clips timed one at a time per backend"
    )


class KwsEvaluationConfig(EvaluationConfig):
    """Scoring: accuracy, per-class precision and recall, confusion matrix; backends."""

    batch_size: int = Field(64, ge=1, description="clips per scoring batch")
    backend: KwsBackendConfig = Field(
        default_factory=KwsBackendConfig, description="backends scored besides torch"
    )


class KwsRunConfig(RunConfig):
    """A keyword spotter's run: clip features, cross-entropy training, accuracy scoring."""

    score_key: ClassVar[str] = "accuracy"
    lower_is_better: ClassVar[bool] = False

    feature_cache_step: ClassVar[bool] = False

    data: KwsDataConfig = Field(description="clip feature stores and batching")
    model: KwsModelConfig = Field(default_factory=KwsModelConfig, description="classifier")
    training: KwsTrainingConfig = Field(
        default_factory=KwsTrainingConfig, description="training and augmentation"
    )
    evaluation: KwsEvaluationConfig = Field(
        default_factory=KwsEvaluationConfig, description="scoring and backends"
    )

    @pydantic.model_validator(mode="after")
    def _audio_for_augmentation(self) -> KwsRunConfig:
        if self.training.augments_audio and self.data.audio_directory is None:
            raise ValueError(
                "training.time_shift_ms / noise_probability augment audio: set "
                "data.audio_directory to the raw clip stores (or turn augmentation off)"
            )
        self.data._augment_audio = self.training.augments_audio
        return self
