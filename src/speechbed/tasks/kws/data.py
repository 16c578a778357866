"""Batches of the kws task: whole clip stores held in memory as tensors, shuffled per epoch.

Used by speechbed.tasks.kws.task. A store (speechbed.features.clip_build) holds fixed-size
clips with one token each, the class id; its ``token_list`` is the class names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from speechbed.errors import UserInputError
from speechbed.features.cache import FeatureCache
from speechbed.features.loader import BucketBatchSampler


class ClipBatch(NamedTuple):
    """``values``: features (batch, frames, dims), or audio (batch, samples) when ``is_audio``."""

    values: torch.Tensor
    labels: torch.Tensor
    is_audio: bool


class ClipStore(Dataset):
    """Every clip of one store, in memory: ``values`` (clips, frames, dims) and ``labels``."""

    def __init__(self, path: str | Path) -> None:
        cache = FeatureCache(path, in_memory=True)
        if not cache.attributes.get("clip_store"):
            raise UserInputError(
                f"{path}: not a clip store (make it with scripts/compute_clip_features.py)"
            )
        frames = set(cache.num_frames.tolist())
        if len(frames) != 1:
            raise UserInputError(f"{path}: clips of different lengths {sorted(frames)[:4]}")
        if len(cache) == 0:
            raise UserInputError(f"{path}: no clips")
        self.path = Path(path)
        self.attributes: dict[str, Any] = cache.attributes
        self.classes: list[str] = list(cache.attributes.get("token_list", []))
        self.ids = cache.ids
        count, length = len(cache), frames.pop()
        self.values = torch.from_numpy(
            np.ascontiguousarray(cache.all_feats().reshape(count, length, cache.num_features))
        )
        self.labels = torch.tensor([int(cache.tokens(i)[0]) for i in range(count)])

    @property
    def is_audio(self) -> bool:
        return self.attributes.get("feature_settings", {}).get("kind") == "raw"

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> int:
        return index  # the collate function gathers whole batches from the tensors


def clip_loader(
    store: ClipStore,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """Batches of ``ClipBatch``; a shuffled loader's ``batch_sampler`` has ``set_epoch``."""

    def collate(indices: Sequence[int]) -> ClipBatch:
        rows = torch.as_tensor(list(indices))
        values = store.values[rows]
        if store.is_audio:
            values = values[..., 0]
        return ClipBatch(values, store.labels[rows], store.is_audio)

    sampler = BucketBatchSampler(
        np.full(len(store), 1), batch_size=batch_size, shuffle=shuffle, seed=seed
    )
    return DataLoader(store, batch_sampler=sampler, collate_fn=collate, generator=generator)
