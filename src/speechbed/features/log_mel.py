"""Log-mel features of audio batches, in torch on the training device, with their augmentations.

Called by the rnnt task (speechbed.tasks.rnnt) on every batch: ``LogMelFrontEnd`` turns padded
16 kHz audio into per-utterance-normalised log-mel frames (the MLPerf/Myrtle.ai RNN-T front
end: dither, pre-emphasis, 512-point FFT of 20 ms Hann windows every 10 ms, 80 Slaney mel
bands, log); ``apply_spec_augment`` masks bands and frames from draws made beforehand, so a
resumed run draws what the uninterrupted run would have; ``stack_frames`` stacks and
subsamples frames; ``speed_perturb`` resamples audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from speechbed.features.clip_computers import slaney_mel_weights

#: Added to the mel power before the log (2^-24, about float32's resolution at 1).
LOG_GUARD = 2.0**-24
#: Added to the standard deviation in the per-utterance normalisation.
STD_GUARD = 1e-5


@dataclass(frozen=True)
class LogMelSettings:
    """The front end's plain numbers; the defaults are the MLPerf/Myrtle.ai RNN-T settings."""

    sample_rate: int = 16000
    num_mels: int = 80
    fft_size: int = 512
    window_seconds: float = 0.02
    hop_seconds: float = 0.01
    preemphasis: float = 0.97
    dither: float = 1e-5

    @property
    def window_length(self) -> int:
        return round(self.window_seconds * self.sample_rate)

    @property
    def hop_length(self) -> int:
        return round(self.hop_seconds * self.sample_rate)


class LogMelFrontEnd(torch.nn.Module):
    """Padded audio (B, N) and sample counts -> normalised log-mel frames (B, T, num_mels)."""

    def __init__(self, settings: LogMelSettings = LogMelSettings()) -> None:
        super().__init__()
        if settings.window_length > settings.fft_size:
            raise ValueError(
                f"window_seconds {settings.window_seconds} gives {settings.window_length} "
                f"samples, more than fft_size {settings.fft_size}"
            )
        self.settings = settings
        weights = slaney_mel_weights(
            settings.num_mels, settings.fft_size, settings.sample_rate, 0.0,
            settings.sample_rate / 2,
        )  # fmt: skip
        self.register_buffer("mel_weights", torch.tensor(weights, dtype=torch.float32), False)
        window = torch.hann_window(settings.window_length, periodic=False, dtype=torch.float64)
        self.register_buffer("window", window.float(), False)

    def frame_counts(self, sample_counts: torch.Tensor) -> torch.Tensor:
        """Frames of each utterance: one per hop, centred (the STFT pads half a window)."""
        return 1 + torch.div(sample_counts, self.settings.hop_length, rounding_mode="floor")

    def forward(
        self,
        audio: torch.Tensor,
        sample_counts: torch.Tensor,
        generator: torch.Generator | None = None,
        normalize: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and frame counts; dither noise is drawn from ``generator`` when one is given
        (training), and left out without one (evaluation: the same audio, the same features).
        ``normalize=False`` leaves out the per-utterance normalisation (the log-mel frames as they
        are, padding included: speechbed.features.streaming_normalization normalises them)."""
        s = self.settings
        if audio.dim() != 2:
            raise ValueError(f"audio must be (batch, samples), got shape {tuple(audio.shape)}")
        audio = audio.float()
        sample_counts = sample_counts.to(audio.device)
        inside = torch.arange(audio.shape[1], device=audio.device)[None, :] < sample_counts[:, None]
        if generator is not None and s.dither > 0:
            noise = torch.randn(audio.shape, generator=generator, device=generator.device)
            audio = audio + s.dither * noise.to(audio.device)
        if s.preemphasis:
            audio = torch.cat([audio[:, :1], audio[:, 1:] - s.preemphasis * audio[:, :-1]], 1)
        audio = audio.masked_fill(~inside, 0.0)
        spectrum = torch.stft(
            audio, s.fft_size, s.hop_length, s.window_length, self.window, center=True,
            pad_mode="constant", return_complex=True,
        )  # fmt: skip
        power = spectrum.real.square() + spectrum.imag.square()
        features = torch.log(torch.matmul(self.mel_weights, power) + LOG_GUARD).transpose(1, 2)
        frames = self.frame_counts(sample_counts)
        return (normalize_per_utterance(features, frames) if normalize else features), frames


def normalize_per_utterance(features: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Each utterance's bins to zero mean and unit standard deviation over its own frames;
    padded frames become 0."""
    valid = torch.arange(features.shape[1], device=features.device)[None, :] < frames[:, None]
    valid = valid[..., None].to(features.dtype)
    count = frames.to(features.dtype)[:, None, None]
    mean = (features * valid).sum(1, keepdim=True) / count
    spread = ((features - mean) * valid).square().sum(1, keepdim=True)
    std = torch.sqrt(spread / (count - 1).clamp(min=1))
    return (features - mean) / (std + STD_GUARD) * valid


def stack_frames(
    features: torch.Tensor, frames: torch.Tensor, stacking: int, subsampling: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame t of the output joins input frames t*s .. t*s + stacking - 1 (zeros past the end),
    for s = ``subsampling``: (B, T, F) -> (B, ceil(T / s), F * stacking)."""
    if stacking < 1 or subsampling < 1:
        raise ValueError(f"stacking and subsampling must be >= 1, got {stacking}, {subsampling}")
    shifted = [F.pad(features[:, offset:], (0, 0, 0, offset)) for offset in range(stacking)]
    stacked = torch.cat(shifted, dim=2)[:, ::subsampling]
    return stacked, -torch.div(-frames, subsampling, rounding_mode="floor")


# --------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class SpecAugmentSettings:
    """Masks per utterance: ``freq_masks`` bands of 0..``max_freq`` bins and ``time_masks``
    spans of 0..``max_time`` frames (``max_time`` < 1: that share of the utterance's frames)."""

    freq_masks: int = 0
    max_freq: int = 0
    time_masks: int = 0
    max_time: float = 0.0

    @property
    def active(self) -> bool:
        return (self.freq_masks > 0 and self.max_freq > 0) or (
            self.time_masks > 0 and self.max_time > 0
        )


class SpecAugmentDraws(NamedTuple):
    """Uniform [0, 1) draws, (batch, masks, 2): each mask's width and start, as fractions."""

    freq: torch.Tensor
    time: torch.Tensor


def draw_spec_augment(
    batch_size: int, settings: SpecAugmentSettings, generator: torch.Generator
) -> SpecAugmentDraws:
    """The draws one batch's masks are made from (on the CPU, from ``generator`` only)."""
    freq = torch.rand((batch_size, settings.freq_masks, 2), generator=generator)
    time = torch.rand((batch_size, settings.time_masks, 2), generator=generator)
    return SpecAugmentDraws(freq, time)


def _band_mask(draws: torch.Tensor, widest: torch.Tensor, size: torch.Tensor, span: int):
    """(B, span) True inside any of a row's masks; widths up to ``widest``, inside ``size``."""
    widest = torch.minimum(widest, size)[:, None]
    width = torch.floor(draws[..., 0] * (widest + 1)).clamp(max=widest)
    start = torch.floor(draws[..., 1] * (size[:, None] - width + 1))
    position = torch.arange(span, device=draws.device)[None, None, :]
    return ((position >= start[..., None]) & (position < (start + width)[..., None])).any(1)


def apply_spec_augment(
    features: torch.Tensor,
    frames: torch.Tensor,
    draws: SpecAugmentDraws,
    settings: SpecAugmentSettings,
) -> torch.Tensor:
    """(B, T, F) features with the drawn frequency bands and time spans set to 0."""
    batch, span, bins = features.shape
    device = features.device
    sizes = frames.to(device).double()
    if settings.max_time < 1:
        widest_time = torch.floor(settings.max_time * sizes)
    else:
        widest_time = torch.full_like(sizes, float(int(settings.max_time)))
    masked = _band_mask(draws.time.to(device).double(), widest_time, sizes, span)[..., None]
    all_bins = torch.full((batch,), float(bins), dtype=torch.float64, device=device)
    widest_freq = torch.full_like(all_bins, float(settings.max_freq))
    bands = _band_mask(draws.freq.to(device).double(), widest_freq, all_bins, bins)[:, None, :]
    return features.masked_fill(masked | bands, 0.0)


def speed_perturb(
    audio: torch.Tensor, sample_counts: torch.Tensor, rates: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each utterance played ``rates[b]`` times as fast (tempo and pitch, as sox's ``speed``),
    resampled by linear interpolation; returns the new padded batch and sample counts."""
    counts = [
        max(1, round(int(count) / float(rate)))
        for count, rate in zip(sample_counts.tolist(), rates.tolist(), strict=True)
    ]
    padded = audio.new_zeros((audio.shape[0], max(counts)))
    for row, (count, new_count) in enumerate(zip(sample_counts.tolist(), counts, strict=True)):
        source = audio[row, :count].float()[None, None, :]
        padded[row, :new_count] = F.interpolate(source, size=new_count, mode="linear")[0, 0]
    return padded, torch.tensor(counts, dtype=sample_counts.dtype)


def speed_rates(
    batch_size: int, low: float, high: float, generator: torch.Generator
) -> torch.Tensor:
    """Rates uniform in [low, high] for one batch (all 1 when low == high == 1)."""
    if not 0 < low <= high:
        raise ValueError(f"speed rates need 0 < low <= high, got {low}, {high}")
    uniform = torch.rand(batch_size, generator=generator, dtype=torch.float64)
    return low + (high - low) * uniform
