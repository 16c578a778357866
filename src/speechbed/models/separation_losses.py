"""Objectives of the separation networks: deep clustering, permutation-invariant mask, chimera.

Called by the separation task (speechbed.tasks.separation); pure functions of tensors.
"""

from __future__ import annotations

import itertools

import torch


def frame_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, T) 1.0 on each utterance's valid frames, 0.0 on padding."""
    steps = torch.arange(frames, device=lengths.device)
    return (steps[None, :] < lengths[:, None]).float()


def silence_weights(
    mixture: torch.Tensor, lengths: torch.Tensor, threshold_db: float | None = 40.0
) -> torch.Tensor:
    """(B, T, F) weights: 1 on bins within ``threshold_db`` of the utterance's loudest bin.

    Hershey et al. (2016) leave bins more than 40 dB below the mixture's maximum out of the
    deep clustering objective and of the k-means; ``None`` keeps every valid bin. Padding
    frames always weigh 0.
    """
    valid = frame_mask(lengths, mixture.shape[1])[:, :, None].expand_as(mixture)
    if threshold_db is None:
        return valid.clone()
    level = 20 * torch.log10(mixture.float().clamp_min(1e-10))
    loudest = torch.where(valid > 0, level, torch.full_like(level, -1e9)).amax(dim=(1, 2))
    return ((level > loudest[:, None, None] - threshold_db) & (valid > 0)).float()


def ideal_binary_assignments(sources: torch.Tensor) -> torch.Tensor:
    """(B, T, F, C) one-hot: which source dominates each bin of source magnitudes (B, C, T, F)."""
    dominant = sources.argmax(dim=1)
    return torch.nn.functional.one_hot(dominant, sources.shape[1]).float()


def deep_clustering_loss(
    embeddings: torch.Tensor, assignments: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Per utterance (B,): sum over weighted bin pairs of (v_i . v_j - y_i . y_j)^2 / (sum w)^2.

    With V (N x D) the embeddings and Y (N x C) the one-hot assignments of the N = T x F
    bins, each row scaled by sqrt(w), this is ||V'V||^2 - 2 ||V'Y||^2 + ||Y'Y||^2 (Frobenius
    norms), so the N x N affinity matrices are never formed.
    """
    batch, dimension = embeddings.shape[0], embeddings.shape[-1]
    root = weights.reshape(batch, -1, 1).float().sqrt()
    v = embeddings.reshape(batch, -1, dimension).float() * root
    y = assignments.reshape(batch, -1, assignments.shape[-1]).float() * root
    vv = torch.bmm(v.transpose(1, 2), v)
    vy = torch.bmm(v.transpose(1, 2), y)
    yy = torch.bmm(y.transpose(1, 2), y)
    total = (
        vv.square().sum(dim=(1, 2)) - 2 * vy.square().sum(dim=(1, 2)) + yy.square().sum(dim=(1, 2))
    )
    return total / weights.reshape(batch, -1).sum(dim=1).clamp_min(1.0).square()


def pit_mask_loss(
    masks: torch.Tensor, mixture: torch.Tensor, sources: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Permutation-invariant magnitude approximation: per utterance (B,) loss and permutation.

    Loss of a permutation p: sum over sources c and valid bins of (M_c |X| - |S_p(c)|)^2,
    divided by the valid bins times C; the least over all permutations is taken. Returns the
    losses and (B, C) the best permutation (output c estimates source ``perm[b, c]``).
    """
    batch, count = masks.shape[:2]
    valid = frame_mask(lengths, mixture.shape[1])[:, None, None, :, None]
    estimates = (masks * mixture[:, None]).unsqueeze(2)  # (B, C, 1, T, F)
    errors = ((estimates - sources[:, None]).square() * valid).sum(dim=(3, 4))  # (B, C, C)
    permutations = torch.tensor(list(itertools.permutations(range(count))), device=masks.device)
    rows = torch.arange(count, device=masks.device)
    totals = errors[:, rows[None, :], permutations].sum(dim=-1)  # (B, P)
    best, index = totals.min(dim=1)
    bins = lengths.to(masks.device).float() * mixture.shape[2] * count
    return best / bins.clamp_min(1.0), permutations[index]


def chimera_loss(clustering: torch.Tensor, mask: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight`` x deep clustering + (1 - weight) x mask inference (Luo et al. 2017)."""
    return weight * clustering + (1.0 - weight) * mask
