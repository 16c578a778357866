"""Settings of the keyword-spotting clip features (mfcc, melspec, spectrogram, raw) and their names.

Read by the KWS feature step (speechbed.features.clip_build, scripts/compute_clip_features.py),
the computers (speechbed.features.clip_computers) and the kws task. Free of torch.

Clips are 1 s at 16 kHz, on the unit scale (int16 / 32768). The spectral kinds share one
STFT: a periodic Hann window of ``window_ms`` centred in ``fft_size`` points, ``hop_ms``
between frames, frames centred (the clip zero-padded by half a window at both ends), power
spectrum. ``melspec`` weights it with Slaney-style mel triangles (area-normalised), all
three take ``10 log10(max(x, 1e-10))`` and, with ``top_db``, floor each clip at its peak
minus ``top_db``; ``mfcc`` is the orthonormal DCT-II of the log mel spectrum (librosa's
defaults, and HANNAH's MFCC: 40 coefficients of 40 bands, 30 ms, 10 ms, 20-4000 Hz).
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

import pydantic
from pydantic import Field

from speechbed.code_versions import CODE_VERSIONS
from speechbed.errors import UserInputError
from speechbed.jobs import problems_in_one_line

#: Bump when the clip feature code changes what it writes (stores of older code are redone).
CLIP_FEATURE_VERSION = CODE_VERSIONS["clip_features"]


class ClipFeatureSettings(pydantic.BaseModel):
    """One feature of 1 s clips."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    kind: Literal["mfcc", "melspec", "spectrogram", "raw"] = Field(description="what is computed")
    sampling_rate: int = Field(16000, gt=0)
    clip_samples: int = Field(16000, gt=0, description="samples per clip (1 s)")
    window_ms: float = Field(30.0, gt=0, description="analysis window")
    hop_ms: float = Field(10.0, gt=0, description="between frame centres")
    fft_size: int = Field(512, ge=2, description="DFT points (>= the window)")
    num_mels: int = Field(40, ge=1, description="mel bands (mfcc, melspec)")
    num_coefficients: int = Field(40, ge=1, description="cepstral coefficients kept (mfcc)")
    low_hz: float = Field(20.0, ge=0, description="lowest mel band edge")
    high_hz: float = Field(4000.0, gt=0, description="highest mel band edge (<= Nyquist)")
    top_db: float | None = Field(
        80.0, gt=0, description="dB below each clip's peak kept (null: all)"
    )

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> ClipFeatureSettings:
        if not self.low_hz < self.high_hz <= self.sampling_rate / 2:
            raise ValueError(
                f"need low_hz < high_hz <= sampling_rate / 2, got {self.low_hz}, {self.high_hz}"
            )
        if self.window_samples > self.fft_size:
            raise ValueError(
                f"window_ms {self.window_ms} is {self.window_samples} samples, over fft_size {self.fft_size}"
            )
        if self.kind == "mfcc" and self.num_coefficients > self.num_mels:
            raise ValueError(f"num_coefficients {self.num_coefficients} > num_mels {self.num_mels}")
        return self

    @property
    def window_samples(self) -> int:
        return round(self.window_ms * self.sampling_rate / 1000)

    @property
    def hop_samples(self) -> int:
        return round(self.hop_ms * self.sampling_rate / 1000)

    @property
    def num_features(self) -> int:
        """Values per frame."""
        return {
            "mfcc": self.num_coefficients,
            "melspec": self.num_mels,
            "spectrogram": self.fft_size // 2 + 1,
            "raw": 1,
        }[self.kind]

    @property
    def num_frames(self) -> int:
        """Frames per clip (raw: one per sample)."""
        return (
            self.clip_samples if self.kind == "raw" else 1 + self.clip_samples // self.hop_samples
        )


#: The features a KWS run config's ``data.feature`` names.
NAMED_CLIP_FEATURES: dict[str, ClipFeatureSettings] = {
    kind: ClipFeatureSettings(kind=kind) for kind in ("mfcc", "melspec", "spectrogram", "raw")
}


def resolve_clip_feature(feature: str | dict | ClipFeatureSettings) -> ClipFeatureSettings:
    """Settings from a name, a mapping of explicit settings (with ``kind``), or settings."""
    if isinstance(feature, ClipFeatureSettings):
        return feature
    if isinstance(feature, str):
        if feature not in NAMED_CLIP_FEATURES:
            raise UserInputError(
                f"unknown clip feature {feature!r}; known: {', '.join(NAMED_CLIP_FEATURES)} "
                "(or explicit settings with a 'kind' key)"
            )
        return NAMED_CLIP_FEATURES[feature]
    try:
        return ClipFeatureSettings.model_validate(feature)
    except pydantic.ValidationError as error:
        raise UserInputError(
            f"bad clip feature settings {feature!r}: {problems_in_one_line(error, whole='feature')}"
        ) from None


def clip_feature_name(settings: ClipFeatureSettings) -> str | None:
    return next((name for name, named in NAMED_CLIP_FEATURES.items() if named == settings), None)


def clip_settings_hash(settings: ClipFeatureSettings) -> str:
    """SHA-256 of the settings' canonical JSON and the clip feature code version."""
    record = {"settings": settings.model_dump(), "code_version": CLIP_FEATURE_VERSION}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
