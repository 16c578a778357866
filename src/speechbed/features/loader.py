"""Training input from a feature cache: a torch Dataset, a length-bucketed batch sampler, collation.

Used by the training code: ``DataLoader(CachedUtterances(path), batch_sampler=BucketBatchSampler(
dataset.num_frames, batch_size=32), collate_fn=collate_padded, num_workers=2)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from speechbed.features.cache import FeatureCache


class CachedUtterance(NamedTuple):
    """One utterance as the dataset yields it."""

    utt_id: str
    feats: torch.Tensor  # float32 (frames, dims)
    tokens: torch.Tensor  # int64 (tokens,)


class PaddedBatch(NamedTuple):
    """A batch for CTC training; unpacks as ``feats, lengths, targets, target_lengths, utt_ids``."""

    feats: torch.Tensor  # float32 (N, T, F), zero past each length
    lengths: torch.Tensor  # int64 (N,)
    targets: torch.Tensor  # int64 (sum of target_lengths,): every utterance's tokens, in order
    target_lengths: torch.Tensor  # int64 (N,)
    utt_ids: list[str]


class CachedUtterances(Dataset):
    """Utterances of one feature cache; item i is ``CachedUtterance(id, feats, tokens)``."""

    def __init__(self, cache: FeatureCache | str | Path, in_memory: bool = False) -> None:
        if isinstance(cache, FeatureCache):
            self.cache = cache
        else:
            self.cache = FeatureCache(cache, in_memory=in_memory)

    def __len__(self) -> int:
        return len(self.cache)

    @property
    def num_frames(self) -> np.ndarray:
        """Frames per utterance, for ``BucketBatchSampler``."""
        return self.cache.num_frames

    def _item(self, index: int, feats: np.ndarray) -> CachedUtterance:
        return CachedUtterance(
            self.cache.ids[index],
            torch.from_numpy(np.ascontiguousarray(feats)),
            torch.from_numpy(self.cache.tokens(index).astype(np.int64)),
        )

    def __getitem__(self, index: int) -> CachedUtterance:
        return self._item(index, self.cache.feats(index))

    def __getitems__(self, indices: list[int]) -> list[CachedUtterance]:
        """A whole batch in one read (DataLoader calls this when batches are sampled)."""
        return [
            self._item(index, feats)
            for index, feats in zip(indices, self.cache.feats_many(indices), strict=True)
        ]


def collate_padded(batch: Sequence[CachedUtterance]) -> PaddedBatch:
    """Pad frames to the longest utterance and concatenate the targets."""
    if not batch:
        raise ValueError("collate_padded got an empty batch")
    lengths = torch.tensor([item.feats.shape[0] for item in batch], dtype=torch.int64)
    num_features = batch[0].feats.shape[1]
    feats = torch.zeros((len(batch), int(lengths.max()), num_features), dtype=torch.float32)
    for row, item in enumerate(batch):
        feats[row, : item.feats.shape[0]] = item.feats
    target_lengths = torch.tensor([item.tokens.numel() for item in batch], dtype=torch.int64)
    targets = torch.cat([item.tokens.to(torch.int64) for item in batch])
    return PaddedBatch(feats, lengths, targets, target_lengths, [item.utt_id for item in batch])


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of utterances of similar length; each epoch covers every utterance exactly once.

    Give ``batch_size`` (utterances per batch) or ``max_frames`` (padded frames per batch,
    i.e. batch rows x longest length; an utterance longer than that gets a batch of its own).
    With ``shuffle``, lengths are jittered by up to ``jitter`` (a fraction) before sorting, so
    batches differ between epochs, and the batch order is shuffled; ``set_epoch`` picks the
    epoch (the order depends only on ``seed`` and the epoch). ``drop_last`` drops the one
    short batch of ``batch_size`` mode.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int | None = None,
        *,
        max_frames: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        jitter: float = 0.1,
    ) -> None:
        if (batch_size is None) == (max_frames is None):
            raise ValueError("give exactly one of batch_size or max_frames")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.max_frames = max_frames
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.jitter = jitter
        self.epoch = 0
        self._batches: list[list[int]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose batches the next iteration yields."""
        self.epoch = epoch
        self._batches = None

    def _make_batches(self) -> list[list[int]]:
        count = len(self.lengths)
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.shuffle:
            keys = self.lengths * (1.0 + self.jitter * rng.random(count))
            order = np.argsort(keys, kind="stable")
        else:
            order = np.argsort(self.lengths, kind="stable")
        batches: list[list[int]] = []
        if self.batch_size is not None:
            for start in range(0, count, self.batch_size):
                batches.append(order[start : start + self.batch_size].tolist())
            if self.drop_last and batches and len(batches[-1]) < self.batch_size:
                batches.pop()
        else:
            current: list[int] = []
            longest = 0
            for index in order.tolist():
                longest_with = max(longest, int(self.lengths[index]))
                if current and longest_with * (len(current) + 1) > self.max_frames:
                    batches.append(current)
                    current, longest_with = [], int(self.lengths[index])
                current.append(index)
                longest = longest_with
            if current:
                batches.append(current)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches if self._batches is not None else self._make_batches()
        self._batches = None
        yield from batches

    def __len__(self) -> int:
        if self._batches is None:
            self._batches = self._make_batches()
        return len(self._batches)
