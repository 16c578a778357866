"""Opening a run's feature caches as batched loaders (length-bucketed, padded, CTC targets).

Used by the tasks (speechbed.tasks) for their batches, and by run lineage for the store paths.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from speechbed.errors import UserInputError
from speechbed.features.cache import FeatureCache
from speechbed.features.loader import BucketBatchSampler, CachedUtterances, collate_padded
from speechbed.training.config import FeatureStoreDataConfig

#: ``data.in_memory: auto`` holds a partition in memory when its frames take at most this.
IN_MEMORY_AUTO_BYTES = 1 << 30


def open_loader(
    data: FeatureStoreDataConfig,
    partition: str,
    *,
    shuffle: bool,
    seed: int = 0,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """A DataLoader of ``PaddedBatch`` over one partition; its ``batch_sampler`` has ``set_epoch``."""
    cache = FeatureCache(data.existing_source(partition))
    if data.in_memory is True or (
        data.in_memory == "auto" and cache.feats_bytes <= IN_MEMORY_AUTO_BYTES
    ):
        cache.load_into_memory()
    dataset = CachedUtterances(cache)
    if len(dataset) == 0:
        raise UserInputError(f"partition '{partition}' in {data.cache_directory} has no utterances")
    sampler = BucketBatchSampler(
        dataset.num_frames, batch_size=batch_size or data.batch_size, shuffle=shuffle, seed=seed
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_padded,
        num_workers=data.num_workers,
        generator=generator,
    )


def sample_frames(dataset: CachedUtterances, max_utterances: int = 256) -> torch.Tensor:
    """Frames of up to ``max_utterances`` evenly spaced utterances: a fixed sample for statistics."""
    count = len(dataset)
    picked = sorted(
        {index * count // max_utterances for index in range(min(count, max_utterances))}
    )
    return torch.cat([dataset[index].feats for index in picked])


def num_features(loader: DataLoader) -> int:
    """Feature dimensions of the loader's cache."""
    return int(loader.dataset[0].feats.shape[1])
