"""Cutting padded feature sequences into fixed-size windows of frames, one per model output.

Used by the acoustic model; the window count also tells CTC how long each output sequence is.
"""

from __future__ import annotations

import torch


def count_windows(lengths: torch.Tensor, window_stride: int) -> torch.Tensor:
    """Windows per utterance: one starting at every ``window_stride``-th frame (at least one)."""
    return torch.clamp((lengths + window_stride - 1) // window_stride, min=1)


def frames_to_windows(
    features: torch.Tensor, lengths: torch.Tensor, window_size: int, window_stride: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut (N, T, F) features into (N, num_windows, window_size, F) windows and their counts.

    Frames at or past an utterance's length are zeroed first, so what fills the padding of a
    batch never reaches a real utterance's windows; windows running past the end are zero-padded.
    """
    if features.dim() != 3:
        raise ValueError(f"features must be (N, T, F), got shape {tuple(features.shape)}")
    if lengths.shape != (features.shape[0],):
        raise ValueError(
            f"lengths must be ({features.shape[0]},) for features {tuple(features.shape)}, "
            f"got {tuple(lengths.shape)}"
        )
    lengths = lengths.to(features.device)
    window_counts = count_windows(lengths, window_stride)
    num_windows = int(window_counts.max()) if len(lengths) else 1
    needed_frames = (num_windows - 1) * window_stride + window_size
    time = torch.arange(features.shape[1], device=features.device)
    inside = (time[None, :] < lengths[:, None]).unsqueeze(-1)
    features = features * inside.to(features.dtype)
    if features.shape[1] < needed_frames:
        features = torch.nn.functional.pad(features, (0, 0, 0, needed_frames - features.shape[1]))
    else:
        features = features[:, :needed_frames]
    windows = features.unfold(1, window_size, window_stride)  # (N, num_windows, F, window_size)
    return windows.transpose(2, 3), window_counts
