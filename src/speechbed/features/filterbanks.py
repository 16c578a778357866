"""Filter banks of the features, designed in float64 numpy: mel triangles and mel-spaced Gabor filters.

Used by speechbed.features.computers, which applies them in torch. The conventions (mel formula,
vertex and edge placement, effective-support threshold, Gabor normalisation) are those of
pydrobert-speech's ``Fbank`` and ``GaborFilterBank``, so that the features match it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: A response below this is treated as zero when deciding a filter's support.
EFFECTIVE_SUPPORT_THRESHOLD = 5e-4
#: Gabor filters intersect at their 3 dB points: sqrt(3/10 ln 10) is the Gaussian's constant.
_HALF_POWER_CONSTANT = math.sqrt(0.3 * math.log(10.0))


def hertz_to_mel(hertz: np.ndarray | float) -> np.ndarray | float:
    """O'Shaughnessy's mel scale, 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log1p(np.asarray(hertz, dtype=np.float64) / 700.0)


def mel_to_hertz(mel: np.ndarray | float) -> np.ndarray | float:
    return 700.0 * np.expm1(np.asarray(mel, dtype=np.float64) / 1127.0)


def hann_window(width: int) -> np.ndarray:
    """The symmetric Hann window scaled so its samples sum to about 1 (divided by (width-1)/2)."""
    if width == 1:
        return np.ones(1)
    samples = np.arange(width, dtype=np.float64)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * samples / (width - 1))
    return window / (0.5 * (width - 1))


def mel_triangle_weights(
    num_filters: int, low_hz: float, high_hz: float, sampling_rate: float, dft_size: int
) -> np.ndarray:
    """(dft_size // 2 + 1, num_filters): square roots of triangles in mel over the DFT bins.

    Vertices are equally spaced in mel from ``low_hz`` to ``high_hz``; filter i rises from
    vertex i to i+1 and falls to i+2. The square root makes a magnitude sum act like a power
    sum over triangles.
    """
    low_mel, high_mel = hertz_to_mel(low_hz), hertz_to_mel(high_hz)
    step = (high_mel - low_mel) / (num_filters + 1)
    vertices_hz = mel_to_hertz(low_mel + step * np.arange(num_filters + 2))
    vertices_mel = hertz_to_mel(vertices_hz)
    num_bins = dft_size // 2 + 1
    bins_mel = hertz_to_mel(sampling_rate * np.arange(num_bins) / dft_size)
    weights = np.zeros((num_bins, num_filters))
    for index in range(num_filters):
        left, middle, right = vertices_mel[index : index + 3]
        first = math.ceil(dft_size * vertices_hz[index] / sampling_rate)
        last = min(int(dft_size * vertices_hz[index + 2] / sampling_rate), num_bins - 1)
        mel = bins_mel[first : last + 1]
        rising = (mel - left) / (middle - left)
        falling = (right - mel) / (right - middle)
        weights[first : last + 1, index] = np.sqrt(
            np.clip(np.where(mel <= middle, rising, falling), 0.0, None)
        )
    return weights


@dataclass(frozen=True)
class GaborBank:
    """Complex Gabor filters with centres spaced in mel, as FIR filters of a common length.

    ``taps[f, j]`` multiplies ``x[n - j]``; tap ``delay + 1`` holds each filter's peak, so the
    filtered signal at ``n + delay`` describes ``x`` around ``n - 1`` (pydrobert-speech's
    centring of short-integration filters, off by one sample, kept for parity).
    """

    centers_hz: np.ndarray
    stds: np.ndarray  # of the time-domain Gaussians, in samples
    taps: np.ndarray  # complex128 (num_filters, length)
    delay: int  # half the longest filter's support, in samples

    @property
    def length(self) -> int:
        return self.taps.shape[1]


def gabor_bank(
    num_filters: int,
    low_hz: float,
    high_hz: float,
    sampling_rate: float,
    frame_shift: int,
    pad_to_nearest_power_of_two: bool,
) -> GaborBank:
    """Design the bank for a short-integration computer with the given shift (in samples).

    Filter edges sit at half steps in mel between ``low_hz`` and ``high_hz``; each Gaussian
    is as wide as its 3 dB point at the lower edge. Its impulse response is
    ``exp(-t^2 / 2 std^2 + i w t) / (sqrt(2 pi) std)``, aliased over the DFT buffer that
    pydrobert-speech would use, then cut to the longest filter's effective support.
    """
    low_mel, high_mel = hertz_to_mel(low_hz), hertz_to_mel(high_hz)
    step = (high_mel - low_mel) / (num_filters + 1)
    edges_hz = mel_to_hertz(low_mel + step * (np.arange(num_filters + 1) + 0.5))
    centers_hz = (edges_hz[:-1] + edges_hz[1:]) / 2
    centers_angular = 2 * np.pi * centers_hz / sampling_rate
    stds = _HALF_POWER_CONSTANT / (2 * np.pi * (centers_hz - edges_hz[:-1]) / sampling_rate)
    log_threshold = -2 * math.log(EFFECTIVE_SUPPORT_THRESHOLD)
    time_constant = log_threshold - math.log(2) - math.log(math.pi)
    half_supports = np.ceil(stds * np.sqrt(time_constant - 2 * np.log(stds))).astype(np.int64)
    support_widths_hz = 2 * (math.sqrt(log_threshold) / stds) * sampling_rate / (2 * np.pi)
    length = int(2 * half_supports.max())
    delay = length // 2
    buffer_size = max(
        length + frame_shift - 1, math.ceil(2 * sampling_rate / support_widths_hz.min())
    )
    if pad_to_nearest_power_of_two:
        buffer_size = 1 << math.ceil(math.log2(buffer_size))
    # the response aliased over the buffer: lags t and t - buffer_size land on one sample
    lags = np.arange(buffer_size + 1)[None, :]
    log_magnitude = (
        -(lags**2) / (2 * stds[:, None] ** 2) - np.log(np.sqrt(2 * np.pi) * stds)[:, None]
    )
    values = np.exp(log_magnitude + 1j * centers_angular[:, None] * lags)
    aliased = np.zeros((num_filters, buffer_size), dtype=np.complex128)
    aliased += values[:, :buffer_size]
    aliased[:, 0] += values[:, buffer_size].conj()
    aliased[:, 1:] += values[:, buffer_size - 1 : 0 : -1].conj()
    taps = aliased[:, (np.arange(length) - delay - 1) % buffer_size]
    return GaborBank(centers_hz=centers_hz, stds=stds, taps=taps, delay=delay)
