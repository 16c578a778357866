"""Speech recognition manifests in the JSON format of the MLPerf/Myrtle.ai RNN-T recipes.

Written by speechbed.corpora.librispeech and speechbed.corpora.commonvoice; read by the
tokenizer step (speechbed.corpora.tokenizer) and the RNN-T task's datasets.

A manifest is one JSON file holding a list of entries, one per utterance::

    {"transcript": "he hoped there would be stew",
     "files": [{"fname": "test-clean/1089-134686-0000.wav", "channels": 1,
                "sample_rate": 16000, "duration": 10.435, "num_samples": 166960, ...}],
     "original_duration": 10.435, "original_num_samples": 166960}

File names are relative to a data folder (the manifests of speechbed's readers lie in it, as
``<data folder>/<partition>.json``). ``files`` may hold several versions of one utterance
(those recipes kept speed-perturbed copies side by side, marked with ``speed``); keys this
module does not know are kept as they are, so a user's own manifests round-trip unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from speechbed.errors import UserInputError
from speechbed.outputs import write_text_atomic

if TYPE_CHECKING:
    import torch

#: The sample rate every reader converts to and the RNN-T features expect.
TARGET_SAMPLE_RATE = 16000
#: A partition's manifest inside a data folder: ``<partition>.json``.
MANIFEST_SUFFIX = ".json"

_FILE_KEYS = ("fname", "channels", "sample_rate", "duration", "num_samples")
_ENTRY_KEYS = ("transcript", "files", "original_duration", "original_num_samples")


@dataclass(frozen=True)
class AudioFile:
    """One audio file of an entry: its name relative to the data folder and its shape."""

    fname: str
    channels: int
    sample_rate: int
    duration: float  # seconds
    num_samples: int
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. bitdepth, encoding, speed

    def to_json(self) -> dict[str, Any]:
        known = {key: getattr(self, key) for key in _FILE_KEYS}
        return {**known, **self.extra}


@dataclass(frozen=True)
class ManifestEntry:
    """One utterance: its transcript and its audio file(s)."""

    transcript: str
    files: tuple[AudioFile, ...]
    original_duration: float
    original_num_samples: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.original_duration

    def to_json(self) -> dict[str, Any]:
        return {
            "transcript": self.transcript,
            "files": [audio.to_json() for audio in self.files],
            "original_duration": self.original_duration,
            "original_num_samples": self.original_num_samples,
            **self.extra,
        }


def manifest_path(data_folder: str | Path, partition: str) -> Path:
    """Where a partition's manifest lies in a data folder written by speechbed's readers."""
    return Path(data_folder) / f"{partition}{MANIFEST_SUFFIX}"


def entry_for_wav(transcript: str, fname: str, num_samples: int) -> ManifestEntry:
    """The entry of a 16 kHz mono 16-bit WAV file (what speechbed's readers write)."""
    duration = round(num_samples / TARGET_SAMPLE_RATE, 6)
    audio = AudioFile(
        fname=fname,
        channels=1,
        sample_rate=TARGET_SAMPLE_RATE,
        duration=duration,
        num_samples=num_samples,
        extra={"bitdepth": 16, "encoding": "Signed Integer PCM", "speed": 1},
    )
    return ManifestEntry(transcript, (audio,), duration, num_samples)


# --------------------------------------------------------------------------- checking


class _BadEntry(ValueError):
    """A problem at a key path inside one entry (turned into a message naming file and entry)."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}" if where else problem)


def _number(record: Mapping[str, Any], key: str, where: str, kind: type) -> Any:
    if key not in record:
        raise _BadEntry(f"{where}{key}", "missing")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _BadEntry(f"{where}{key}", f"expected a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise _BadEntry(f"{where}{key}", f"expected a finite number >= 0, got {value!r}")
    if kind is int:
        if value != int(value):
            raise _BadEntry(f"{where}{key}", f"expected a whole number, got {value!r}")
        return int(value)
    return float(value)


def _audio_file(record: Any, where: str) -> AudioFile:
    if not isinstance(record, dict):
        raise _BadEntry(where.rstrip("."), f"expected an object, got {type(record).__name__}")
    fname = record.get("fname")
    if not isinstance(fname, str) or not fname.strip():
        raise _BadEntry(f"{where}fname", f"expected a file name, got {fname!r}")
    channels = _number(record, "channels", where, int)
    if channels < 1:
        raise _BadEntry(f"{where}channels", f"expected at least 1, got {channels}")
    sample_rate = _number(record, "sample_rate", where, int)
    if sample_rate < 1:
        raise _BadEntry(f"{where}sample_rate", f"expected a positive rate, got {sample_rate}")
    return AudioFile(
        fname=fname,
        channels=channels,
        sample_rate=sample_rate,
        duration=_number(record, "duration", where, float),
        num_samples=_number(record, "num_samples", where, int),
        extra={key: value for key, value in record.items() if key not in _FILE_KEYS},
    )


def entry_from_json(record: Any) -> ManifestEntry:
    """Check one decoded entry; a ValueError names the key that is wrong."""
    if not isinstance(record, dict):
        raise _BadEntry("", f"expected an object, got {type(record).__name__}")
    transcript = record.get("transcript")
    if not isinstance(transcript, str):
        raise _BadEntry("transcript", f"expected a string, got {transcript!r}")
    files = record.get("files")
    if not isinstance(files, list) or not files:
        raise _BadEntry("files", f"expected a non-empty list, got {files!r}")
    audio = tuple(_audio_file(item, f"files[{index}].") for index, item in enumerate(files))
    return ManifestEntry(
        transcript=transcript,
        files=audio,
        original_duration=_number(record, "original_duration", "", float),
        original_num_samples=_number(record, "original_num_samples", "", int),
        extra={key: value for key, value in record.items() if key not in _ENTRY_KEYS},
    )


# --------------------------------------------------------------------------- reading, writing


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    """Read a manifest; bad input is a UserInputError naming the file, the entry and the key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserInputError(
            f"{path}: manifest not found (make it with the corpus's data_prep pipeline)"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserInputError(f"{path}: cannot read manifest: {error}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserInputError(
            f"{path}:{error.lineno}:{error.colno}: not valid JSON: {error.msg}"
        ) from None
    if not isinstance(document, list):
        raise UserInputError(
            f"{path}: a manifest is a JSON list of entries, got {type(document).__name__}"
        )
    entries = []
    for index, record in enumerate(document):
        try:
            entries.append(entry_from_json(record))
        except ValueError as error:
            raise UserInputError(f"{path}: entry {index}: {error}") from None
    return entries


def write_manifest(path: str | Path, entries: Iterable[ManifestEntry]) -> None:
    """Write entries as a manifest, atomically (speechbed.outputs), one entry per line."""
    lines = [json.dumps(entry.to_json(), ensure_ascii=False) for entry in entries]
    text = "[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n"
    write_text_atomic(path, text)


def read_manifests(paths: Iterable[str | Path]) -> list[ManifestEntry]:
    """The entries of several manifests, in order (e.g. the three LibriSpeech train subsets)."""
    return [entry for path in paths for entry in read_manifest(path)]


def filter_by_duration(
    entries: Iterable[ManifestEntry], max_duration: float | None
) -> list[ManifestEntry]:
    """The entries no longer than ``max_duration`` seconds (all of them when None)."""
    if max_duration is None:
        return list(entries)
    return [entry for entry in entries if entry.original_duration <= max_duration]


# --------------------------------------------------------------------------- audio


def read_audio_16k(path: str | Path) -> np.ndarray:
    """A file's audio as float32 mono at 16 kHz in [-1, 1] (channels averaged, resampled)."""
    import soundfile
    from scipy.signal import resample_poly

    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise UserInputError(f"{path}: cannot read audio: {error}") from None
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if rate != TARGET_SAMPLE_RATE:
        divisor = math.gcd(int(rate), TARGET_SAMPLE_RATE)
        mono = resample_poly(mono, TARGET_SAMPLE_RATE // divisor, int(rate) // divisor)
    return np.asarray(mono, dtype=np.float32)


def audio_path(entry: ManifestEntry, data_folder: str | Path, file_index: int = 0) -> Path:
    """The path of one of an entry's files (``fname`` joined to the data folder)."""
    return Path(data_folder) / entry.files[file_index].fname


def load_audio(entry: ManifestEntry, data_folder: str | Path, file_index: int = 0) -> torch.Tensor:
    """An entry's audio as a float32 tensor (samples,) at 16 kHz, mono, in [-1, 1]."""
    import torch

    return torch.from_numpy(read_audio_16k(audio_path(entry, data_folder, file_index)))
