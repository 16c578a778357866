"""The separation task's run config: its data, model and evaluation sections.

Read through ``speechbed.training.config.RunConfig.model_validate`` when a run's ``task`` is
``separation`` (registered in speechbed.tasks), by scripts/train.py, scripts/evaluate.py and
the sweep; imports only pydantic and the generic config (no torch).
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


class SeparationDataConfig(FeatureStoreDataConfig):
    """Which separation cache feeds the run (scripts/compute_separation_cache.py) and how."""

    source_name: ClassVar[str] = "separation cache"
    missing_source_hint: ClassVar[str] = (
        "build it with scripts/compute_separation_cache.py or the data_prep pipeline (or fix "
        "data.cache_directory)"
    )

    feature: str = Field(
        "stft-32ms-8ms-8k",
        description="the separation cache's transform (its folder name; the stores record theirs)",
    )
    batch_size: int = Field(16, ge=1, description="mixtures per batch")
    segment_frames: int | None = Field(
        400,
        ge=1,
        description="training crops each longer mixture to this many frames at a random start "
        "(400 frames = 3.2 s at an 8 ms hop); null trains on whole mixtures",
    )


class SeparationModelConfig(ModelConfig):
    """The BLSTM separation network and its objective."""

    heads: Literal["clustering", "mask", "chimera"] = Field(
        "chimera",
        description="clustering: deep clustering embeddings (k-means masks); mask: mask "
        "inference trained with PIT; chimera: both on one trunk",
    )
    recurrent_size: int = Field(300, ge=1, description="BLSTM units per direction")
    recurrent_layers: int = Field(4, ge=1, description="stacked BLSTM layers")
    embedding_dimension: int = Field(
        20, ge=1, description="deep clustering embedding dimension per time-frequency bin"
    )
    mask_activation: Literal["sigmoid", "softmax"] = Field(
        "sigmoid", description="mask head nonlinearity (softmax: masks sum to one over sources)"
    )
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="dropout between BLSTM layers and before the heads"
    )
    chimera_weight: float = Field(
        0.975,
        ge=0.0,
        le=1.0,
        description="chimera objective: weight x deep clustering + (1 - weight) x mask inference",
    )
    silence_threshold_db: float | None = Field(
        40.0,
        gt=0.0,
        description="bins further than this below the mixture's loudest bin are left out of "
        "the deep clustering objective and the k-means (null: none left out)",
    )


class SeparationEvaluationConfig(EvaluationConfig):
    """How separated speech is scored (dev every epoch: SI-SDRi; evaluation: all scores)."""

    output: Literal["mask", "clustering"] = Field(
        "mask",
        description="which head of a chimera network separates (a one-head network uses its own)",
    )
    kmeans_iterations: int = Field(20, ge=1, description="k-means iterations on the embeddings")
    bss_eval: bool = Field(
        True, description="also compute BSS Eval SDR, SIR and SAR (fast_bss_eval) at evaluation"
    )
    examples: int = Field(
        3, ge=0, description="mixtures of each scored partition written as WAV to the run folder"
    )


class SeparationRunConfig(RunConfig):
    """A separation run: speaker-independent two-speaker separation scored by SI-SDRi."""

    score_key: ClassVar[str] = "si_sdri"
    lower_is_better: ClassVar[bool] = False
    score_is_percent: ClassVar[bool] = False

    data: SeparationDataConfig = Field(description="separation cache and batching")
    model: SeparationModelConfig = Field(
        default_factory=SeparationModelConfig, description="separation network"
    )
    evaluation: SeparationEvaluationConfig = Field(
        default_factory=SeparationEvaluationConfig, description="scoring"
    )
