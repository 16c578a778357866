"""Preparing a speech recognition corpus: audio to 16 kHz mono WAV in parallel, then manifests.

Called by speechbed.corpora.librispeech and speechbed.corpora.commonvoice once they have read
their layout into ``SourceUtterance`` lists, one list per partition.

Each partition ``name`` becomes ``<output>/<name>/<folder>/<utterance id>.wav`` (16-bit PCM,
16 kHz, channels averaged, resampled with a polyphase filter; the reader picks folders of at
most a few thousand files, since every atomic write lists its folder) and the manifest ``<output>/<name>.json``
(speechbed.corpora.asr_manifest) whose file names are relative to ``<output>``. Every WAV is
written atomically, so a killed run leaves only whole files and the next run converts only
what is missing. Utterances longer than ``max_duration`` seconds (read from the source's
header) are neither converted nor listed; transcripts are normalised to the 28-character set
unless kept raw, and an utterance whose normalised transcript is empty is left out.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from tqdm import tqdm

from speechbed.corpora.asr_manifest import (
    TARGET_SAMPLE_RATE,
    entry_for_wav,
    manifest_path,
    read_audio_16k,
    write_manifest,
)
from speechbed.corpora.text_normalization import normalize_transcript
from speechbed.errors import UserInputError
from speechbed.outputs import atomic_output, make_folder


@dataclass(frozen=True)
class SourceUtterance:
    """One utterance of a corpus as its reader found it: id, audio file, transcript as written."""

    id: str
    audio: Path
    transcript: str
    folder: str = ""  # where its WAV goes inside the partition's folder, e.g. "84/121123"

    def fname(self, partition: str) -> str:
        """Its WAV's name relative to the data folder."""
        return "/".join(part for part in (partition, self.folder, f"{self.id}.wav") if part)


@dataclass(frozen=True)
class _Conversion:
    source: Path
    target: Path
    max_duration: float | None
    force: bool


@dataclass
class PartitionSummary:
    """What preparing one partition did."""

    entries: int = 0
    seconds: float = 0.0
    converted: int = 0
    reused: int = 0
    too_long: int = 0
    empty_transcripts: int = 0

    def describe(self, name: str) -> str:
        parts = [f"{name}: {self.entries} utterances, {self.seconds / 3600:.2f} h"]
        parts.append(f"{self.converted} converted, {self.reused} already there")
        if self.too_long:
            parts.append(f"{self.too_long} over max_duration")
        if self.empty_transcripts:
            parts.append(f"{self.empty_transcripts} with an empty transcript left out")
        return "; ".join(parts)


def convert_to_wav16k(source: str | Path, target: str | Path) -> int:
    """Write ``source`` (any format libsndfile reads: FLAC, WAV, MP3, OGG) as 16 kHz mono
    16-bit WAV at ``target``, atomically; returns its number of samples."""
    audio = read_audio_16k(source)
    samples = np.clip(np.round(audio.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    with atomic_output(target) as temporary:
        soundfile.write(temporary, samples, TARGET_SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return len(samples)


def _source_seconds(path: Path) -> float:
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise UserInputError(f"{path}: cannot read audio: {error}") from None
    return info.frames / info.samplerate


def _convert(conversion: _Conversion) -> tuple[int | None, bool]:
    """(samples of the target or None when the source is too long, whether it was converted)."""
    if not conversion.force and conversion.target.is_file():
        try:
            return soundfile.info(str(conversion.target)).frames, False
        except (soundfile.LibsndfileError, RuntimeError):
            pass  # not a whole WAV (written by something else): convert it again
    if conversion.max_duration is not None:
        if _source_seconds(conversion.source) > conversion.max_duration:
            return None, False
    return convert_to_wav16k(conversion.source, conversion.target), True


def run_in_parallel(
    function: Callable,
    items: Sequence,
    workers: int,
    description: str,
    progress: bool = True,
    unit: str = "file",
) -> list:
    """``function`` over ``items`` in ``workers`` processes (in this one when 1), in order."""
    bar = tqdm(total=len(items), desc=description, unit=unit, disable=not progress)
    with bar:
        if workers <= 1 or len(items) < 2:
            results = []
            for item in items:
                results.append(function(item))
                bar.update()
            return results
        with ProcessPoolExecutor(max_workers=min(workers, len(items))) as pool:
            results = []
            chunk = max(1, min(64, len(items) // (workers * 8)))
            for result in pool.map(function, items, chunksize=chunk):
                results.append(result)
                bar.update()
            return results


def default_workers(workers: int) -> int:
    """``workers``, or one per CPU core this process may use when 0."""
    return workers or len(os.sched_getaffinity(0))


def _checked(
    name: str, utterances: Iterable[SourceUtterance], normalize: bool, summary: PartitionSummary
) -> list[tuple[SourceUtterance, str]]:
    """The utterances with the transcripts to write; ids checked, empty transcripts counted."""
    seen: dict[str, Path] = {}
    kept = []
    for utterance in utterances:
        if utterance.id in seen:
            raise UserInputError(
                f"{name}: two utterances named {utterance.id!r} ({seen[utterance.id]} and "
                f"{utterance.audio}); utterance ids must be unique within a partition"
            )
        seen[utterance.id] = utterance.audio
        text = normalize_transcript(utterance.transcript) if normalize else utterance.transcript
        if not text.strip():
            summary.empty_transcripts += 1
            continue
        kept.append((utterance, text))
    return kept


def prepare_partitions(
    partitions: Mapping[str, Iterable[SourceUtterance]],
    output: str | Path,
    max_duration: float | None = None,
    normalize: bool = True,
    workers: int = 0,
    force: bool = False,
    progress: bool = True,
) -> dict[str, PartitionSummary]:
    """Convert each named partition's audio into ``<output>/<name>/`` (all partitions in one
    pool of processes), then write each ``<output>/<name>.json``; their summaries."""
    output = make_folder(output)
    summaries = {name: PartitionSummary() for name in partitions}
    kept = {
        name: _checked(name, utterances, normalize, summaries[name])
        for name, utterances in partitions.items()
    }
    conversions = [
        _Conversion(u.audio, output / fname, max_duration, force)
        for name, pairs in kept.items()
        for u, _ in pairs
        for fname in [u.fname(name)]
    ]
    results = iter(
        run_in_parallel(
            _convert, conversions, default_workers(workers), "audio to 16 kHz WAV", progress
        )
    )
    for name, pairs in kept.items():
        summary, entries = summaries[name], []
        for utterance, transcript in pairs:
            samples, converted = next(results)
            if samples is None or (
                max_duration is not None and samples / TARGET_SAMPLE_RATE > max_duration
            ):  # too long now, or converted earlier under a larger max_duration
                summary.too_long += 1
                continue
            summary.converted += converted
            summary.reused += not converted
            summary.seconds += samples / TARGET_SAMPLE_RATE
            entries.append(entry_for_wav(transcript, utterance.fname(name), samples))
        summary.entries = len(entries)
        write_manifest(manifest_path(output, name), entries)
    return summaries
