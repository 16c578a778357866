"""Batched torch computers of the keyword-spotting clip features (CPU or GPU).

Called by the KWS feature step (speechbed.features.clip_build) for the cache, and by the kws
task, which computes features of augmented training audio on the fly with the same code.
Settings and formulas: speechbed.features.clip_settings.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from speechbed.features.clip_settings import ClipFeatureSettings

#: The log floor (as librosa's power_to_db ``amin``).
POWER_FLOOR = 1e-10


def slaney_hz_to_mel(hertz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    hertz = np.asarray(hertz, dtype=np.float64)
    linear = hertz * 3.0 / 200.0
    step = math.log(6.4) / 27.0
    logarithmic = 15.0 + np.log(np.maximum(hertz, 1e-9) / 1000.0) / step
    return np.where(hertz >= 1000.0, logarithmic, linear)


def slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    step = math.log(6.4) / 27.0
    return np.where(mel >= 15.0, 1000.0 * np.exp(step * (mel - 15.0)), mel * 200.0 / 3.0)


def slaney_mel_weights(
    num_mels: int, fft_size: int, sampling_rate: int, low_hz: float, high_hz: float
) -> np.ndarray:
    """(num_mels, fft_size // 2 + 1) triangles, equally spaced in mel, each of unit area."""
    bins = np.linspace(0.0, sampling_rate / 2, fft_size // 2 + 1)
    edges = slaney_mel_to_hz(
        np.linspace(slaney_hz_to_mel(low_hz), slaney_hz_to_mel(high_hz), num_mels + 2)
    )
    weights = np.zeros((num_mels, len(bins)))
    for band in range(num_mels):
        lower, centre, upper = edges[band : band + 3]
        rising = (bins - lower) / (centre - lower)
        falling = (upper - bins) / (upper - centre)
        weights[band] = np.maximum(0.0, np.minimum(rising, falling)) * 2.0 / (upper - lower)
    return weights


def dct_matrix(num_coefficients: int, num_bands: int) -> np.ndarray:
    """Orthonormal DCT-II: (num_coefficients, num_bands)."""
    k = np.arange(num_coefficients)[:, None]
    n = np.arange(num_bands)[None, :]
    matrix = np.cos(np.pi / num_bands * (n + 0.5) * k) * math.sqrt(2.0 / num_bands)
    matrix[0] /= math.sqrt(2.0)
    return matrix


class ClipFeatureComputer:
    """Features of a batch of clips: ``(batch, clip_samples)`` unit-scale -> ``(batch, frames, dims)``."""

    def __init__(self, settings: ClipFeatureSettings, device: str | torch.device = "cpu") -> None:
        self.settings = settings
        self.device = torch.device(device)
        s = settings
        window = torch.hann_window(s.window_samples, periodic=True, dtype=torch.float64)
        self.window = window.to(torch.float32).to(self.device)
        self.mel = (
            torch.from_numpy(
                slaney_mel_weights(s.num_mels, s.fft_size, s.sampling_rate, s.low_hz, s.high_hz)
            )
            .to(torch.float32)
            .to(self.device)
        )
        self.dct = (
            torch.from_numpy(dct_matrix(s.num_coefficients, s.num_mels))
            .to(torch.float32)
            .to(self.device)
        )

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        s = self.settings
        if clips.ndim != 2 or clips.shape[1] != s.clip_samples:
            raise ValueError(f"clips must be (batch, {s.clip_samples}), got {tuple(clips.shape)}")
        clips = clips.to(self.device, torch.float32)
        if s.kind == "raw":
            return clips.unsqueeze(-1)
        spectrum = torch.stft(
            clips,
            s.fft_size,
            hop_length=s.hop_samples,
            win_length=s.window_samples,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        power = spectrum.real**2 + spectrum.imag**2  # (batch, bins, frames)
        if s.kind != "spectrogram":
            power = torch.matmul(self.mel, power)
        decibels = 10.0 * torch.log10(torch.clamp(power, min=POWER_FLOOR))
        if s.top_db is not None:
            peak = decibels.amax(dim=(1, 2), keepdim=True)
            decibels = torch.maximum(decibels, peak - s.top_db)
        if s.kind == "mfcc":
            decibels = torch.matmul(self.dct, decibels)
        return decibels.transpose(1, 2).contiguous()
