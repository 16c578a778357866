"""The Common Voice layout: ``clips/*.mp3`` with ``train.tsv``/``dev.tsv``/``test.tsv`` listing them.

Called by scripts/prep_commonvoice.py, which writes 16 kHz WAV and JSON manifests through
speechbed.corpora.asr_prep.

A release's language folder (``${DATA_DIRECTORY}/CommonVoice/<version>/<lang>``, e.g.
``cv-corpus-17.0-2024-03-15/en`` unpacked there) holds ``clips/`` and tab-separated split
files whose header names at least the columns ``path`` (the clip's file name in ``clips/``)
and ``sentence``. Fields are not quoted (a sentence may hold a ``"``). MP3 is decoded by
libsndfile (1.1 or later, bundled with the soundfile wheel).
"""

from __future__ import annotations

import csv
import sys
import zlib
from pathlib import Path
from typing import ClassVar, Literal, get_args

from pydantic import Field

from speechbed.code_versions import CODE_VERSIONS
from speechbed.corpora.asr_prep import PartitionSummary, SourceUtterance, prepare_partitions
from speechbed.errors import UserInputError
from speechbed.jobs import JobSchema, input_path, output_path

Split = Literal["train", "dev", "test", "validated", "other", "invalidated"]
#: The splits a release defines; train, dev and test are the standard partitions.
COMMONVOICE_SPLITS: tuple[str, ...] = get_args(Split)
REQUIRED_COLUMNS = ("path", "sentence")


def read_commonvoice_split(root: str | Path, split: str) -> list[SourceUtterance]:
    """The clips a split file lists, in its order; bad rows name the file and line."""
    root = Path(root)
    table = root / f"{split}.tsv"
    if not table.is_file():
        raise UserInputError(f"{table}: no such split file (a Common Voice language folder)")
    csv.field_size_limit(sys.maxsize)
    utterances = []
    with table.open(encoding="utf-8", newline="") as stream:
        rows = csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None)
        missing = [column for column in REQUIRED_COLUMNS if column not in (header or [])]
        if missing:
            raise UserInputError(
                f"{table}:1: the header has no column {', '.join(missing)} (found: "
                f"{', '.join(header or []) or 'nothing'})"
            )
        path_column, sentence_column = header.index("path"), header.index("sentence")
        for number, row in enumerate(rows, start=2):
            if not row or row == [""]:
                continue
            if len(row) != len(header):
                raise UserInputError(
                    f"{table}:{number}: {len(row)} fields, the header has {len(header)}"
                )
            clip = root / "clips" / row[path_column]
            if not row[path_column] or not clip.is_file():
                raise UserInputError(f"{table}:{number}: no clip {clip}")
            name = Path(row[path_column]).stem
            bucket = f"{zlib.crc32(name.encode()) & 0xFF:02x}"  # a release has 1M+ clips
            utterances.append(SourceUtterance(name, clip, row[sentence_column], bucket))
    return utterances


class PrepCommonVoiceJob(JobSchema):
    """scripts/prep_commonvoice.py's job: which language folder and splits, where, what to keep."""

    code_versions: ClassVar[dict[str, int]] = {"asr_prep": CODE_VERSIONS["asr_prep"]}

    input_path: Path = input_path(
        description="a release's language folder holding clips/ and <split>.tsv, e.g. "
        "${DATA_DIRECTORY}/CommonVoice/cv-corpus-17.0/en"
    )
    output_path: Path = output_path(
        description="data folder to write: <split>/<xx>/<clip>.wav (16 kHz mono, 256 folders "
        "<xx>) and <split>.json manifests whose file names are relative to it"
    )
    splits: list[Split] = Field(
        default_factory=lambda: ["train", "dev", "test"],
        min_length=1,
        description="the split files to prepare: " + ", ".join(COMMONVOICE_SPLITS),
    )
    max_duration: float | None = Field(
        None, gt=0, description="leave out clips longer than this (seconds); null keeps all"
    )
    normalize: bool = Field(
        True,
        description="write transcripts in the 28-character English set (a-z, apostrophe, space); "
        "false keeps them as written (other languages; normalise on the fly when reading)",
    )
    workers: int = Field(0, ge=0, description="conversion processes (0: one per CPU core)")


def prepare_commonvoice(
    job: PrepCommonVoiceJob, force: bool = False, progress: bool = True
) -> dict[str, PartitionSummary]:
    """Read every split file first (a broken one writes nothing), then convert and write each
    split's manifest."""
    partitions = {split: read_commonvoice_split(job.input_path, split) for split in job.splits}
    return prepare_partitions(
        partitions, job.output_path, job.max_duration, job.normalize, job.workers, force, progress
    )
