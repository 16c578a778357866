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

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from speechbed.errors import UserInputError

#: Uncompressed bytes per chunk of ``feats``: a few utterances, so one read decodes little.
CHUNK_BYTES = 1 << 18
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
        self._in_memory: np.ndarray | None = group["feats"][:] if in_memory else None
        self._chunk_frames = int(group["feats"].chunks[0])
        self._recent: tuple[int, np.ndarray] = (0, np.zeros((0, self.num_features), np.float32))

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
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        if self._in_memory is not None:
            return self._in_memory[start:end]
        # zarr decodes whole chunks anyway: keep the last chunks read, so that reading
        # utterances in store order decodes each chunk once
        first, frames = self._recent
        if not (first <= start and end <= first + len(frames)):
            first = start // self._chunk_frames * self._chunk_frames
            last = -(-end // self._chunk_frames) * self._chunk_frames
            frames = self._frames_array()[first:last]
            self._recent = (first, frames)
        return frames[start - first : end - first].copy()

    def feats_many(self, indices: Sequence[int]) -> list[np.ndarray]:
        """Frames of several utterances, fetched in one read of the store."""
        if self._in_memory is not None or len(indices) < 2:
            return [self.feats(index) for index in indices]
        starts = self.offsets[np.asarray(indices)]
        counts = self.offsets[np.asarray(indices) + 1] - starts
        if counts.sum() == 0:
            return [np.zeros((0, self.num_features), np.float32) for _ in indices]
        rows = np.concatenate([np.arange(s, s + c) for s, c in zip(starts, counts, strict=True)])
        frames = self._frames_array().get_orthogonal_selection((rows, slice(None)))
        return np.split(frames, np.cumsum(counts)[:-1])

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
        state["_recent"] = (0, np.zeros((0, self.num_features), np.float32))
        return state
