"""Tests of the feature store writer/reader and the training loader (dataset, sampler, collation).

The store is written from random frames made here, so every value read back is checked exactly.
"""

from __future__ import annotations

import asyncio
import pickle

import numpy as np
import pytest
import torch
import zarr
from torch.utils.data import DataLoader

import speechbed.features.store_writer as store_writer_module
from speechbed.errors import UserInputError
from speechbed.features import (
    BucketBatchSampler,
    CachedUtterance,
    CachedUtterances,
    FeatureCache,
    FeatureStoreWriter,
    collate_padded,
)

NUM_FEATURES = 5


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store of 23 utterances (one with no frames, one with no tokens) and what went in."""
    rng = np.random.default_rng(7)
    counts = [int(n) for n in rng.integers(1, 400, size=23)]
    counts[4] = 0
    ids = [f"spk{i % 5}-sx{i}" for i in range(len(counts))]
    feats = [rng.standard_normal((n, NUM_FEATURES)).astype(np.float32) for n in counts]
    tokens = [rng.integers(0, 48, size=int(rng.integers(1, 30))) for _ in counts]
    tokens[6] = np.zeros(0, dtype=np.int64)
    path = tmp_path_factory.mktemp("cache") / "train.zarr"
    attributes = {"feature_settings": {"kind": "test"}, "settings_hash": "s", "manifest_hash": "m"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store_writer_module, "CHUNK_BYTES", 64 * 4 * NUM_FEATURES)  # 64-frame chunks
        with FeatureStoreWriter(path, ids, counts, NUM_FEATURES, tokens, attributes) as writer:
            writer.write(0, feats[:10])  # two runs, to cross a run boundary
            writer.write(10, feats[10:])
            writer.commit()
    return path, ids, feats, tokens


def test_round_trip_ids_frames_tokens_and_attributes(store):
    path, ids, feats, tokens = store
    cache = FeatureCache(path)
    assert len(cache) == len(ids) and cache.ids == ids
    assert cache.num_frames.tolist() == [len(f) for f in feats]
    assert cache.offsets[0] == 0 and cache.offsets.dtype == np.int64
    for index in range(len(ids)):
        np.testing.assert_array_equal(cache.feats(index), feats[index])
        assert cache.feats(index).dtype == np.float32
        np.testing.assert_array_equal(cache.tokens(index), tokens[index])
        assert cache.tokens(index).dtype == np.int32
    np.testing.assert_array_equal(cache.all_feats(), np.concatenate(feats))
    for index in np.random.default_rng(1).permutation(len(ids)):  # out of store order
        np.testing.assert_array_equal(cache.feats(index), feats[index])
    rng = np.random.default_rng(2)
    batches = [[5, 4, 0, 22, 5]] + [
        rng.integers(0, len(ids), size=rng.integers(2, 9)) for _ in range(20)
    ]
    for picked in batches:  # out of order, empty utterances, repeats, shared chunks
        for index, block in zip(picked, cache.feats_many(picked), strict=True):
            np.testing.assert_array_equal(block, feats[index])

    async def inside_a_running_loop():  # as in a notebook
        return cache.feats_many([3, 1])

    three, one = asyncio.run(inside_a_running_loop())
    np.testing.assert_array_equal(three, feats[3])
    np.testing.assert_array_equal(one, feats[1])
    in_memory = FeatureCache(path, in_memory=True)
    for index in (0, 4, 22):
        np.testing.assert_array_equal(in_memory.feats(index), feats[index])
    assert cache.settings == {"kind": "test"}
    assert cache.attributes["manifest_hash"] == "m"
    assert cache.index_of(ids[3]) == 3
    assert zarr.open_array(path / "feats").chunks == (64, NUM_FEATURES)
    assert not list(path.parent.glob(".*partial*")), "temporary store left behind"


def test_writer_leaves_nothing_when_not_committed(tmp_path):
    path = tmp_path / "dev.zarr"
    with pytest.raises(RuntimeError):
        with FeatureStoreWriter(path, ["a", "b"], [2, 3], 1, [[1], [2]], {}) as writer:
            writer.write(0, [np.zeros((2, 1), np.float32)])
            writer.commit()  # utterance b was never written
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_wrong_frame_shape(tmp_path):
    with FeatureStoreWriter(tmp_path / "x.zarr", ["a"], [2], 3, [[1]], {}) as writer:
        with pytest.raises(ValueError, match="expected"):
            writer.write(0, [np.zeros((2, 4), np.float32)])


def test_missing_store_is_a_user_error(tmp_path):
    with pytest.raises(UserInputError, match="no feature cache"):
        FeatureCache(tmp_path / "nothing.zarr")


def test_collate_pads_with_zeros_and_concatenates_targets():
    first = (torch.ones(3, 2), torch.tensor([1, 2]))
    second = (torch.full((5, 2), 2.0), torch.tensor([3, 4, 5]))
    batch = collate_padded([CachedUtterance("a", *first), CachedUtterance("b", *second)])
    feats, lengths, targets, target_lengths, utt_ids = batch
    assert feats.shape == (2, 5, 2) and feats.dtype == torch.float32
    assert feats[0, :3].eq(1).all() and feats[0, 3:].eq(0).all() and feats[1].eq(2).all()
    assert lengths.tolist() == [3, 5] and target_lengths.tolist() == [2, 3]
    assert targets.tolist() == [1, 2, 3, 4, 5] and targets.dtype == torch.int64
    assert utt_ids == ["a", "b"]


@pytest.mark.parametrize(
    "options",
    [
        {"batch_size": 4},
        {"batch_size": 4, "shuffle": False},
        {"batch_size": 1},
        {"batch_size": 100},
        {"max_frames": 600},
        {"max_frames": 50},  # smaller than most utterances: each gets a batch of its own
    ],
)
def test_sampler_covers_every_utterance_once_per_epoch(options):
    lengths = np.random.default_rng(3).integers(0, 400, size=57)
    sampler = BucketBatchSampler(lengths, seed=11, **options)
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        flat = [index for batch in batches for index in batch]
        assert sorted(flat) == list(range(len(lengths)))
        if "max_frames" in options:
            for batch in batches:
                padded = max(lengths[batch]) * len(batch)
                assert padded <= options["max_frames"] or len(batch) == 1
        orders.append(flat)
    sampler.set_epoch(1)
    assert [i for batch in sampler for i in batch] == orders[1], "an epoch must be reproducible"
    if options.get("shuffle", True) and options.get("batch_size") != 100:
        assert orders[0] != orders[1], "shuffled epochs should differ"


def test_sampler_buckets_similar_lengths_and_drop_last():
    lengths = np.arange(100)
    batches = list(BucketBatchSampler(lengths, batch_size=10, shuffle=False))
    assert batches[0] == list(range(10)) and batches[-1] == list(range(90, 100))
    dropped = list(BucketBatchSampler(np.arange(25), batch_size=10, drop_last=True, seed=1))
    assert sorted(len(b) for b in dropped) == [10, 10]
    with pytest.raises(ValueError, match="exactly one"):
        BucketBatchSampler(lengths, batch_size=2, max_frames=5)


def test_dataloader_with_workers_yields_every_utterance_once(store):
    path, ids, feats, tokens = store
    dataset = CachedUtterances(path)
    pickle.loads(pickle.dumps(dataset))  # what spawn-started workers need
    sampler = BucketBatchSampler(dataset.num_frames, batch_size=4, seed=5)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_padded, num_workers=2)
    seen = []
    for batch in loader:
        offset = 0
        for row, utt_id in enumerate(batch.utt_ids):
            index = ids.index(utt_id)
            length = int(batch.lengths[row])
            np.testing.assert_array_equal(batch.feats[row, :length].numpy(), feats[index])
            count = int(batch.target_lengths[row])
            assert batch.targets[offset : offset + count].tolist() == tokens[index].tolist()
            offset += count
        seen.extend(batch.utt_ids)
    assert sorted(seen) == sorted(ids)


def _count_chunk_reads(patch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts, by key, the ``feats`` chunks zarr fetches from the local store."""
    fetched: dict[str, int] = {}
    original = zarr.storage.LocalStore.get

    async def counting_get(store, key, *args, **kwargs):
        if key.startswith("feats/c/"):
            fetched[key] = fetched.get(key, 0) + 1
        return await original(store, key, *args, **kwargs)

    patch.setattr(zarr.storage.LocalStore, "get", counting_get)
    return fetched


def test_chunk_cache_decodes_each_chunk_once_per_epoch_when_the_store_fits(store, monkeypatch):
    path, ids, feats, _ = store
    cache = FeatureCache(path)
    fetched = _count_chunk_reads(monkeypatch)
    sampler = BucketBatchSampler(cache.num_frames, batch_size=4, seed=3)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for batch in sampler:
            for index, block in zip(batch, cache.feats_many(batch), strict=True):
                np.testing.assert_array_equal(block, feats[index])
    chunks = -(-sum(len(f) for f in feats) // 64)  # 64-frame chunks (the fixture's)
    assert len(fetched) == chunks and set(fetched.values()) == {1}


def test_chunk_cache_stays_within_its_budget_and_reads_stay_exact(store, monkeypatch):
    path, ids, feats, _ = store
    chunk_bytes = 64 * NUM_FEATURES * 4
    cache = FeatureCache(path, chunk_cache_bytes=3 * chunk_bytes)  # the store has ~60 chunks
    fetched = _count_chunk_reads(monkeypatch)
    rng = np.random.default_rng(5)
    for _ in range(30):
        picked = rng.integers(0, len(ids), size=int(rng.integers(1, 4))).tolist()
        for index, block in zip(picked, cache.feats_many(picked), strict=True):
            np.testing.assert_array_equal(block, feats[index])
            block[...] = -1  # a caller's copy: changing it must not change later reads
        assert cache._chunks_bytes <= 3 * chunk_bytes
    inside_one_chunk = [  # read as a slice of a cached chunk
        index
        for index in range(len(ids))
        if 0 < len(feats[index])
        and cache.offsets[index] // 64 == (cache.offsets[index + 1] - 1) // 64
    ]
    assert inside_one_chunk
    for index in inside_one_chunk * 2:  # the second read is from the cache
        block = cache.feats(index)
        np.testing.assert_array_equal(block, feats[index])
        block[...] = -1
    assert max(fetched.values()) > 1  # evicted chunks were read again
    restored = pickle.loads(pickle.dumps(cache))
    np.testing.assert_array_equal(restored.feats(2), feats[2])
