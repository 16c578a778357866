"""Batches of a separation store: padded mixture and source magnitudes, and the samples.

Used by the separation task (speechbed.tasks.separation.task) for training, the dev metric and
evaluation; stores are speechbed.features.separation_store's.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from speechbed.errors import UserInputError
from speechbed.features.loader import BucketBatchSampler
from speechbed.features.separation_store import SeparationExample, SeparationStore

#: A partition is held in memory when its store's columns take at most this (``in_memory: auto``).
IN_MEMORY_AUTO_BYTES = 1 << 30


class SeparationBatch(NamedTuple):
    """Padded magnitudes and, outside training crops, each mixture's samples."""

    mixture: torch.Tensor  # (B, T, F)
    sources: torch.Tensor  # (B, C, T, F)
    lengths: torch.Tensor  # (B,) valid frames
    indices: list[int]  # positions in the store
    mixture_samples: list[np.ndarray]  # (n,) each; empty after cropping
    source_samples: list[np.ndarray]  # (C, n) each; empty after cropping


class SeparationDataset(Dataset):
    """One store's mixtures by position: (index, example)."""

    def __init__(self, store: SeparationStore) -> None:
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: int) -> tuple[int, SeparationExample]:
        return index, self.store.example(index)

    @property
    def num_frames(self) -> np.ndarray:
        return self.store.num_frames


def collate_separation(items: list[tuple[int, SeparationExample]]) -> SeparationBatch:
    """Pad a list of examples to the longest (zeros past each one's end)."""
    examples = [example for _, example in items]
    lengths = torch.tensor([len(e.mixture_magnitude) for e in examples])
    frames, bins = int(lengths.max()), examples[0].mixture_magnitude.shape[1]
    sources = examples[0].source_magnitudes.shape[0]
    mixture = torch.zeros(len(examples), frames, bins)
    separate = torch.zeros(len(examples), sources, frames, bins)
    for row, example in enumerate(examples):
        count = len(example.mixture_magnitude)
        mixture[row, :count] = torch.from_numpy(np.ascontiguousarray(example.mixture_magnitude))
        separate[row, :, :count] = torch.from_numpy(np.ascontiguousarray(example.source_magnitudes))
    return SeparationBatch(
        mixture,
        separate,
        lengths,
        [index for index, _ in items],
        [e.mixture_samples for e in examples],
        [e.source_samples for e in examples],
    )


def crop_batch(
    batch: SeparationBatch, segment_frames: int | None, generator: torch.Generator
) -> SeparationBatch:
    """Each mixture longer than ``segment_frames`` cut to a segment starting at a random frame.

    The training recipes of deep clustering train on fixed-length segments (100 frames in
    Hershey et al. 2016, 400 in Isik et al. 2016); samples are dropped (training needs none).
    """
    if segment_frames is None or int(batch.lengths.max()) <= segment_frames:
        return batch
    rows = len(batch.lengths)
    lengths = batch.lengths.clamp(max=segment_frames)
    starts = [
        int(torch.randint(int(length) - segment_frames + 1, (1,), generator=generator))
        if length > segment_frames
        else 0
        for length in batch.lengths
    ]
    index = torch.tensor(starts)[:, None] + torch.arange(segment_frames)[None, :]
    index = index.clamp(max=batch.mixture.shape[1] - 1)
    mixture = batch.mixture[torch.arange(rows)[:, None], index]
    sources = batch.sources.permute(0, 2, 1, 3)[torch.arange(rows)[:, None], index]
    keep = (torch.arange(segment_frames)[None, :] < lengths[:, None]).float()[..., None]
    return SeparationBatch(
        mixture * keep,
        sources.permute(0, 2, 1, 3) * keep[:, None],
        lengths,
        batch.indices,
        [],
        [],
    )


def open_separation_store(path: Path, in_memory: bool | str) -> SeparationStore:
    """A checked store, held in memory per ``in_memory`` (true, false or auto)."""
    store = SeparationStore(path)
    if in_memory is True or (
        in_memory == "auto" and store.cache.feats_bytes <= IN_MEMORY_AUTO_BYTES
    ):
        store.load_into_memory()
    if len(store) == 0:
        raise UserInputError(f"{path}: the separation store has no mixtures")
    return store


def open_separation_loader(
    store: SeparationStore,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """Length-bucketed batches of ``SeparationBatch``; the sampler has ``set_epoch``."""
    dataset = SeparationDataset(store)
    sampler = BucketBatchSampler(
        dataset.num_frames, batch_size=batch_size, shuffle=shuffle, seed=seed
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_separation,
        num_workers=num_workers,
        generator=generator,
    )


def training_magnitudes(store: SeparationStore, max_mixtures: int = 256) -> torch.Tensor:
    """Mixture magnitude frames of up to ``max_mixtures`` evenly spaced mixtures (statistics)."""
    count = len(store)
    picked = sorted({i * count // max_mixtures for i in range(min(count, max_mixtures))})
    return torch.cat([torch.from_numpy(e.mixture_magnitude.copy()) for e in store.examples(picked)])
