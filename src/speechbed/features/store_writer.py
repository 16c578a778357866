"""Writes a feature store (layout in speechbed.features.cache) under a temporary name, then renames it.

Called by speechbed.features.build (scripts/compute_features.py) and by tests that need a store.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from speechbed.features.integrity import record_store
from speechbed.outputs import atomic_output

#: Uncompressed bytes per chunk of ``feats``: a few utterances (fewer, larger reads are faster
#: through zarr; a random utterance still decodes at most two chunks).
CHUNK_BYTES = 1 << 20
#: Blosc, then a CRC-32C of the compressed bytes: on reading, the checksum is checked first.
CODECS = (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"), Crc32cCodec())
#: Chunks of zeros are written too, so that a missing chunk file is never read as zeros.
ARRAY_CONFIG = {"write_empty_chunks": True}
#: The arrays of every store (the reader refuses a store that lacks one).
REQUIRED_ARRAYS = ("feats", "offsets", "utt_ids", "tokens", "token_offsets")


def _offsets(counts: Sequence[int]) -> np.ndarray:
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(np.asarray(counts, dtype=np.int64), out=offsets[1:])
    return offsets


class _NotCommitted(Exception):
    """Ends a writer's temporary output when it is left without ``commit()``."""


class FeatureStoreWriter:
    """Writes one store under a temporary name; ``commit()`` records it and renames it into place.

    Use as a context manager: leaving it without ``commit()`` (an error) removes the
    temporary store, so nothing half-written is ever at ``path``. The temporary name and the
    rename follow speechbed.outputs (``.<name>.partial-<pid>``; leftovers of dead processes
    are removed by the next writer).
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
        self.offsets = _offsets(num_frames)
        self.num_features = num_features
        self._output: contextlib.AbstractContextManager[Path] | None = atomic_output(self.path)
        self.temporary_path = self._output.__enter__()
        try:
            self._create(utt_ids, tokens, attributes)
        except BaseException as error:
            self._finish(error)
            raise
        self._written = np.zeros(len(utt_ids), dtype=bool)

    def _create(
        self, utt_ids: Sequence[str], tokens: Sequence[Sequence[int]], attributes: dict[str, Any]
    ) -> None:
        group = zarr.open_group(self.temporary_path, mode="w", zarr_format=3)
        chunk_frames = max(1, CHUNK_BYTES // (4 * self.num_features))
        total = int(self.offsets[-1])
        common = {"compressors": CODECS, "config": ARRAY_CONFIG}
        self._feats = group.create_array(
            "feats",
            shape=(total, self.num_features),
            dtype="float32",
            chunks=(max(1, min(chunk_frames, total)), self.num_features),
            **common,
        )
        group.create_array("offsets", data=self.offsets, chunks=(len(self.offsets),), **common)
        ids = np.array(list(utt_ids), dtype=np.dtypes.StringDType())
        group.create_array("utt_ids", data=ids, chunks=(max(1, len(ids)),), **common)
        flat = [np.asarray(t, dtype=np.int32).reshape(-1) for t in tokens]
        token_offsets = _offsets([len(t) for t in flat])
        concatenated = np.concatenate(flat) if flat else np.zeros(0, dtype=np.int32)
        group.create_array(
            "tokens",
            data=concatenated.astype(np.int32),
            chunks=(max(1, len(concatenated)),),
            **common,
        )
        group.create_array(
            "token_offsets", data=token_offsets, chunks=(len(token_offsets),), **common
        )
        group.attrs.update(attributes)
        self._group = group

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
        """Record the complete store (speechbed.features.integrity) and rename it into place.

        Replaces an older store at ``path``; returns ``path``.
        """
        missing = np.flatnonzero(~self._written)
        if missing.size:
            raise RuntimeError(
                f"{missing.size} utterance(s) were never written, e.g. #{missing[0]}"
            )
        chunk_keys = {}
        for name in REQUIRED_ARRAYS:
            array = self._group[name]
            grid = itertools.product(*(range(count) for count in array.cdata_shape))
            chunk_keys[name] = [array.metadata.encode_chunk_key(index) for index in grid]
        record_store(self.temporary_path, chunk_keys)
        self._finish(None)
        return self.path

    def _finish(self, error: BaseException | None) -> None:
        """Rename the temporary store into place (``error`` None) or remove it."""
        output, self._output = self._output, None
        if output is not None:
            output.__exit__(None if error is None else type(error), error, None)

    def discard(self) -> None:
        """Remove the temporary store; nothing at ``path`` changes."""
        self._finish(_NotCommitted())

    def __enter__(self) -> FeatureStoreWriter:
        return self

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        if self._output is not None:
            self._finish(error if isinstance(error, BaseException) else _NotCommitted())
