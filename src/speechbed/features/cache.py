"""The feature cache: one zarr v3 store per corpus partition and feature, one writer, one reader.

Written by speechbed.features.build (scripts/compute_features.py); read by the training loader.

Layout of ``<partition>.zarr``:

- ``feats``: float32, (total frames, dims), all utterances' frames concatenated, chunked, compressed
- ``offsets``: int64, (utterances + 1,); utterance i owns ``feats[offsets[i]:offsets[i + 1]]``
- ``utt_ids``: str, (utterances,)
- ``tokens``: int32, 48-phone token ids concatenated; ``token_offsets`` (utterances + 1,) int64
- attributes: ``feature_settings`` (mapping), ``settings_hash``, ``manifest_hash`` and more
"""

from __future__ import annotations

import asyncio
import bisect
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from speechbed.errors import UserInputError

#: Uncompressed bytes per chunk of ``feats``: a few utterances (fewer, larger reads are faster
#: through zarr; a random utterance still decodes at most two chunks).
CHUNK_BYTES = 1 << 20
_COMPRESSOR = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
_REQUIRED_ARRAYS = ("feats", "offsets", "utt_ids", "tokens", "token_offsets")


def _offsets(counts: Sequence[int]) -> np.ndarray:
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(np.asarray(counts, dtype=np.int64), out=offsets[1:])
    return offsets


class FeatureStoreWriter:
    """Writes one store under a temporary name; ``commit()`` renames it into place.

    Use as a context manager: leaving it without ``commit()`` (an error) removes the
    temporary store, so nothing half-written is ever at ``path``.
    """

    def __init__(
        self,
        path: str | Path,
        utt_ids: Sequence[str],
        num_frames: Sequence[int],
        num_features: int,
        tokens: Sequence[Sequence[int]],
        attributes: dict[str, Any],
    ) -> None:
        if not len(utt_ids) == len(num_frames) == len(tokens):
            raise ValueError("utt_ids, num_frames and tokens must have one entry per utterance")
        self.path = Path(path)
        self.temporary_path = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")
        self.offsets = _offsets(num_frames)
        self.num_features = num_features
        shutil.rmtree(self.temporary_path, ignore_errors=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(self.temporary_path, mode="w", zarr_format=3)
        chunk_frames = max(1, CHUNK_BYTES // (4 * num_features))
        total = int(self.offsets[-1])
        self._feats = group.create_array(
            "feats",
            shape=(total, num_features),
            dtype="float32",
            chunks=(max(1, min(chunk_frames, total)), num_features),
            compressors=_COMPRESSOR,
        )
        group.create_array("offsets", data=self.offsets, chunks=(len(self.offsets),))
        ids = np.array(list(utt_ids), dtype=np.dtypes.StringDType())
        group.create_array("utt_ids", data=ids, chunks=(max(1, len(ids)),))
        flat = [np.asarray(t, dtype=np.int32).reshape(-1) for t in tokens]
        token_offsets = _offsets([len(t) for t in flat])
        concatenated = np.concatenate(flat) if flat else np.zeros(0, dtype=np.int32)
        group.create_array(
            "tokens",
            data=concatenated.astype(np.int32),
            chunks=(max(1, len(concatenated)),),
            compressors=_COMPRESSOR,
        )
        group.create_array("token_offsets", data=token_offsets, chunks=(len(token_offsets),))
        group.attrs.update(attributes)
        self._written = np.zeros(len(utt_ids), dtype=bool)

    def write(self, first_index: int, feats: Sequence[np.ndarray]) -> None:
        """Write the frames of utterances ``first_index, first_index + 1, ...`` in one call."""
        if not feats:
            return
        last_index = first_index + len(feats)
        for index, block in enumerate(feats, start=first_index):
            expected = (int(self.offsets[index + 1] - self.offsets[index]), self.num_features)
            if block.shape != expected:
                raise ValueError(f"utterance {index}: frames {block.shape}, expected {expected}")
        start, end = int(self.offsets[first_index]), int(self.offsets[last_index])
        if end > start:
            self._feats[start:end] = np.concatenate(feats).astype(np.float32, copy=False)
        self._written[first_index:last_index] = True

    def commit(self) -> Path:
        """Rename the complete store into place (replacing an older one); returns its path."""
        missing = np.flatnonzero(~self._written)
        if missing.size:
            raise RuntimeError(
                f"{missing.size} utterance(s) were never written, e.g. #{missing[0]}"
            )
        old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
        if self.path.exists():
            os.replace(self.path, old)
        os.replace(self.temporary_path, self.path)
        shutil.rmtree(old, ignore_errors=True)
        return self.path

    def discard(self) -> None:
        shutil.rmtree(self.temporary_path, ignore_errors=True)

    def __enter__(self) -> FeatureStoreWriter:
        return self

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        if self.temporary_path.exists():
            self.discard()


def read_store_attributes(path: str | Path) -> dict[str, Any] | None:
    """A store's attributes, or None when ``path`` holds no readable store."""
    try:
        return dict(zarr.open_group(Path(path), mode="r").attrs)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError, KeyError):
        return None


class FeatureCache:
    """Reads one store: ids, frame counts and tokens up front; frames on demand.

    Picklable and safe with DataLoader workers: the frames array is opened lazily in each
    process that reads it. With ``in_memory=True`` every frame is read once, in one bulk read
    (the fastest way through an epoch when the partition fits in memory; workers forked
    afterwards share the pages).
    """

    def __init__(self, path: str | Path, in_memory: bool = False) -> None:
        self.path = Path(path)
        try:
            group = zarr.open_group(self.path, mode="r")
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            raise UserInputError(
                f"{self.path}: no feature cache here (run scripts/compute_features.py)"
            ) from None
        missing = [name for name in _REQUIRED_ARRAYS if name not in group]
        if missing:
            raise UserInputError(f"{self.path}: not a feature cache (missing {', '.join(missing)})")
        self.attributes: dict[str, Any] = dict(group.attrs)
        self.offsets: np.ndarray = group["offsets"][:]
        self.ids: list[str] = [str(value) for value in group["utt_ids"][:]]
        self._tokens: np.ndarray = group["tokens"][:]
        self.token_offsets: np.ndarray = group["token_offsets"][:]
        self.num_features: int = int(group["feats"].shape[1])
        self._index = {utt_id: index for index, utt_id in enumerate(self.ids)}
        self._feats: zarr.Array | None = None
        self._opened_in: int | None = None
        self._in_memory: np.ndarray | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._chunk_frames = int(group["feats"].chunks[0])
        self._recent: tuple[int, np.ndarray] = (0, np.zeros((0, self.num_features), np.float32))
        if in_memory:
            self.load_into_memory()

    def load_into_memory(self) -> None:
        """Read every frame now, in one bulk read; later reads are slices of memory."""
        if self._in_memory is None:
            self._in_memory = self._frames_array()[:]

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
            self._loop = None  # a loop made in a parent process is no use here
            self._opened_in = os.getpid()
        return self._feats

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """This process's loop for concurrent reads, kept so its worker threads are reused."""
        self._frames_array()
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop

    def _chunk_span(self, start: int, end: int) -> tuple[int, int]:
        """The frames of the whole chunks that hold frames ``start:end``."""
        size = self._chunk_frames
        return start // size * size, -(-end // size) * size

    def feats(self, index: int) -> np.ndarray:
        """Frames of utterance ``index``: float32 (frames, dims)."""
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        if self._in_memory is not None:
            return self._in_memory[start:end]
        # zarr decodes whole chunks anyway: keep the last chunks read, so that reading
        # utterances in store order decodes each chunk once
        first, frames = self._recent
        if not (first <= start and end <= first + len(frames)):
            first, last = self._chunk_span(start, end)
            frames = self._frames_array()[first:last]
            self._recent = (first, frames)
        return frames[start - first : end - first].copy()

    def feats_many(self, indices: Sequence[int]) -> list[np.ndarray]:
        """Frames of several utterances: each chunk they touch is read once, reads concurrent."""
        if self._in_memory is not None or len(indices) < 2:
            return [self.feats(index) for index in indices]
        bounds = [(int(self.offsets[i]), int(self.offsets[i + 1])) for i in indices]
        spans: list[list[int]] = []  # merged whole-chunk spans, in store order
        for first, last in sorted({self._chunk_span(s, e) for s, e in bounds if e > s}):
            if spans and first <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], last)
            else:
                spans.append([first, last])
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the usual case: no event loop here, so use our own
            blocks = self._event_loop().run_until_complete(self._read_concurrently(spans))
        else:  # inside a running loop (a notebook): one read after another
            blocks = [self._frames_array()[first:last] for first, last in spans]
        starts = [first for first, _ in spans]
        result = []
        for start, end in bounds:
            if end == start:
                result.append(np.zeros((0, self.num_features), np.float32))
                continue
            span = bisect.bisect_right(starts, start) - 1
            result.append(blocks[span][start - starts[span] : end - starts[span]].copy())
        return result

    async def _read_concurrently(self, spans: Sequence[Sequence[int]]) -> list[np.ndarray]:
        frames = self._frames_array().async_array
        reads = [frames.getitem((slice(first, last), slice(None))) for first, last in spans]
        return [np.asarray(block) for block in await asyncio.gather(*reads)]

    def all_feats(self) -> np.ndarray:
        """Every frame of the store in one read: float32 (total frames, dims)."""
        if self._in_memory is not None:
            return self._in_memory
        return self._frames_array()[:]

    def tokens(self, index: int) -> np.ndarray:
        """48-phone token ids of utterance ``index`` (int32)."""
        return self._tokens[self.token_offsets[index] : self.token_offsets[index + 1]].copy()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_feats"] = None
        state["_opened_in"] = None
        state["_loop"] = None
        state["_recent"] = (0, np.zeros((0, self.num_features), np.float32))
        return state
