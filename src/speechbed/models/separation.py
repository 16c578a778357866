"""Two-speaker separation networks: a BLSTM trunk with a deep clustering and/or a mask head.

Built by the separation task (speechbed.tasks.separation) from plain numbers; the objectives
are in speechbed.models.separation_losses. Heads: ``clustering`` (Hershey et al. 2016: a
unit-norm embedding per time-frequency bin, masks by k-means at test time), ``mask`` (mask
inference, trained permutation-invariantly) and ``chimera`` (both on one trunk; Luo et al.
2017, Wang et al. 2018).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

Heads = Literal["clustering", "mask", "chimera"]
#: Added to magnitudes before the log, so silent bins stay finite.
LOG_FLOOR = 1e-6


@dataclass(frozen=True)
class SeparationModelSettings:
    """The network's sizes (the task's model section, as plain values)."""

    heads: Heads = "chimera"
    recurrent_size: int = 300  # units per direction
    recurrent_layers: int = 4
    embedding_dimension: int = 20
    mask_activation: Literal["sigmoid", "softmax"] = "sigmoid"
    dropout: float = 0.0


class SeparationOutput(NamedTuple):
    """Per bin: unit-norm embeddings (B, T, F, D) and masks (B, C, T, F), each None without its head."""

    embeddings: torch.Tensor | None
    masks: torch.Tensor | None


class SeparationNetwork(nn.Module):
    """Log magnitude, standardised per bin -> BLSTM layers -> embedding and/or mask heads.

    Padding never changes an utterance's outputs (the BLSTM runs on packed sequences); the
    standardisation's statistics are fitted on training frames (``fit_input_normalization``)
    and saved with the parameters.
    """

    def __init__(self, settings: SeparationModelSettings, num_bins: int, num_sources: int) -> None:
        super().__init__()
        if num_bins < 1 or num_sources < 2:
            raise ValueError(f"num_bins {num_bins} must be >= 1 and num_sources {num_sources} >= 2")
        self.settings = settings
        self.num_bins = num_bins
        self.num_sources = num_sources
        self.register_buffer("input_mean", torch.zeros(num_bins))
        self.register_buffer("input_std", torch.ones(num_bins))
        self.trunk = nn.LSTM(
            num_bins,
            settings.recurrent_size,
            num_layers=settings.recurrent_layers,
            bidirectional=True,
            batch_first=True,
            dropout=settings.dropout if settings.recurrent_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(settings.dropout)
        width = 2 * settings.recurrent_size
        with_embeddings = settings.heads in ("clustering", "chimera")
        with_masks = settings.heads in ("mask", "chimera")
        dimension = settings.embedding_dimension
        self.embedding_head = nn.Linear(width, num_bins * dimension) if with_embeddings else None
        self.mask_head = nn.Linear(width, num_bins * num_sources) if with_masks else None

    def log_features(self, magnitude: torch.Tensor) -> torch.Tensor:
        """Standardised log magnitude (B, T, F)."""
        return (torch.log(magnitude + LOG_FLOOR) - self.input_mean) / self.input_std

    @torch.no_grad()
    def fit_input_normalization(self, magnitudes: torch.Tensor) -> None:
        """Per-bin mean and standard deviation of log magnitudes (frames, F) of training data."""
        logs = torch.log(magnitudes.double() + LOG_FLOOR)
        self.input_mean.copy_(logs.mean(dim=0).float())
        self.input_std.copy_(logs.std(dim=0).clamp_min(1e-3).float())

    def forward(self, magnitude: torch.Tensor, lengths: torch.Tensor) -> SeparationOutput:
        """Outputs for mixture magnitudes (B, T, F) with ``lengths`` (B,) valid frames each."""
        if magnitude.dim() != 3 or magnitude.shape[-1] != self.num_bins:
            raise ValueError(
                f"magnitude must be (batch, frames, {self.num_bins}), got {tuple(magnitude.shape)}"
            )
        batch, frames, bins = magnitude.shape
        packed = pack_padded_sequence(
            self.log_features(magnitude), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        hidden, _ = pad_packed_sequence(
            self.trunk(packed)[0], batch_first=True, total_length=frames
        )
        hidden = self.dropout(hidden)
        embeddings = masks = None
        if self.embedding_head is not None:
            raw = torch.tanh(self.embedding_head(hidden)).reshape(batch, frames, bins, -1)
            embeddings = nn.functional.normalize(raw.float(), dim=-1)
        if self.mask_head is not None:
            logits = self.mask_head(hidden).reshape(batch, frames, bins, self.num_sources)
            if self.settings.mask_activation == "softmax":
                masks = torch.softmax(logits.float(), dim=-1)
            else:
                masks = torch.sigmoid(logits.float())
            masks = masks.permute(0, 3, 1, 2)
        return SeparationOutput(embeddings, masks)


def cluster_masks(
    embeddings: torch.Tensor,
    weights: torch.Tensor,
    num_sources: int,
    iterations: int = 20,
) -> torch.Tensor:
    """Binary masks (C, T, F) of one utterance by k-means on its embeddings (T, F, D).

    Centroids are fitted on the bins of positive ``weights`` (T, F) (silent bins would pull
    them together), started from the loudest-weighted bin's embedding and then, in turn, the
    bin least like those chosen (deterministic); every bin goes to its nearest centroid.
    """
    frames, bins, dimension = embeddings.shape
    flat = embeddings.reshape(-1, dimension).double()
    active = flat[weights.reshape(-1) > 0]
    if len(active) < num_sources:
        active = flat
    centroids = [active[0]]
    for _ in range(1, num_sources):
        similarity = torch.stack([active @ c for c in centroids]).max(dim=0).values
        centroids.append(active[similarity.argmin()])
    centres = torch.stack(centroids)
    for _ in range(iterations):
        # nearest centre by squared distance, |x|^2 left out: the same for every centre
        nearest = (centres.square().sum(dim=1) - 2 * active @ centres.T).argmin(dim=1)
        members = nn.functional.one_hot(nearest, num_sources).to(active.dtype)
        counts = members.sum(dim=0)
        sums = members.T @ active
        moved = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
        if torch.allclose(moved, centres):
            break
        centres = moved
    labels = (centres.square().sum(dim=1) - 2 * flat @ centres.T).argmin(dim=1)
    labels = labels.reshape(frames, bins)
    return nn.functional.one_hot(labels, num_sources).permute(2, 0, 1).to(embeddings.dtype)


def build_separation_model(
    settings: SeparationModelSettings, num_bins: int, num_sources: int, seed: int
) -> SeparationNetwork:
    """A new network whose parameters depend only on ``seed`` and the sizes."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SeparationNetwork(settings, num_bins, num_sources)
