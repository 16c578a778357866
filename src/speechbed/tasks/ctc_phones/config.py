"""The ctc_phones run config: a feature cache, the CNN + RNN acoustic model, CTC decoding.

Registered with the task in ``speechbed.tasks``; imports only the schema layer (the sweep and
the search validate runs with it without importing torch).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from speechbed.training.config import (
    EvaluationConfig,
    FeatureStoreDataConfig,
    ModelConfig,
    RunConfig,
)


class AcousticModelConfig(ModelConfig):
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


class CtcEvaluationConfig(EvaluationConfig):
    """How the acoustic model is scored: CTC decoding, then PER on 39 phones."""

    beam_width: int = Field(
        8, ge=0, description="CTC prefix beam width (0: greedy best-path decoding)"
    )


class CtcPhonesRunConfig(RunConfig):
    """A phone recogniser's run: features from a cache, CTC training, PER scoring."""

    score_key: ClassVar[str] = "per"
    lower_is_better: ClassVar[bool] = True

    feature_cache_step: ClassVar[bool] = True

    data: FeatureStoreDataConfig = Field(description="feature cache and batching")
    model: AcousticModelConfig = Field(
        default_factory=AcousticModelConfig, description="acoustic model"
    )
    evaluation: CtcEvaluationConfig = Field(
        default_factory=CtcEvaluationConfig, description="decoding and scoring"
    )
