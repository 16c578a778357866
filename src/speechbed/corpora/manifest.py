"""Utterance manifests: one JSON object per line, one file per corpus partition.

Written by scripts/prep_timit.py; read by the feature cache (speechbed.features) and decoding.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from speechbed.errors import UserInputError
from speechbed.outputs import atomic_output, write_text_atomic

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


def write_manifest(path: str | Path, utterances: Iterable[Utterance]) -> None:
    """Write utterances to ``path`` atomically (speechbed.outputs: temporary file, then rename)."""
    with atomic_output(path) as temporary, temporary.open("w", encoding="utf-8") as stream:
        for utterance in utterances:
            stream.write(utterance.to_json() + "\n")


def read_manifest(path: str | Path) -> list[Utterance]:
    """Read a manifest; a malformed line is an error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: manifest not found (run scripts/prep_timit.py first)")
    utterances = []
    with path.open(encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                utterances.append(Utterance.from_json(line))
            except (ValueError, TypeError, KeyError) as error:
                raise UserInputError(f"{path}:{number}: not a manifest record: {error}") from None
    return utterances


def manifest_hash(path: str | Path) -> str:
    """SHA-256 of a manifest file's bytes (stored in feature caches to detect stale caches)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_tokens(path: str | Path, tokens: Iterable[str]) -> None:
    """Write a token list, one per line, atomically."""
    write_text_atomic(path, "".join(f"{token}\n" for token in tokens))


def read_tokens(path: str | Path) -> list[str]:
    """Read a token list; line index = token id."""
    return Path(path).read_text(encoding="utf-8").split()
