"""The TIMIT LDC layout: find speakers and utterances, read alignments, build the standard partitions.

Called by scripts/prep_timit.py, which writes the manifests; the same code reads real and synthetic TIMIT.

Layout: ``<root>/{TRAIN,TEST}/DR<n>/<M|F><3 letters><digit>/<SA1|SI*|SX*>.{WAV,PHN,WRD,TXT}``,
folder and file names in either case (``<root>`` may also hold them one folder down, as
the disc's ``TIMIT/`` folder). Partitions: ``train`` = SI+SX of every TRAIN speaker, ``dev``
= SI+SX of the 50 speakers of Halberstadt's list, ``test`` = SI+SX of the 24 core-test
speakers. SA sentences (read by everyone) are excluded everywhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from speechbed import PACKAGE_DATA
from speechbed.code_versions import CODE_VERSIONS
from speechbed.corpora.manifest import (
    TOKENS_FILE,
    Segment,
    Utterance,
    manifest_path,
    write_manifest,
    write_tokens,
)
from speechbed.corpora.phones import PHONES_48, PHONES_61, fold_61_to_39, fold_61_to_48
from speechbed.corpora.sphere import TIMIT_SAMPLE_RATE, read_sphere_header
from speechbed.errors import UserInputError
from speechbed.lineage import digest, fingerprint
from speechbed.outputs import make_folder, write_text_atomic

PARTITIONS = ("train", "dev", "test")
#: Utterances per partition in the real corpus (checked by ``strict``).
TIMIT_COUNTS = {"train": 3696, "dev": 400, "test": 192}
#: Speakers per LDC split folder in the real corpus.
TIMIT_SPEAKER_COUNTS = {"train": 462, "test": 168}
SPEAKER_PATTERN = re.compile(r"[mf][a-z]{3}[0-9]")
DIALECT_PATTERN = re.compile(r"dr[1-8]")
PROMPT_PATTERN = re.compile(r"s[aix][0-9]+")
#: Extensions an utterance needs, lowercase.
UTTERANCE_FILES = ("wav", "phn", "wrd", "txt")


def read_speaker_list(name: str) -> list[str]:
    """A standard speaker list from the package data: ``core_spk`` or ``dev50_spk``."""
    return (PACKAGE_DATA / f"{name}.lst").read_text().split()


CORE_TEST_SPEAKERS: tuple[str, ...] = tuple(read_speaker_list("core_spk"))
DEV_SPEAKERS: tuple[str, ...] = tuple(read_speaker_list("dev50_spk"))
_CORE = frozenset(CORE_TEST_SPEAKERS)
_DEV = frozenset(DEV_SPEAKERS)
_PHONE_LABELS = frozenset(PHONES_61)


@dataclass(frozen=True)
class SpeakerFolder:
    """One speaker's folder: LDC split (``train``/``test``), dialect, id (lowercase)."""

    split: str
    dialect: str
    speaker: str
    path: Path

    @property
    def gender(self) -> str:
        return self.speaker[0]


def _entries_by_lowercase(folder: Path) -> dict[str, Path]:
    """Children of ``folder`` keyed by lowercase name; two names equal but for case are an error."""
    entries: dict[str, Path] = {}
    for child in folder.iterdir():
        key = child.name.lower()
        if key in entries:
            raise UserInputError(
                f"{folder}: both {entries[key].name} and {child.name} exist; "
                "TIMIT names are case-insensitive, keep one"
            )
        entries[key] = child
    return entries


def find_ldc_root(path: str | Path) -> Path:
    """The folder holding TRAIN and TEST: ``path`` itself or one folder below it."""
    path = Path(path)
    if not path.is_dir():
        raise UserInputError(
            f"{path}: TIMIT folder not found (point DATA_DIRECTORY at the folder holding timit/)"
        )
    candidates = [path] + sorted(child for child in path.iterdir() if child.is_dir())
    for candidate in candidates:
        entries = _entries_by_lowercase(candidate)
        if "train" in entries and "test" in entries:
            return candidate
    raise UserInputError(
        f"{path}: no TRAIN and TEST folders here or one level down; "
        "this should be the root of the LDC TIMIT disc"
    )


def list_speakers(root: Path) -> list[SpeakerFolder]:
    """Every speaker folder under ``root`` (an LDC root), sorted by split, dialect and id."""
    speakers = []
    top = _entries_by_lowercase(root)
    for split in ("train", "test"):
        for dialect, dialect_path in sorted(_entries_by_lowercase(top[split]).items()):
            if not dialect_path.is_dir():
                continue
            if not DIALECT_PATTERN.fullmatch(dialect):
                raise UserInputError(
                    f"{dialect_path}: expected dialect folders DR1..DR8 under {top[split]}"
                )
            for speaker, speaker_path in sorted(_entries_by_lowercase(dialect_path).items()):
                if not speaker_path.is_dir():
                    continue
                if not SPEAKER_PATTERN.fullmatch(speaker):
                    raise UserInputError(
                        f"{speaker_path}: not a TIMIT speaker folder name "
                        "(M or F, three letters, one digit, e.g. FCJF0)"
                    )
                speakers.append(SpeakerFolder(split, dialect, speaker, speaker_path))
    return speakers


def utterance_files(speaker: SpeakerFolder) -> dict[str, dict[str, Path]]:
    """A speaker's utterances: prompt (``sx123``) -> extension (``phn``) -> path."""
    utterances: dict[str, dict[str, Path]] = {}
    for name, path in _entries_by_lowercase(speaker.path).items():
        prompt, dot, extension = name.partition(".")
        if not dot or extension not in UTTERANCE_FILES or not PROMPT_PATTERN.fullmatch(prompt):
            continue
        utterances.setdefault(prompt, {})[extension] = path
    return utterances


def read_alignment(
    path: Path, num_samples: int, labels: frozenset[str] | None = None
) -> list[Segment]:
    """Read a .PHN or .WRD file (``start end label`` per line), checking every line against the audio."""
    segments = []
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as error:
        raise UserInputError(f"{path}: cannot read alignment: {error}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            raise UserInputError(f"{path}:{number}: expected 'start end label', got {line!r}")
        start, end, label = int(parts[0]), int(parts[1]), parts[2]
        if labels is not None and label not in labels:
            raise UserInputError(
                f"{path}:{number}: label {label!r} is not one of TIMIT's 61 phones"
            )
        if end < start:
            raise UserInputError(
                f"{path}:{number}: segment ends ({end}) before it starts ({start})"
            )
        if end > num_samples:
            raise UserInputError(
                f"{path}:{number}: segment ends at sample {end}, past the audio's end "
                f"({num_samples} samples)"
            )
        segments.append(Segment(start, end, label))
    if not segments:
        raise UserInputError(f"{path}: alignment file is empty")
    return segments


def read_text(path: Path) -> str:
    """The prompt of a .TXT file (``start end words...``), without the sample range."""
    try:
        line = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise UserInputError(f"{path}: cannot read transcript: {error}") from None
    parts = line.split(None, 2)
    if len(parts) < 3 or not parts[0].isdigit() or not parts[1].isdigit():
        raise UserInputError(f"{path}:1: expected 'start end text', got {line!r}")
    return parts[2]


def read_utterance(speaker: SpeakerFolder, prompt: str, files: dict[str, Path]) -> Utterance:
    """Read one utterance's audio header, transcript and alignments into a manifest record."""
    for extension in UTTERANCE_FILES:
        if extension not in files:
            where = speaker.path / f"{prompt.upper()}.{extension.upper()}"
            raise UserInputError(f"{where}: missing (every utterance needs .WAV, .PHN, .WRD, .TXT)")
    audio = files["wav"]
    header = read_sphere_header(audio)
    if header.sample_rate != TIMIT_SAMPLE_RATE:
        raise UserInputError(
            f"{audio}: sample rate {header.sample_rate} Hz; TIMIT audio is {TIMIT_SAMPLE_RATE} Hz"
        )
    if audio.stat().st_size < header.header_bytes + 2 * header.sample_count:
        raise UserInputError(
            f"{audio}: header says {header.sample_count} samples but the file is shorter "
            "(truncated copy?)"
        )
    phones = read_alignment(files["phn"], header.sample_count, _PHONE_LABELS)
    words = read_alignment(files["wrd"], header.sample_count)
    labels = [segment.label for segment in phones]
    return Utterance(
        id=f"{speaker.speaker}-{prompt}",
        speaker=speaker.speaker,
        dialect=speaker.dialect,
        gender=speaker.gender,
        audio_path=str(audio.resolve()),
        num_samples=header.sample_count,
        text=read_text(files["txt"]),
        words=words,
        phones=phones,
        phones_61=[label for label in labels if label != "q"],
        phones_48=fold_61_to_48(labels),
        phones_39=fold_61_to_39(labels),
    )


def partition_of(speaker: SpeakerFolder) -> str | None:
    """The standard partition a speaker belongs to, or None (test speakers outside dev and core)."""
    if speaker.split == "train":
        return "train"
    if speaker.speaker in _CORE:
        return "test"
    if speaker.speaker in _DEV:
        return "dev"
    return None


def _partition_jobs(root: Path) -> Iterator[tuple[str, SpeakerFolder, str, dict[str, Path]]]:
    for speaker in list_speakers(root):
        partition = partition_of(speaker)
        if partition is None:
            continue
        for prompt, files in sorted(utterance_files(speaker).items()):
            if prompt.startswith("sa"):
                continue
            yield partition, speaker, prompt, files


def build_partitions(
    path: str | Path, strict: bool = False, progress: bool = True
) -> dict[str, list[Utterance]]:
    """Read an LDC TIMIT tree into the standard partitions, checking structure (and counts if strict)."""
    root = find_ldc_root(path)
    jobs = list(_partition_jobs(root))
    partitions: dict[str, list[Utterance]] = {name: [] for name in PARTITIONS}
    for partition, speaker, prompt, files in tqdm(
        jobs, desc="reading TIMIT", unit="utt", disable=not progress
    ):
        partitions[partition].append(read_utterance(speaker, prompt, files))
    # dev may be empty (a partial corpus); without train or core test there is nothing to run
    for name, what in (("train", "TRAIN speakers"), ("test", "core-test speakers under TEST")):
        if not partitions[name]:
            raise UserInputError(f"{root}: no {name} utterances (no {what} with SI/SX sentences)")
    if strict:
        problems = [
            f"{name}: {len(partitions[name])} utterances, expected {expected}"
            for name, expected in TIMIT_COUNTS.items()
            if len(partitions[name]) != expected
        ]
        if problems:
            raise UserInputError(
                f"{root}: strict: this is not the complete TIMIT corpus ({'; '.join(problems)}); "
                "set strict: false for a partial or synthetic corpus"
            )
    return partitions


# --------------------------------------------------------------------------- preparation

#: Written beside the manifests: what they were made from, so an unchanged corpus is skipped.
PREP_STAMP_FILE = "prep_timit.json"
#: Bump when the manifests this code writes change, so manifests of older code are redone.
PREP_VERSION = CODE_VERSIONS["prep_timit"]


def corpus_fingerprint(path: str | Path, strict: bool) -> str:
    """What the manifests depend on: the corpus's lineage fingerprint, its place and the settings.

    A corpus that records its own fingerprint (the synthetic one) is not walked; real TIMIT is
    fingerprinted by its files' names, sizes and modification times. The place counts because
    manifests hold absolute audio paths.
    """
    root = find_ldc_root(path).resolve()
    return digest([f"prep {PREP_VERSION}", str(root), f"strict={strict}", fingerprint(root) or ""])


def prepare_timit(
    input_path: str | Path,
    output_path: str | Path,
    strict: bool = False,
    force: bool = False,
    progress: bool = True,
) -> dict[str, int] | None:
    """Write ``<output>/{train,dev,test}.jsonl`` and the 48-phone token list.

    Returns utterances per partition, or None when the manifests were already up to date.
    Each file is written atomically (speechbed.outputs); the stamp goes last, so a crash
    leaves no stamp and the next run redoes the manifests.
    """
    output = Path(output_path)
    stamp = output / PREP_STAMP_FILE
    made_from = corpus_fingerprint(input_path, strict)
    outputs = [manifest_path(output, name) for name in PARTITIONS] + [output / TOKENS_FILE]
    if not force and stamp.is_file() and all(file.is_file() for file in outputs):
        if json.loads(stamp.read_text()).get("fingerprint") == made_from:
            return None
    partitions = build_partitions(input_path, strict=strict, progress=progress)
    make_folder(output)
    stamp.unlink(missing_ok=True)  # a crash from here on leaves no stamp, so the next run redoes it
    for name, utterances in partitions.items():
        write_manifest(manifest_path(output, name), utterances)
    write_tokens(output / TOKENS_FILE, PHONES_48)
    counts = {name: len(utterances) for name, utterances in partitions.items()}
    write_text_atomic(stamp, json.dumps({"fingerprint": made_from, "counts": counts}, indent=1))
    return counts
