"""The rnnt task's batches: manifest entries as audio and token ids, padded, length-bucketed.

Called by speechbed.tasks.rnnt.task for its loaders. Audio is read with the manifest module's
reader (16 kHz mono float32); transcripts are normalised (as the config says) and encoded with
the run's sentencepiece tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset

from speechbed.corpora.asr_manifest import (
    ManifestEntry,
    entry_from_json,
    filter_by_duration,
    load_audio,
    read_manifest,
)
from speechbed.corpora.text_normalization import normalize_transcript
from speechbed.corpora.tokenizer import Tokenizer
from speechbed.errors import UserInputError
from speechbed.features.loader import BucketBatchSampler
from speechbed.features.log_mel import SpecAugmentDraws
from speechbed.tasks.rnnt.config import RnntDataConfig

#: ``in_memory: auto`` holds a partition's audio when its float32 samples take at most this.
IN_MEMORY_AUTO_BYTES = 1 << 30
#: Marks (in ``ManifestEntry.extra``) an entry read without a transcript.
UNTRANSCRIBED = "untranscribed"


def utterance_id(entry: ManifestEntry) -> str:
    """An entry's id: its first file's name without the suffix (``dev-clean/84/121123/...``)."""
    return str(Path(entry.files[0].fname).with_suffix(""))


def read_manifest_for_decoding(path: Path) -> list[ManifestEntry]:
    """A manifest whose entries may lack ``transcript`` (read as "", marked UNTRANSCRIBED)."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return read_manifest(path)  # its error names the file (and line)
    if not isinstance(document, list):
        return read_manifest(path)
    entries = []
    for index, record in enumerate(document):
        if isinstance(record, dict) and "transcript" not in record:
            record = {**record, "transcript": "", UNTRANSCRIBED: True}
        try:
            entries.append(entry_from_json(record))
        except ValueError as error:
            raise UserInputError(f"{path}: entry {index}: {error}") from None
    return entries


class Utterance(NamedTuple):
    utt_id: str
    audio: torch.Tensor  # (samples,) float32, 16 kHz
    tokens: torch.Tensor  # (tokens,) int32
    transcript: str


class SpeechBatch(NamedTuple):
    """Padded audio and targets; ``spec_augment``, ``dither_seed`` set by the task's augment."""

    audio: torch.Tensor  # (B, samples) float32
    audio_lengths: torch.Tensor  # (B,) int64
    targets: torch.Tensor  # (B, max tokens) int32, zero padded
    target_lengths: torch.Tensor  # (B,) int32
    utt_ids: list[str]
    transcripts: list[str]
    spec_augment: SpecAugmentDraws | None = None
    dither_seed: int | None = None


class ManifestUtterances(Dataset):
    """A partition's entries, each read as an ``Utterance`` (cached when ``in_memory``)."""

    def __init__(
        self,
        entries: Sequence[tuple[ManifestEntry, Path]],
        tokenizer: Tokenizer,
        normalize: bool,
        in_memory: bool,
    ) -> None:
        self.entries = list(entries)
        self.tokenizer = tokenizer
        self.normalize = normalize
        self._cache: dict[int, torch.Tensor] | None = {} if in_memory else None

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def num_samples(self) -> list[int]:
        """Samples per utterance at 16 kHz (from the manifest; what the batches bucket by)."""
        return [round(entry.original_duration * 16000) for entry, _ in self.entries]

    def __getitem__(self, index: int) -> Utterance:
        entry, folder = self.entries[index]
        audio = None if self._cache is None else self._cache.get(index)
        if audio is None:
            audio = load_audio(entry, folder)
            if self._cache is not None:
                self._cache[index] = audio
        transcript = normalize_transcript(entry.transcript) if self.normalize else entry.transcript
        tokens = torch.tensor(self.tokenizer.encode(transcript), dtype=torch.int32)
        return Utterance(utterance_id(entry), audio, tokens, transcript)


def collate_speech(items: Sequence[Utterance]) -> SpeechBatch:
    """Utterances padded with zeros into one batch."""
    audio_lengths = torch.tensor([len(item.audio) for item in items], dtype=torch.int64)
    target_lengths = torch.tensor([len(item.tokens) for item in items], dtype=torch.int32)
    audio = torch.zeros((len(items), int(audio_lengths.max())))
    targets = torch.zeros((len(items), int(target_lengths.max())), dtype=torch.int32)
    for row, item in enumerate(items):
        audio[row, : len(item.audio)] = item.audio
        targets[row, : len(item.tokens)] = item.tokens
    return SpeechBatch(
        audio, audio_lengths, targets, target_lengths,
        [item.utt_id for item in items], [item.transcript for item in items],
    )  # fmt: skip


def partition_entries(
    data: RnntDataConfig,
    partition: str,
    max_duration: float | None = None,
    without_transcripts: bool = False,
) -> list[tuple[ManifestEntry, Path]]:
    """The entries of a partition's manifest(s) with the folder their audio names are relative
    to, those longer than ``max_duration`` seconds left out; ``without_transcripts`` accepts
    entries without one (for decoding only)."""
    read = read_manifest_for_decoding if without_transcripts else read_manifest
    entries = []
    for manifest in data.manifests(partition):
        if not manifest.is_file():
            raise UserInputError(
                f"data: no manifest for partition '{partition}' at {manifest}; "
                f"{data.missing_source_hint}"
            )
        kept = filter_by_duration(read(manifest), max_duration)
        entries.extend((entry, manifest.parent) for entry in kept)
    if not entries:
        limit = f" of at most {max_duration} s" if max_duration else ""
        raise UserInputError(f"data: partition '{partition}' has no utterances{limit}")
    return entries


def open_speech_loader(
    data: RnntDataConfig,
    partition: str,
    tokenizer: Tokenizer,
    *,
    shuffle: bool,
    seed: int = 0,
    batch_size: int | None = None,
    max_duration: float | None = None,
    generator: torch.Generator | None = None,
    without_transcripts: bool = False,
) -> DataLoader:
    """A DataLoader of ``SpeechBatch``; its ``batch_sampler`` (length-bucketed) has ``set_epoch``."""
    entries = partition_entries(data, partition, max_duration, without_transcripts)
    total_bytes = 4 * 16000 * sum(entry.original_duration for entry, _ in entries)
    in_memory = data.in_memory is True or (
        data.in_memory == "auto" and total_bytes <= IN_MEMORY_AUTO_BYTES
    )
    dataset = ManifestUtterances(entries, tokenizer, data.normalize_transcripts, in_memory)
    sampler = BucketBatchSampler(
        dataset.num_samples, batch_size=batch_size or data.batch_size, shuffle=shuffle, seed=seed
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_speech,
        num_workers=data.num_workers,
        generator=generator,
    )
