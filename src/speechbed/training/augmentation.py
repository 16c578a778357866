"""Training-time augmentation of padded feature batches: SpecAugment, scaled noise, random shift.

Called by a task on each training batch; every draw comes from the one generator it is given,
so a resumed run draws exactly what the uninterrupted run would have.
"""

from __future__ import annotations

import math

import torch

from speechbed.training.config import TrainingConfig


def _uniform_int(low: int, high: int, generator: torch.Generator) -> int:
    """An integer in [low, high] (inclusive)."""
    if high <= low:
        return low
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def warp_axis(
    values: torch.Tensor, axis: int, max_warp: float, generator: torch.Generator
) -> torch.Tensor:
    """Piecewise-linear warp along ``axis``: a random centre moves by up to ``max_warp`` positions.

    Positions left of the centre are stretched or squeezed to meet the moved centre, those right
    of it to meet the end; values are resampled by linear interpolation.
    """
    size = values.shape[axis]
    if max_warp <= 0 or size < 3:
        return values
    margin = min(max_warp, (size - 1) / 2)
    centre = _uniform(margin, size - 1 - margin, generator)
    shift = _uniform(-margin, margin, generator)
    moved = min(max(centre + shift, 1e-3), size - 1 - 1e-3)
    target = torch.arange(size, dtype=torch.float64)
    source = torch.where(
        target <= moved,
        target * centre / moved,
        centre + (target - moved) * (size - 1 - centre) / (size - 1 - moved),
    ).clamp(0, size - 1)
    below = source.floor().long().clamp(max=size - 2)
    fraction = (source - below).to(values.dtype)
    lower = values.index_select(axis, below)
    upper = values.index_select(axis, below + 1)
    shape = [1] * values.dim()
    shape[axis] = size
    fraction = fraction.view(shape)
    return lower * (1 - fraction) + upper * fraction


def mask_axis(
    values: torch.Tensor, axis: int, count: int, max_width: int, generator: torch.Generator
) -> torch.Tensor:
    """Zero ``count`` bands along ``axis``, each of width uniform in [0, max_width]."""
    size = values.shape[axis]
    values = values.clone()
    for _ in range(count):
        width = _uniform_int(0, min(max_width, size), generator)
        start = _uniform_int(0, size - width, generator)
        values.narrow(axis, start, width).zero_()
    return values


def augment_utterance(
    frames: torch.Tensor, config: TrainingConfig, generator: torch.Generator
) -> torch.Tensor:
    """One (frames, features) utterance, augmented as the ``training`` section says."""
    length = frames.shape[0]
    if config.max_shift_proportion > 0:
        frames = frames[
            _uniform_int(0, math.floor(config.max_shift_proportion * length), generator) :
        ]
        if frames.shape[0] == 0:
            frames = frames.new_zeros((1, frames.shape[1]))
        length = frames.shape[0]
    if config.max_time_warp > 0:
        frames = warp_axis(frames, 0, config.max_time_warp, generator)
    if config.max_freq_warp > 0:
        frames = warp_axis(frames, 1, config.max_freq_warp, generator)
    time_masks = config.num_time_mask + math.floor(config.num_time_mask_proportion * length)
    if time_masks and config.max_time_mask > 0:
        widest = min(config.max_time_mask, math.floor(config.max_time_mask_proportion * length))
        frames = mask_axis(frames, 0, time_masks, widest, generator)
    if config.num_freq_mask and config.max_freq_mask > 0:
        frames = mask_axis(frames, 1, config.num_freq_mask, config.max_freq_mask, generator)
    if config.noise_eps > 0:
        scale = config.noise_eps * frames.std() if frames.numel() > 1 else 0.0
        frames = frames + scale * torch.randn(frames.shape, generator=generator, dtype=frames.dtype)
    return frames


def is_augmenting(config: TrainingConfig) -> bool:
    """Whether any augmentation is switched on."""
    return bool(
        config.max_shift_proportion > 0
        or config.max_time_warp > 0
        or config.max_freq_warp > 0
        or (config.max_time_mask > 0 and (config.num_time_mask or config.num_time_mask_proportion))
        or (config.max_freq_mask > 0 and config.num_freq_mask)
        or config.noise_eps > 0
    )


def augment_batch(
    features: torch.Tensor,
    lengths: torch.Tensor,
    config: TrainingConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded (N, T, F) batch with each utterance augmented; lengths follow any shift."""
    if not is_augmenting(config):
        return features, lengths
    utterances = [
        augment_utterance(features[row, :length], config, generator)
        for row, length in enumerate(lengths.tolist())
    ]
    new_lengths = torch.tensor([len(frames) for frames in utterances], dtype=lengths.dtype)
    padded = features.new_zeros((len(utterances), int(new_lengths.max()), features.shape[2]))
    for row, frames in enumerate(utterances):
        padded[row, : len(frames)] = frames
    return padded, new_lengths
