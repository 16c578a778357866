"""Mixture manifests: one (mixture, sources) tuple per JSON line, one file per partition.

Written by the layout readers (speechbed.corpora.wsj0_2mix, .libri2mix; scripts/prep_mixtures.py);
read by the separation cache (speechbed.features.separation_store). WAV reading and writing here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from speechbed.corpora.manifest import read_json_lines, write_json_lines
from speechbed.errors import UserInputError
from speechbed.outputs import atomic_output

#: The manifest partitions every layout maps its own split names to.
PARTITIONS = ("train", "dev", "test")


@dataclass(frozen=True)
class Mixture:
    """One mixture and its reference sources (absolute WAV paths, same rate and length)."""

    id: str  # the mixture's file name without .wav
    mixture_path: str
    source_paths: list[str]
    sample_rate: int
    num_samples: int
    noise_path: str | None = None  # the noise in the mixture, when the layout has one
    speakers: list[str] = field(default_factory=list)  # one per source, when names tell

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Mixture:
        return cls(**json.loads(text))


def write_mixtures(path: str | Path, mixtures: Iterable[Mixture]) -> None:
    """Write a partition's mixtures to ``path`` atomically."""
    write_json_lines(path, mixtures)


def read_mixtures(path: str | Path) -> list[Mixture]:
    """Read a mixture manifest; a malformed line is an error naming the file and line."""
    return read_json_lines(
        path,
        Mixture.from_json,
        missing="mixture manifest not found (run scripts/prep_mixtures.py)",
        record="mixture",
        check=lambda mixture: (
            None if mixture.source_paths else f"mixture {mixture.id} has no sources"
        ),
    )


def read_wav(path: str | Path, expected_rate: int | None = None) -> np.ndarray:
    """A mono WAV file as float32 samples in [-1, 1]; other rates or channel counts are refused."""
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (OSError, RuntimeError, soundfile.LibsndfileError) as error:
        raise UserInputError(f"{path}: cannot read audio ({error})") from None
    if samples.shape[1] != 1:
        raise UserInputError(f"{path}: {samples.shape[1]} channels; mixtures must be mono")
    if expected_rate is not None and rate != expected_rate:
        raise UserInputError(f"{path}: sampled at {rate} Hz, expected {expected_rate} Hz")
    return samples[:, 0]


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write float samples in [-1, 1] as 16-bit PCM WAV, atomically (clipped values refused)."""
    samples = np.asarray(samples)
    if samples.dtype.kind == "f" and np.abs(samples).max(initial=0.0) > 1.0:
        raise ValueError(f"{path}: samples beyond [-1, 1] would clip")
    with atomic_output(path) as temporary:
        soundfile.write(str(temporary), samples, sample_rate, format="WAV", subtype="PCM_16")


def _wav_header(path: Path) -> tuple[int, int]:
    try:
        info = soundfile.info(str(path))
    except (OSError, RuntimeError, soundfile.LibsndfileError) as error:
        raise UserInputError(f"{path}: cannot read audio ({error})") from None
    if info.channels != 1:
        raise UserInputError(f"{path}: {info.channels} channels; mixtures must be mono")
    return info.samplerate, info.frames


def mixtures_in_folders(
    mixture_folder: Path,
    source_folders: Sequence[Path],
    sample_rate: int,
    noise_folder: Path | None = None,
    speakers_of: Callable[[str], list[str]] | None = None,
) -> list[Mixture]:
    """Every ``<mixture_folder>/*.wav`` with the file of the same name in each source folder.

    Only headers are read: each file must be mono at ``sample_rate`` and every source as long
    as its mixture; a missing source file is an error naming it.
    """
    for folder in (mixture_folder, *source_folders, *([noise_folder] if noise_folder else [])):
        if not folder.is_dir():
            raise UserInputError(f"{folder}: folder not found (is the layout complete?)")
    mixtures = []
    for path in sorted(mixture_folder.glob("*.wav")):
        rate, length = _wav_header(path)
        if rate != sample_rate:
            raise UserInputError(f"{path}: sampled at {rate} Hz, expected {sample_rate} Hz")
        others = [folder / path.name for folder in source_folders]
        if noise_folder is not None:
            others.append(noise_folder / path.name)
        for other in others:
            if not other.is_file():
                raise UserInputError(f"{other}: missing (the mixture {path} has no such source)")
            other_rate, other_length = _wav_header(other)
            if (other_rate, other_length) != (rate, length):
                raise UserInputError(
                    f"{other}: {other_length} samples at {other_rate} Hz, but its mixture {path} "
                    f"has {length} at {rate} Hz"
                )
        mixtures.append(
            Mixture(
                id=path.stem,
                mixture_path=str(path.absolute()),
                source_paths=[str(p.absolute()) for p in others[: len(source_folders)]],
                sample_rate=rate,
                num_samples=length,
                noise_path=str(others[-1].absolute()) if noise_folder is not None else None,
                speakers=speakers_of(path.stem) if speakers_of else [],
            )
        )
    if not mixtures:
        raise UserInputError(f"{mixture_folder}: no .wav files")
    return mixtures
