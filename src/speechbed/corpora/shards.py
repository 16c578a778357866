"""WebDataset tar shards of a speech recognition manifest: writing them and reading them back.

scripts/write_shards.py writes them (``write_shards``); training reads them with
``ShardDataset``, an IterableDataset split across data-parallel ranks and DataLoader workers.

A shard is a tar file of ``<key>.flac`` (16 kHz mono, 16-bit) and ``<key>.txt`` (the
transcript, UTF-8) per utterance, in manifest order, ``utterances_per_shard`` to a shard, named
``shards-000000.tar``, ``shards-000001.tar``, ...; so a pattern such as
``shards-{000000..000009}.tar`` names them. Each shard is written atomically (speechbed.outputs),
so a shard that exists is complete and an interrupted job resumes at the first missing one.
``shards.json`` (the settings, the manifest digest, the shards and their utterance counts) is
written first and again when complete; a job whose settings or manifest changed starts over.

Reading: with at least as many shards as (rank, worker) slots, slot s reads shards s,
s + slots, ...; with fewer, the slots sharing a shard take every k-th utterance of it, so no
slot is idle. Either way every utterance is read exactly once per epoch, and each slot reads as
many utterances in every epoch (so an epoch has as many batches). Each epoch a slot reads its
shards in a new order (from the seed, the epoch and the slot), through a shuffle buffer.
"""

from __future__ import annotations

import io
import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from pydantic import Field

from speechbed.corpora.asr_manifest import (
    TARGET_SAMPLE_RATE,
    ManifestEntry,
    audio_path,
    read_audio_16k,
    read_manifests,
)
from speechbed.errors import UserInputError
from speechbed.jobs import JobSchema, input_path, output_path
from speechbed.lineage import FINGERPRINT_FILE, digest
from speechbed.outputs import atomic_output, make_folder, write_text_atomic

SHARD_PREFIX = "shards-"
INDEX_FILE = "shards.json"
FORMAT_VERSION = 1


def shard_name(index: int) -> str:
    return f"{SHARD_PREFIX}{index:06d}.tar"


def shard_pattern(count: int) -> str:
    """The brace pattern naming ``count`` shards: ``shards-{000000..000009}.tar``."""
    if count == 1:
        return shard_name(0)
    return f"{SHARD_PREFIX}{{{0:06d}..{count - 1:06d}}}.tar"


def utterance_key(index: int, entry: ManifestEntry) -> str:
    """A key unique in the manifest, without dots (WebDataset splits names at the first dot)."""
    stem = Path(entry.files[0].fname).name.split(".")[0]
    return f"{index:09d}_{re.sub(r'[^A-Za-z0-9_-]', '_', stem)}"


# --------------------------------------------------------------------------- writing


def _flac_bytes(entry: ManifestEntry, data_folder: Path) -> bytes:
    path = audio_path(entry, data_folder)
    if path.suffix.lower() == ".flac":
        import soundfile

        info = soundfile.info(str(path))
        if info.samplerate == TARGET_SAMPLE_RATE and info.channels == 1:
            return path.read_bytes()
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, read_audio_16k(path), TARGET_SAMPLE_RATE, "PCM_16", format="FLAC")
    return buffer.getvalue()


def _write_shard(path: Path, first: int, entries: Sequence[ManifestEntry], data_folder: Path):
    import webdataset

    with atomic_output(path) as temporary, open(temporary, "wb") as handle:
        writer = webdataset.TarWriter(handle, encoder=False, mtime=0.0)
        for offset, entry in enumerate(entries):
            writer.write(
                {
                    "__key__": utterance_key(first + offset, entry),
                    "flac": _flac_bytes(entry, data_folder),
                    "txt": entry.transcript.encode("utf-8"),
                }
            )
        writer.close()


@dataclass(frozen=True)
class ShardWriteSummary:
    folder: Path
    shards: int
    written: int  # shards written by this call (the rest existed)
    utterances: int

    @property
    def pattern(self) -> str:
        return str(self.folder / shard_pattern(self.shards))


def write_shards(
    entries: Sequence[ManifestEntry],
    data_folder: str | Path,
    output_folder: str | Path,
    utterances_per_shard: int,
    force: bool = False,
    progress: bool = True,
) -> ShardWriteSummary:
    """Write ``entries`` as shards into ``output_folder``, skipping shards already written."""
    if utterances_per_shard < 1:
        raise ValueError(f"utterances_per_shard must be >= 1, got {utterances_per_shard}")
    if not entries:
        raise UserInputError("write_shards: the manifest has no entries")
    data_folder, output = Path(data_folder), make_folder(output_folder)
    counts = [
        len(entries[start : start + utterances_per_shard])
        for start in range(0, len(entries), utterances_per_shard)
    ]
    manifest_digest = digest(json.dumps(entry.to_json(), sort_keys=True) for entry in entries)
    plan = {
        "version": FORMAT_VERSION,
        "utterances_per_shard": utterances_per_shard,
        "manifest_digest": manifest_digest,
        "shards": [
            {
                "name": shard_name(i),
                "utterances": n,
                "durations": [
                    entry.original_duration
                    for entry in entries[i * utterances_per_shard : i * utterances_per_shard + n]
                ],
            }
            for i, n in enumerate(counts)
        ],
        "utterances": len(entries),
    }
    index = output / INDEX_FILE
    previous = _read_index(index)
    same_plan = previous is not None and {**previous, "complete": False} == {
        **plan,
        "complete": False,
    }
    if force or not same_plan:  # shards of other settings or another manifest: start over
        for stale in output.glob(f"{SHARD_PREFIX}*.tar"):
            stale.unlink()
        (output / FINGERPRINT_FILE).unlink(missing_ok=True)
    all_there = all((output / shard_name(i)).exists() for i in range(len(counts)))
    if same_plan and previous.get("complete") and all_there and not force:
        return ShardWriteSummary(output, len(counts), 0, len(entries))
    write_text_atomic(index, json.dumps({**plan, "complete": False}, indent=1) + "\n")
    written = 0
    steps = range(len(counts))
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc=f"shards -> {output}", unit="shard")
    for shard in steps:
        path = output / shard_name(shard)
        if path.exists():
            continue
        first = shard * utterances_per_shard
        _write_shard(path, first, entries[first : first + counts[shard]], data_folder)
        written += 1
    complete = json.dumps({**plan, "complete": True}, indent=1) + "\n"
    write_text_atomic(index, complete)
    write_text_atomic(output / FINGERPRINT_FILE, digest([complete]) + "\n")
    return ShardWriteSummary(output, len(counts), written, len(entries))


def read_shard_index(urls: Sequence[str]) -> dict | None:
    """The ``shards.json`` beside local shards (None for remote ones or when it is missing)."""
    if not urls or "://" in urls[0] or urls[0].startswith("pipe:"):
        return None
    index = _read_index(Path(urls[0]).parent / INDEX_FILE)
    return index if index is not None and index.get("complete") else None


def _read_index(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class WriteShardsJob(JobSchema):
    """scripts/write_shards.py's job: which manifests, where their audio lies, the shard size."""

    manifests: list[Path] = input_path(
        min_length=1,
        description="manifests to shard, in order (JSON, speechbed.corpora.asr_manifest), e.g. "
        "[${CACHE_DIRECTORY}/librispeech/wav/train-clean-100.json]",
    )
    data_folder: Path | None = Field(
        None,
        description="the folder the manifests' file names are relative to (default: the first "
        "manifest's folder)",
    )
    output_path: Path = output_path(
        description=f"folder of the shards ({shard_name(0)}, ...) and {INDEX_FILE}"
    )
    utterances_per_shard: int = Field(
        1000, ge=1, le=10_000_000, description="utterances per shard (the last one may hold fewer)"
    )
    max_duration: float | None = Field(
        None, gt=0, description="leave out utterances longer than this (seconds); null keeps all"
    )


def run_write_shards_job(job: WriteShardsJob, force: bool = False) -> ShardWriteSummary:
    entries = read_manifests(job.manifests)
    if job.max_duration is not None:
        entries = [entry for entry in entries if entry.original_duration <= job.max_duration]
    data_folder = job.data_folder or job.manifests[0].parent
    return write_shards(entries, data_folder, job.output_path, job.utterances_per_shard, force)


# --------------------------------------------------------------------------- reading


class ShardSample(NamedTuple):
    key: str
    audio: torch.Tensor  # float32 (samples,) at 16 kHz in [-1, 1]
    transcript: str


def expand_shard_urls(urls: str | Path | Sequence[str | Path]) -> list[str]:
    """Paths or URLs, each possibly a brace pattern (``shards-{000000..000009}.tar``), or a
    shard folder (its shards, in order)."""
    import braceexpand

    items = [urls] if isinstance(urls, str | Path) else list(urls)
    expanded: list[str] = []
    for item in items:
        if "://" not in str(item) and Path(str(item)).is_dir():
            found = sorted(Path(item).glob(f"{SHARD_PREFIX}*.tar"))
            if not found:
                raise UserInputError(f"{item}: no {SHARD_PREFIX}*.tar shards in this folder")
            expanded += [str(path) for path in found]
        else:
            expanded += list(braceexpand.braceexpand(str(item)))
    if not expanded:
        raise UserInputError(f"no shards named by {urls!r}")
    return expanded


@dataclass(frozen=True)
class ShardReading:
    """What one (rank, worker) slot reads of a shard: utterances ``offset``, ``offset + stride``..."""

    shard: int
    stride: int
    offset: int


def slot_readings(num_shards: int, num_slots: int, slot: int) -> list[ShardReading]:
    """The readings of ``slot`` of ``num_slots``: whole shards round-robin when there are at
    least as many shards as slots, otherwise one share of one shard; together the slots read
    every utterance once."""
    if not 0 <= slot < num_slots or num_shards < 1:
        raise ValueError(f"slot {slot} of {num_slots} slots, {num_shards} shards")
    if num_shards >= num_slots:
        return [ShardReading(shard, 1, 0) for shard in range(slot, num_shards, num_slots)]
    shard = slot % num_shards
    sharing = len(range(shard, num_slots, num_shards))
    return [ShardReading(shard, sharing, slot // num_shards)]


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def decode_flac(data: bytes, where: str) -> torch.Tensor:
    import soundfile

    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise UserInputError(f"{where}: cannot decode FLAC: {error}") from None
    if rate != TARGET_SAMPLE_RATE:
        raise UserInputError(f"{where}: {rate} Hz audio in a shard; shards hold 16 kHz audio")
    return torch.from_numpy(np.ascontiguousarray(samples.mean(axis=1)))


class ShardDataset(torch.utils.data.IterableDataset):
    """The utterances of WebDataset shards, split across ranks and workers, shuffled.

    ``rank``/``world_size`` default to torch.distributed's (one process when not initialised);
    call ``set_epoch`` before each epoch so that epochs are shuffled differently.
    """

    def __init__(
        self,
        urls: str | Path | Sequence[str | Path],
        shuffle_buffer: int = 0,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__()
        self.urls = expand_shard_urls(urls)
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}")
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rank_and_world(self) -> tuple[int, int]:
        """This reader's (rank, world size): as given, else torch.distributed's, else (0, 1)."""
        return _rank_and_world(self.rank, self.world_size)

    def _slot(self) -> tuple[int, int]:
        rank, world_size = self.rank_and_world()
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank * workers + worker, world_size * workers

    def slot_readings(self) -> list[ShardReading]:
        """What this rank and worker reads this epoch: its share, in this epoch's order."""
        slot, slots = self._slot()
        readings = slot_readings(len(self.urls), slots, slot)
        if self.shuffle_buffer > 0:
            random.Random(f"{self.seed}-{self.epoch}-{slot}").shuffle(readings)
        return readings

    def _read(self, readings: list[ShardReading]) -> Iterator[ShardSample]:
        from webdataset.tariterators import tarfile_samples

        for reading in readings:
            url = self.urls[reading.shard]
            for index, record in enumerate(tarfile_samples([{"url": url}])):
                if index % reading.stride != reading.offset:
                    continue
                key = record["__key__"]
                if "flac" not in record or "txt" not in record:
                    raise UserInputError(f"{url}: {key} lacks its .flac or .txt member")
                audio = decode_flac(record["flac"], f"{url}: {key}.flac")
                yield ShardSample(key, audio, record["txt"].decode("utf-8"))

    def __iter__(self) -> Iterator[ShardSample]:
        samples = self._read(self.slot_readings())
        if self.shuffle_buffer <= 1:
            yield from samples
            return
        rng = random.Random(f"{self.seed}-{self.epoch}-{self._slot()[0]}-buffer")
        buffer: list[ShardSample] = []
        for sample in samples:
            buffer.append(sample)
            if len(buffer) >= self.shuffle_buffer:
                pick = rng.randrange(len(buffer))
                buffer[pick], buffer[-1] = buffer[-1], buffer[pick]
                yield buffer.pop()
        rng.shuffle(buffer)
        yield from buffer
