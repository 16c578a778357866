"""The feature cache: one zarr v3 store per corpus partition and feature, and its reader.

Written by speechbed.features.store_writer (for build); FeatureCache is read by the training loader.

Layout of ``<partition>.zarr``:

- ``feats``: float32, (total frames, dims), all utterances' frames concatenated, chunked, compressed
- ``offsets``: int64, (utterances + 1,); utterance i owns ``feats[offsets[i]:offsets[i + 1]]``
- ``utt_ids``: str, (utterances,)
- ``tokens``: int32, 48-phone token ids concatenated; ``token_offsets`` (utterances + 1,) int64
- attributes: ``feature_settings`` (mapping), ``settings_hash``, ``manifest_hash`` and more
- ``speechbed-integrity.json`` and the lineage fingerprint: see speechbed.features.integrity

Every chunk ends in a CRC-32C (zarr's ``crc32c`` codec after blosc), so a damaged chunk fails
its checksum before blosc decodes it; every chunk is written, even one of zeros, so a missing
chunk file is damage, never a chunk of zeros.
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from speechbed.errors import UserInputError
from speechbed.features.integrity import DamagedFeatureStore, check_chunk, check_store
from speechbed.features.store_writer import REQUIRED_ARRAYS, FeatureStoreWriter

__all__ = ["FeatureCache", "FeatureStoreWriter", "read_store_attributes"]

#: Default budget of decoded chunks a streaming ``FeatureCache`` keeps per process.
CHUNK_CACHE_BYTES = 256 << 20
#: Least span a streaming read decodes when the store fits the chunk cache (read-ahead).
READ_AHEAD_BYTES = 8 << 20


def _decode_problem(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    if "checksum" in text.lower():
        return "chunk fails its checksum (CRC-32C)"
    return f"chunk fails to decode ({type(error).__name__}: {text[:200]})"


_loops: dict[int, asyncio.AbstractEventLoop] = {}


def _event_loop() -> asyncio.AbstractEventLoop:
    """This process's loop for concurrent reads, kept so that its worker threads are reused."""
    loop = _loops.get(os.getpid())
    if loop is None:
        _loops.clear()  # a loop made in a parent process is no use here
        loop = _loops[os.getpid()] = asyncio.new_event_loop()
    return loop


def read_store_attributes(path: str | Path) -> dict[str, Any] | None:
    """A store's attributes, or None when ``path`` holds no readable store."""
    try:
        return dict(zarr.open_group(Path(path), mode="r").attrs)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError, KeyError):
        return None


class FeatureCache:
    """Reads one store: ids, frame counts and tokens up front; frames on demand.

    Picklable and safe with DataLoader workers: the frames array is reopened in each process
    that reads it. Streaming reads keep decoded chunks in a least-recently-used cache
    of ``chunk_cache_bytes`` per process, so an epoch over a store smaller than that decodes
    each chunk once. With ``in_memory=True`` every frame is read once, in one bulk read
    (the fastest way through an epoch when the partition fits in memory; workers forked
    afterwards share the pages).

    Opening checks the store against its integrity record (metadata digests, every chunk file
    there with its size); each chunk of ``feats`` is checked again just before it is read, and
    its CRC-32C when it is decoded. Damage raises ``DamagedFeatureStore`` naming the store,
    the array and the chunk.
    """

    def __init__(
        self,
        path: str | Path,
        in_memory: bool = False,
        chunk_cache_bytes: int = CHUNK_CACHE_BYTES,
    ) -> None:
        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            raise UserInputError(
                f"{self.path}: no feature cache here (run scripts/compute_features.py)"
            )
        record = check_store(self.path)
        try:
            group = zarr.open_group(self.path, mode="r")
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            raise UserInputError(
                f"{self.path}: no feature cache here (run scripts/compute_features.py)"
            ) from None
        missing = [name for name in REQUIRED_ARRAYS if name not in group]
        if missing:
            raise UserInputError(f"{self.path}: not a feature cache (missing {', '.join(missing)})")
        self.attributes: dict[str, Any] = dict(group.attrs)
        self.offsets: np.ndarray = self._read_whole(group, "offsets")
        self.ids: list[str] = [str(value) for value in self._read_whole(group, "utt_ids")]
        self._tokens: np.ndarray = self._read_whole(group, "tokens")
        self.token_offsets: np.ndarray = self._read_whole(group, "token_offsets")
        feats = group["feats"]
        self.num_features: int = int(feats.shape[1])
        self._index = {utt_id: index for index, utt_id in enumerate(self.ids)}
        self._feats: zarr.Array | None = feats  # reopened in each process that reads
        self._opened_in: int | None = os.getpid()
        self._in_memory: np.ndarray | None = None
        self._chunk_frames = int(feats.chunks[0])
        self._num_chunks = -(-int(feats.shape[0]) // self._chunk_frames)
        #: (key, recorded size) of each chunk of ``feats``, checked before it is read
        recorded = record["arrays"].get("feats", {})
        self._chunk_files: list[tuple[str, int]] = []
        for chunk in range(self._num_chunks):
            key = feats.metadata.encode_chunk_key((chunk, 0))
            if key not in recorded:
                raise DamagedFeatureStore(self.path, "chunk is not in the record", "feats", key)
            self._chunk_files.append((key, int(recorded[key][0])))
        self.chunk_cache_bytes = chunk_cache_bytes
        self._chunks: OrderedDict[int, np.ndarray] = OrderedDict()  # decoded, least recent first
        self._chunks_bytes = 0
        if in_memory:
            self.load_into_memory()

    def _read_whole(self, group: zarr.Group, name: str) -> np.ndarray:
        """All of one of the small arrays (a single chunk), a decoding error named."""
        array = group[name]
        try:
            return array[:]
        except Exception as error:  # the codecs' own errors: checksum, decompression, ...
            chunk = array.metadata.encode_chunk_key((0,) * array.ndim)
            raise DamagedFeatureStore(self.path, _decode_problem(error), name, chunk) from None

    def _check_chunk_files(self, first: int, last: int) -> None:
        """Chunks ``first`` to ``last - 1`` of ``feats`` are there with their recorded sizes."""
        for key, size in self._chunk_files[first:last]:
            check_chunk(self.path, "feats", key, size)

    def _decode_error(self, runs: Sequence[Sequence[int]], error: Exception) -> DamagedFeatureStore:
        """The first chunk of ``runs`` ([first, last) pairs) that fails to decode, named."""
        frames = self._frames_array()
        size = self._chunk_frames
        for first, last in runs:
            for chunk in range(first, last):
                try:
                    frames[chunk * size : (chunk + 1) * size]
                except Exception as one:
                    key = self._chunk_files[chunk][0]
                    return DamagedFeatureStore(self.path, _decode_problem(one), "feats", key)
        keys = ", ".join(self._chunk_files[first][0] for first, _ in runs)
        return DamagedFeatureStore(self.path, _decode_problem(error), "feats", f"from {keys}")

    def _read_all(self) -> np.ndarray:
        self._check_chunk_files(0, self._num_chunks)
        try:
            return self._frames_array()[:]
        except Exception as error:
            raise self._decode_error([(0, self._num_chunks)], error) from None

    def load_into_memory(self) -> None:
        """Read every frame now, in one bulk read; later reads are slices of memory."""
        if self._in_memory is None:
            self._in_memory = self._read_all()
            self._chunks.clear()
            self._chunks_bytes = 0

    @property
    def in_memory(self) -> bool:
        """Whether every frame is held in memory (``load_into_memory`` has run)."""
        return self._in_memory is not None

    @property
    def feats_bytes(self) -> int:
        """Uncompressed size of every frame of the store (what ``load_into_memory`` holds)."""
        return int(self.offsets[-1]) * self.num_features * 4

    @property
    def settings(self) -> dict[str, Any]:
        """The feature settings the frames were computed with."""
        return dict(self.attributes.get("feature_settings", {}))

    @property
    def num_frames(self) -> np.ndarray:
        """Frames per utterance (int64 array)."""
        return np.diff(self.offsets)

    @property
    def num_tokens(self) -> np.ndarray:
        """Tokens per utterance (int64 array)."""
        return np.diff(self.token_offsets)

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self, utt_id: str) -> int:
        """Position of an utterance id; KeyError names the id and the store."""
        try:
            return self._index[utt_id]
        except KeyError:
            raise KeyError(f"{utt_id!r} is not in {self.path}") from None

    def _frames_array(self) -> zarr.Array:
        if self._feats is None or self._opened_in != os.getpid():
            self._feats = zarr.open_array(self.path / "feats", mode="r")
            self._opened_in = os.getpid()
        return self._feats

    def feats(self, index: int) -> np.ndarray:
        """Frames of utterance ``index``: float32 (frames, dims)."""
        return self.feats_many([index])[0]

    def feats_many(self, indices: Sequence[int]) -> list[np.ndarray]:
        """Frames of several utterances; the chunks they need and lack are read in one call."""
        bounds = [(int(self.offsets[i]), int(self.offsets[i + 1])) for i in indices]
        if self._in_memory is not None:
            return [self._in_memory[start:end] for start, end in bounds]
        size = self._chunk_frames
        needed = sorted(
            {chunk for start, end in bounds for chunk in range(start // size, -(-end // size))}
        )
        self._read_chunks([chunk for chunk in needed if chunk not in self._chunks])
        blocks = {chunk: self._use_chunk(chunk) for chunk in needed}
        result = []
        for start, end in bounds:
            pieces = [
                blocks[chunk][max(start - chunk * size, 0) : end - chunk * size]
                for chunk in range(start // size, -(-end // size))
            ]
            if not pieces:
                result.append(np.zeros((0, self.num_features), np.float32))
            elif len(pieces) == 1:
                result.append(pieces[0].copy())
            else:
                result.append(np.concatenate(pieces))
        self._shrink_chunk_cache()
        return result

    def _use_chunk(self, chunk: int) -> np.ndarray:
        self._chunks.move_to_end(chunk)
        return self._chunks[chunk]

    def _read_chunks(self, missing: Sequence[int]) -> None:
        """Decode the chunks in ``missing`` (sorted) into the chunk cache.

        Each run of adjacent missing chunks is one read, the runs read concurrently. When the
        whole store fits the chunk cache, a run also takes the uncached chunks after it, up to
        ``READ_AHEAD_BYTES`` from its start (an epoch needs every chunk anyway, and each read
        costs more than decoding a chunk).
        """
        if not missing:
            return
        fits = self.feats_bytes <= self.chunk_cache_bytes
        runs: list[list[int]] = []
        for chunk in missing:
            if runs and chunk <= runs[-1][1]:
                runs[-1][1] = max(runs[-1][1], chunk + 1)
            else:
                runs.append([chunk, chunk + 1])
        if fits:
            chunk_bytes = self._chunk_frames * self.num_features * 4
            ahead = max(1, READ_AHEAD_BYTES // chunk_bytes)
            for run in runs:
                limit = min(run[0] + ahead, self._num_chunks)
                while run[1] < limit and run[1] not in self._chunks:
                    run[1] += 1
            merged: list[list[int]] = []
            for run in runs:  # a run read ahead may have reached the next
                if merged and run[0] <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], run[1])
                else:
                    merged.append(run)
            runs = merged
        size = self._chunk_frames
        for first, last in runs:
            self._check_chunk_files(first, last)
        spans = [(first * size, last * size) for first, last in runs]
        try:
            blocks = self._read_spans(spans)
        except Exception as error:  # the codecs' own errors: checksum, decompression, ...
            raise self._decode_error(runs, error) from None
        for (first, last), block in zip(runs, blocks, strict=True):
            for chunk in range(first, last):
                if chunk in self._chunks:
                    continue
                frames = block[(chunk - first) * size : (chunk - first + 1) * size]
                if not fits:  # its own memory, so that dropping it frees it
                    frames = frames.copy()
                self._chunks[chunk] = frames
                self._chunks_bytes += frames.nbytes

    def _read_spans(self, spans: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        if len(spans) == 1:
            return [self._frames_array()[spans[0][0] : spans[0][1]]]
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the usual case: no event loop here, so use this process's
            return _event_loop().run_until_complete(self._read_concurrently(spans))
        # inside a running loop (a notebook): one read after another
        return [self._frames_array()[first:last] for first, last in spans]

    def _shrink_chunk_cache(self) -> None:
        """Drop least recently used chunks until the cache fits its budget."""
        while self._chunks_bytes > self.chunk_cache_bytes and len(self._chunks) > 1:
            _, frames = self._chunks.popitem(last=False)
            self._chunks_bytes -= frames.nbytes

    async def _read_concurrently(self, spans: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        frames = self._frames_array().async_array
        reads = [frames.getitem((slice(first, last), slice(None))) for first, last in spans]
        return [np.asarray(block) for block in await asyncio.gather(*reads)]

    def all_feats(self) -> np.ndarray:
        """Every frame of the store in one read: float32 (total frames, dims)."""
        if self._in_memory is not None:
            return self._in_memory
        return self._read_all()

    def tokens(self, index: int) -> np.ndarray:
        """48-phone token ids of utterance ``index`` (int32)."""
        return self._tokens[self.token_offsets[index] : self.token_offsets[index + 1]].copy()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_feats"] = None
        state["_opened_in"] = None
        state["_chunks"] = OrderedDict()
        state["_chunks_bytes"] = 0
        return state
