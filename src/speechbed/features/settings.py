"""Feature settings: the named features (fbank-81-10ms, sigbank-41-2ms, raw) and explicit ones.

Used by scripts/compute_features.py (job key ``feature``), the feature computers and the cache,
whose attributes carry the settings and their hash.

Every setting but ``scale`` mirrors a keyword of pydrobert-speech's ``FrameComputer`` so that
the features can be checked against it (``to_pydrobert``). Frames are always centered and
windowed with a unit-normalized Hann window, as in the two named features.

Samples enter on the scale ``scale`` names: ``int16`` (their int16 values as floats, as the
original study computed its features with pydrobert-speech on the SPHERE files; the default of
fbank and sigbank) or ``unit`` (int16 / 32768, in [-1, 1); the default of raw). A filter bank
is linear in its input, so ``unit`` features are the ``int16`` ones / 32768 (/ 32768**2 with
``use_power``) before any log; the log floor and the models' log compression see the difference.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field

from speechbed.code_versions import CODE_VERSIONS
from speechbed.errors import UserInputError
from speechbed.jobs import problems_in_one_line

#: What the int16 samples are multiplied by before computing, by ``scale``.
SCALE_FACTORS: dict[str, float] = {"int16": 1.0, "unit": 1.0 / 32768.0}
SampleScale = Literal["int16", "unit"]
_SCALE_DOC = "samples as their int16 values ('int16') or divided by 32768 ('unit', in [-1, 1))"

#: Bumped (in speechbed.code_versions) whenever the feature code changes what it writes, so old
#: caches are recomputed. 2: stores carry an integrity record and CRC-32C per chunk.
#: 3: fbank and sigbank on the int16 scale (``scale``), as the original study.
FEATURE_CODE_VERSION = CODE_VERSIONS["features"]


def _check_band(low_hz: float, high_hz: float, sampling_rate: int) -> None:
    if not low_hz < high_hz <= sampling_rate / 2:
        raise ValueError(
            f"need low_hz < high_hz <= sampling_rate / 2, got {low_hz}, {high_hz}, {sampling_rate}"
        )


class _Settings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    scale: SampleScale

    @property
    def scale_factor(self) -> float:
        """What the int16 samples are multiplied by before computing."""
        return SCALE_FACTORS[self.scale]


class _BankSettings(_Settings):
    """What the filter-bank features share: the band, the rate and the coefficient options."""

    num_filters: int = Field(ge=1, description="filters in the bank")
    scale: SampleScale = Field("int16", description=_SCALE_DOC)
    low_hz: float = Field(20.0, ge=0, description="lowest filter edge")
    high_hz: float = Field(8000.0, gt=0, description="highest filter edge (<= Nyquist)")
    sampling_rate: int = Field(16000, gt=0)
    include_energy: bool = Field(True, description="coefficient 0 is the signal's energy")
    use_log: bool = Field(False, description="log of each coefficient (floored at 1e-5)")
    use_power: bool = Field(False, description="power instead of magnitude")
    pad_to_nearest_power_of_two: bool = Field(True, description="DFT sizes are powers of two")

    @pydantic.model_validator(mode="after")
    def _band_inside_nyquist(self) -> _BankSettings:
        _check_band(self.low_hz, self.high_hz, self.sampling_rate)
        return self

    @property
    def num_features(self) -> int:
        return self.num_filters + int(self.include_energy)

    def _pydrobert_computer(self, name: str, bank: dict[str, Any]) -> dict[str, Any]:
        # pydrobert-speech has no scale: its computer gets the samples scaled by scale_factor
        return {
            "name": name,
            "bank": {
                **bank,
                "num_filts": self.num_filters,
                "low_hz": self.low_hz,
                "high_hz": self.high_hz,
                "sampling_rate": self.sampling_rate,
            },
            "frame_style": "centered",
            "include_energy": self.include_energy,
            "pad_to_nearest_power_of_two": self.pad_to_nearest_power_of_two,
            "window_function": "hanning",
            "use_log": self.use_log,
            "use_power": self.use_power,
        }


class FbankSettings(_BankSettings):
    """STFT magnitudes weighted by square-rooted mel triangles, plus the frame's RMS energy."""

    kind: Literal["fbank"] = "fbank"
    num_filters: int = Field(80, ge=1, description="mel triangles")
    frame_length_ms: float = Field(25.0, gt=0)
    frame_shift_ms: float = Field(10.0, gt=0)

    def to_pydrobert(self) -> dict[str, Any]:
        """The same computer as pydrobert-speech JSON (for parity checks)."""
        computer = self._pydrobert_computer("stft", {"name": "fbank", "analytic": False})
        return {
            **computer,
            "frame_length_ms": self.frame_length_ms,
            "frame_shift_ms": self.frame_shift_ms,
        }


class SigbankSettings(_BankSettings):
    """Short-integration filter bank: mel-spaced complex Gabor filters, |output| integrated per shift."""

    kind: Literal["sigbank"] = "sigbank"
    num_filters: int = Field(40, ge=1, description="Gabor filters, centres mel-spaced")
    frame_shift_ms: float = Field(2.0, gt=0, description="shift, and half the integration window")

    def to_pydrobert(self) -> dict[str, Any]:
        """The same computer as pydrobert-speech JSON (for parity checks)."""
        computer = self._pydrobert_computer("si", {"name": "gabor", "scaling_function": "mel"})
        return {**computer, "frame_shift_ms": self.frame_shift_ms}


class RawSettings(_Settings):
    """The waveform itself: one column of samples, by default scaled to [-1, 1) (int16 / 32768)."""

    kind: Literal["raw"] = "raw"
    scale: SampleScale = Field("unit", description=_SCALE_DOC)
    sampling_rate: int = Field(16000, gt=0)

    @property
    def num_features(self) -> int:
        return 1


FeatureSettings = Annotated[
    FbankSettings | SigbankSettings | RawSettings, Field(discriminator="kind")
]

#: The features users and notebooks refer to by name.
NAMED_FEATURES: dict[str, FbankSettings | SigbankSettings | RawSettings] = {
    "fbank-81-10ms": FbankSettings(),
    "sigbank-41-2ms": SigbankSettings(),
    "raw": RawSettings(),
}

_SETTINGS_ADAPTER = pydantic.TypeAdapter(FeatureSettings)


def resolve_feature(
    feature: str | dict[str, Any] | FbankSettings | SigbankSettings | RawSettings,
) -> FbankSettings | SigbankSettings | RawSettings:
    """Settings from a feature name, a mapping of explicit settings, or settings themselves."""
    if isinstance(feature, FbankSettings | SigbankSettings | RawSettings):
        return feature
    if isinstance(feature, str):
        if feature not in NAMED_FEATURES:
            raise UserInputError(
                f"unknown feature '{feature}'; known names: {', '.join(NAMED_FEATURES)} "
                "(or give explicit settings with a 'kind' key: fbank | sigbank | raw)"
            )
        return NAMED_FEATURES[feature]
    try:
        return _SETTINGS_ADAPTER.validate_python(feature)
    except pydantic.ValidationError as error:
        problems = problems_in_one_line(error, whole="feature")
        raise UserInputError(f"bad feature settings {feature!r}: {problems}") from None


def feature_name(settings: FbankSettings | SigbankSettings | RawSettings) -> str | None:
    """The name of these settings when they are a named feature, else None."""
    for name, named in NAMED_FEATURES.items():
        if named == settings:
            return name
    return None


def settings_hash(settings: FbankSettings | SigbankSettings | RawSettings) -> str:
    """SHA-256 of the settings' canonical JSON and the feature code version."""
    record = {"settings": settings.model_dump(), "code_version": FEATURE_CODE_VERSION}
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
