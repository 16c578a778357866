"""Integrity records of feature stores: what a completed store holds, checked whenever it is opened.

``FeatureStoreWriter.commit`` (speechbed.features.store_writer) records a store before renaming it into
place; ``FeatureCache`` checks the record on opening and before reading chunks; the builder
(``build_feature_cache``) rebuilds a store that fails the check.

The record, ``<store>/speechbed-integrity.json``, holds a digest of every ``zarr.json`` (array
metadata and attributes) and, per array, every chunk file's key, size and digest (SHA-256;
not a CRC-32C: a chunk file ends in its own CRC-32C, and the CRC of such bytes is the same
constant for every chunk). Opening a store checks the metadata digests and that every chunk
file is there with its size (a ``stat`` each, never a read); ``verify`` also checks every
chunk's digest. The store's lineage fingerprint (``speechbed.lineage.FINGERPRINT_FILE``) is a
digest of the record, so the pipeline sees a changed store without reading it, and a store
rebuilt with the same content keeps it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from speechbed.errors import UserInputError
from speechbed.lineage import digest, write_folder_fingerprint

INTEGRITY_FILE = "speechbed-integrity.json"
METADATA_FILE = "zarr.json"
RECORD_FORMAT = 1


class DamagedFeatureStore(UserInputError):
    """A feature store differs from what was recorded when it was completed, or cannot be read."""

    def __init__(
        self, store: str | Path, problem: str, array: str | None = None, chunk: str | None = None
    ) -> None:
        self.store = Path(store)
        self.array = array
        self.chunk = chunk
        where = f"array {array}, chunk {chunk}: " if chunk else f"array {array}: " if array else ""
        #: What is wrong and where, without the advice (for a one-line report).
        self.problem = f"{where}{problem}"
        super().__init__(
            f"{self.store}: damaged feature store: {self.problem}; rerun "
            "scripts/compute_features.py (it rebuilds damaged stores)"
        )


def _metadata_files(store: Path) -> list[str]:
    """Relative paths of every ``zarr.json`` under ``store`` (hidden folders left out), sorted."""
    found = []
    for directory, subfolders, files in os.walk(store):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        if METADATA_FILE in files:
            found.append((Path(directory) / METADATA_FILE).relative_to(store).as_posix())
    return sorted(found)


def _file_digest(path: Path) -> str:
    return digest([path.read_bytes()])


def record_store(store: str | Path, chunk_keys: Mapping[str, Iterable[str]]) -> str:
    """Record a complete store's metadata and chunks (keys per array); returns its fingerprint.

    Called before the store is renamed into place. Every key must have its chunk file
    (arrays are written with ``write_empty_chunks``, so a missing file is a damaged store).
    """
    store = Path(store)
    arrays: dict[str, dict[str, list[Any]]] = {}
    for array, keys in sorted(chunk_keys.items()):
        chunks = arrays[array] = {}
        for key in keys:
            path = store / array / key
            try:
                chunks[key] = [path.stat().st_size, _file_digest(path)]
            except FileNotFoundError:
                raise RuntimeError(f"{store}: chunk {key} of {array} was never written") from None
    record = {
        "format": RECORD_FORMAT,
        "metadata": {name: _file_digest(store / name) for name in _metadata_files(store)},
        "arrays": arrays,
    }
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    (store / INTEGRITY_FILE).write_text(text + "\n", encoding="utf-8")
    value = digest([text])
    write_folder_fingerprint(store, value)
    return value


def read_record(store: str | Path) -> dict[str, Any]:
    """A store's integrity record; ``DamagedFeatureStore`` when it is missing or unreadable."""
    store = Path(store)
    try:
        record = json.loads((store / INTEGRITY_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DamagedFeatureStore(
            store,
            f"no integrity record ({INTEGRITY_FILE}): written by an older speechbed or never "
            "completed",
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DamagedFeatureStore(store, f"unreadable {INTEGRITY_FILE} ({error})") from None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise DamagedFeatureStore(store, f"{INTEGRITY_FILE} is not a format {RECORD_FORMAT} record")
    return record


def check_chunk(store: Path, array: str, key: str, size: int, checksum: str | None = None) -> None:
    """One chunk file is there with ``size`` bytes (and ``checksum`` when given)."""
    path = store / array / key
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        raise DamagedFeatureStore(store, "chunk file is missing", array, key) from None
    except OSError as error:
        raise DamagedFeatureStore(store, f"cannot read chunk file ({error})", array, key) from None
    if actual != size:
        raise DamagedFeatureStore(
            store, f"chunk file has {actual} bytes, {size} when the store was written", array, key
        )
    if checksum is not None:
        try:
            actual_checksum = _file_digest(path)
        except OSError as error:
            raise DamagedFeatureStore(
                store, f"cannot read chunk file ({error})", array, key
            ) from None
        if actual_checksum != checksum:
            raise DamagedFeatureStore(store, "chunk fails its checksum (SHA-256)", array, key)


def check_store(store: str | Path, verify: bool = False) -> dict[str, Any]:
    """Check a store against its record (with ``verify``, every chunk's checksum too).

    Returns the record; raises ``DamagedFeatureStore`` naming the array and chunk at fault.
    """
    store = Path(store)
    record = read_record(store)
    recorded = record.get("metadata", {})
    for name in sorted(set(recorded) | set(_metadata_files(store))):
        array = name.rpartition("/")[0] or None
        what = f"metadata ({name})" if array else f"attributes or metadata ({name})"
        path = store / name
        if name not in recorded:
            raise DamagedFeatureStore(store, f"{what} was added after the store was written")
        try:
            current = _file_digest(path)
        except FileNotFoundError:
            raise DamagedFeatureStore(store, f"{what} is missing", array) from None
        except OSError as error:
            raise DamagedFeatureStore(store, f"cannot read {what} ({error})", array) from None
        if current != recorded[name]:
            raise DamagedFeatureStore(store, f"{what} changed since it was written", array)
    for array, chunks in sorted(record.get("arrays", {}).items()):
        for key, (size, checksum) in chunks.items():
            check_chunk(store, array, key, size, checksum if verify else None)
    return record


def count_chunks(record: Mapping[str, Any]) -> int:
    """How many chunk files a record lists."""
    return sum(len(chunks) for chunks in record.get("arrays", {}).values())
