"""Utterance manifests: one JSON object per line, one file per corpus partition.

Written by scripts/prep_timit.py; read by the feature cache (speechbed.features) and decoding.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from speechbed.errors import UserInputError
from speechbed.outputs import atomic_output, write_text_atomic

#: A manifest record type (an utterance, a mixture, a keyword clip).
Record = TypeVar("Record")

#: File name of a partition's manifest inside a manifest folder.
MANIFEST_SUFFIX = ".jsonl"
#: File name of the 48-phone token list (one phone per line; line index = token id).
TOKENS_FILE = "tokens_48.txt"


@dataclass(frozen=True)
class Segment:
    """A labelled stretch of audio, in samples: ``start`` inclusive, ``end`` exclusive."""

    start: int
    end: int
    label: str


@dataclass(frozen=True)
class Utterance:
    """One utterance of a partition with its alignments and its phones in the three sets."""

    id: str  # "<speaker>-<prompt>", lowercase, e.g. "fdhc0-si1559"
    speaker: str
    dialect: str  # "dr1" .. "dr8"
    gender: str  # "m" | "f"
    audio_path: str  # absolute path of the SPHERE .WAV
    num_samples: int
    text: str
    words: list[Segment] = field(default_factory=list)
    phones: list[Segment] = field(default_factory=list)  # the .PHN alignment, 61-set labels, q kept
    phones_61: list[str] = field(default_factory=list)  # q deleted
    phones_48: list[str] = field(default_factory=list)
    phones_39: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Utterance:
        record = json.loads(text)
        record["words"] = [Segment(**segment) for segment in record["words"]]
        record["phones"] = [Segment(**segment) for segment in record["phones"]]
        return cls(**record)


def manifest_path(folder: str | Path, partition: str) -> Path:
    """Where a partition's manifest lives inside a manifest folder."""
    return Path(folder) / f"{partition}{MANIFEST_SUFFIX}"


def write_json_lines(path: str | Path, records: Iterable[Any]) -> None:
    """Write records (each with ``to_json()``) to ``path``, one per line, atomically
    (speechbed.outputs: temporary file, then rename). Every JSON Lines manifest is written so."""
    with atomic_output(path) as temporary, temporary.open("w", encoding="utf-8") as stream:
        for record in records:
            stream.write(record.to_json() + "\n")


def read_json_lines(
    path: str | Path,
    parse: Callable[[str], Record],
    *,
    missing: str,
    record: str,
    check: Callable[[Record], str | None] | None = None,
) -> list[Record]:
    """The records of a JSON Lines manifest, each line through ``parse`` (blank lines skipped).

    A missing file is a UserInputError ``<path>: <missing>``; a line ``parse`` refuses, or one
    whose record ``check`` finds a problem with, is one naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: {missing}")
    records = []
    with path.open(encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                parsed = parse(line)
            except (ValueError, TypeError, KeyError) as error:
                raise UserInputError(f"{path}:{number}: not a {record} record: {error}") from None
            problem = check(parsed) if check is not None else None
            if problem is not None:
                raise UserInputError(f"{path}:{number}: {problem}")
            records.append(parsed)
    return records


def write_manifest(path: str | Path, utterances: Iterable[Utterance]) -> None:
    """Write utterances to ``path`` atomically."""
    write_json_lines(path, utterances)


def read_manifest(path: str | Path) -> list[Utterance]:
    """Read a manifest; a malformed line is an error naming the file and line."""
    return read_json_lines(
        path,
        Utterance.from_json,
        missing="manifest not found (run scripts/prep_timit.py first)",
        record="manifest",
    )


def manifest_hash(path: str | Path) -> str:
    """SHA-256 of a manifest file's bytes (stored in feature caches to detect stale caches)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_tokens(path: str | Path, tokens: Iterable[str]) -> None:
    """Write a token list, one per line, atomically."""
    write_text_atomic(path, "".join(f"{token}\n" for token in tokens))


def read_tokens(path: str | Path) -> list[str]:
    """Read a token list; line index = token id."""
    return Path(path).read_text(encoding="utf-8").split()
