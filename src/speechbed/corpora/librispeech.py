"""The LibriSpeech layout: subsets of ``<speaker>/<chapter>/*.flac`` with a transcript per chapter.

Called by scripts/prep_librispeech.py (the real corpus and the synthetic one of
speechbed.corpora.synthetic_librispeech), which writes 16 kHz WAV and JSON manifests through
speechbed.corpora.asr_prep.

A corpus root (``${DATA_DIRECTORY}/LibriSpeech``, or a folder holding ``LibriSpeech/``) holds
any of the seven standard subsets; each holds ``<speaker>/<chapter>/`` folders with
``<speaker>-<chapter>-<utterance>.flac`` files and ``<speaker>-<chapter>.trans.txt``, one line
``<speaker>-<chapter>-<utterance> TRANSCRIPT`` per file.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal, get_args

from pydantic import Field

from speechbed.code_versions import CODE_VERSIONS
from speechbed.corpora.asr_prep import PartitionSummary, SourceUtterance, prepare_partitions
from speechbed.errors import UserInputError
from speechbed.jobs import JobSchema, input_path, output_path

Subset = Literal[
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
]
#: The standard subsets, in the order of the LibriSpeech paper.
LIBRISPEECH_SUBSETS: tuple[str, ...] = get_args(Subset)


def librispeech_root(path: str | Path) -> Path:
    """The folder holding the subsets: ``path`` itself, or its ``LibriSpeech/`` subfolder."""
    path = Path(path)
    if not any((path / subset).is_dir() for subset in LIBRISPEECH_SUBSETS):
        nested = path / "LibriSpeech"
        if nested.is_dir():
            return nested
    return path


def _read_transcripts(path: Path, speaker: str, chapter: str) -> dict[str, str]:
    """A chapter's ``.trans.txt``: utterance id -> transcript; bad lines name file and line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UserInputError(f"{path}: cannot read transcripts: {error}") from None
    transcripts: dict[str, str] = {}
    prefix = f"{speaker}-{chapter}-"
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        utterance, _, text = line.strip().partition(" ")
        if not utterance.startswith(prefix) or not utterance[len(prefix) :].isdigit():
            raise UserInputError(
                f"{path}:{number}: expected '{prefix}<number> TRANSCRIPT', got {line.strip()!r}"
            )
        if utterance in transcripts:
            raise UserInputError(f"{path}:{number}: {utterance} has a second transcript")
        transcripts[utterance] = text.strip()
    return transcripts


def read_librispeech_subset(folder: str | Path) -> list[SourceUtterance]:
    """Every utterance of one subset folder, sorted by id; the layout is checked as it is read."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserInputError(f"{folder}: no such LibriSpeech subset folder")
    utterances = []
    for chapter_folder in sorted(path for path in folder.glob("*/*") if path.is_dir()):
        speaker, chapter = chapter_folder.parent.name, chapter_folder.name
        transcript_file = chapter_folder / f"{speaker}-{chapter}.trans.txt"
        flacs = {path.stem: path for path in chapter_folder.glob("*.flac")}
        if not transcript_file.is_file():
            if flacs:
                raise UserInputError(
                    f"{chapter_folder}: {len(flacs)} .flac files but no {transcript_file.name}"
                )
            continue
        transcripts = _read_transcripts(transcript_file, speaker, chapter)
        for utterance in sorted(set(flacs) - set(transcripts)):
            raise UserInputError(f"{flacs[utterance]}: no line for it in {transcript_file}")
        for utterance, text in sorted(transcripts.items()):
            if utterance not in flacs:
                raise UserInputError(
                    f"{transcript_file}: {utterance} has a transcript but no {utterance}.flac"
                )
            utterances.append(
                SourceUtterance(utterance, flacs[utterance], text, f"{speaker}/{chapter}")
            )
    if not utterances:
        raise UserInputError(
            f"{folder}: no utterances (expected <speaker>/<chapter>/ folders with .flac files "
            "and a <speaker>-<chapter>.trans.txt)"
        )
    return utterances


class PrepLibriSpeechJob(JobSchema):
    """scripts/prep_librispeech.py's job: which corpus and subsets, where, what to keep."""

    code_versions: ClassVar[dict[str, int]] = {"asr_prep": CODE_VERSIONS["asr_prep"]}

    input_path: Path = input_path(
        description="the LibriSpeech root holding the subset folders (or a folder holding "
        "LibriSpeech/), e.g. ${DATA_DIRECTORY}/LibriSpeech"
    )
    output_path: Path = output_path(
        description="data folder to write: <subset>/<speaker>/<chapter>/<utterance>.wav (16 kHz "
        "mono) and "
        "<subset>.json manifests whose file names are relative to it"
    )
    subsets: list[Subset] = Field(
        default_factory=lambda: list(LIBRISPEECH_SUBSETS),
        min_length=1,
        description="the subsets to prepare (each must be present): "
        + ", ".join(LIBRISPEECH_SUBSETS),
    )
    max_duration: float | None = Field(
        None, gt=0, description="leave out utterances longer than this (seconds); null keeps all"
    )
    normalize: bool = Field(
        True,
        description="write transcripts in the 28-character set (a-z, apostrophe, space); false "
        "keeps them as written (normalise on the fly when reading)",
    )
    workers: int = Field(0, ge=0, description="conversion processes (0: one per CPU core)")


def prepare_librispeech(
    job: PrepLibriSpeechJob, force: bool = False, progress: bool = True
) -> dict[str, PartitionSummary]:
    """Read the job's subsets (all of them first, so a broken layout writes nothing), then
    convert and write each one's manifest."""
    root = librispeech_root(job.input_path)
    missing = [subset for subset in job.subsets if not (root / subset).is_dir()]
    if missing:
        present = [subset for subset in LIBRISPEECH_SUBSETS if (root / subset).is_dir()]
        raise UserInputError(
            f"{root}: no subset folder {', '.join(missing)} (present: "
            f"{', '.join(present) or 'none'}); download it or list only present ones in subsets"
        )
    partitions = {subset: read_librispeech_subset(root / subset) for subset in job.subsets}
    return prepare_partitions(
        partitions, job.output_path, job.max_duration, job.normalize, job.workers, force, progress
    )
