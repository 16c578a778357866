"""The Libri2Mix layout (LibriMix's scripts run on LibriSpeech and WHAM!) read into mixture manifests.

Called by scripts/prep_mixtures.py (``layout: libri2mix``).

Layout: ``<root>/wav{8,16}k/{min,max}/<split>/{mix_clean,mix_both,s1,s2,noise}/<name>.wav``
with splits ``train-100``, ``train-360``, ``dev``, ``test``. The train partition gathers the
training splits asked for; ``mix_clean`` mixtures are s1 + s2, ``mix_both`` ones add the
noise (recorded as the mixture's noise). Names are ``<utt1>_<utt2>``, LibriSpeech ids whose
first field is the speaker.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from speechbed.corpora.manifest import manifest_path
from speechbed.corpora.mixtures import Mixture, mixtures_in_folders, write_mixtures
from speechbed.errors import UserInputError

TRAIN_SPLITS = ("train-100", "train-360")
SOURCES = ("s1", "s2")


def librispeech_speakers(name: str) -> list[str]:
    """The speakers of a Libri2Mix name (each utterance id's first field)."""
    return [utterance.split("-")[0] for utterance in name.split("_")]


def read_libri2mix(
    root: str | Path,
    sample_rate: int = 8000,
    mode: Literal["min", "max"] = "min",
    mixture: Literal["mix_clean", "mix_both"] = "mix_clean",
    train_splits: Sequence[str] = ("train-100",),
) -> dict[str, list[Mixture]]:
    """Every partition's mixtures (train from ``train_splits``, dev, test), by partition name."""
    unknown = sorted(set(train_splits) - set(TRAIN_SPLITS))
    if unknown or not train_splits:
        raise UserInputError(
            f"train_splits {list(train_splits)}: choose among {', '.join(TRAIN_SPLITS)}"
        )
    if sample_rate not in (8000, 16000):
        raise UserInputError(f"sample_rate {sample_rate}: Libri2Mix is wav8k or wav16k")
    base = Path(root) / f"wav{sample_rate // 1000}k" / mode
    splits = {"train": list(train_splits), "dev": ["dev"], "test": ["test"]}
    found: dict[str, list[Mixture]] = {}
    for partition, names in splits.items():
        found[partition] = []
        for name in names:
            folder = base / name
            found[partition] += mixtures_in_folders(
                folder / mixture,
                [folder / source for source in SOURCES],
                sample_rate,
                noise_folder=folder / "noise" if mixture == "mix_both" else None,
                speakers_of=librispeech_speakers,
            )
    return found


def prepare_libri2mix(
    root: str | Path,
    output_folder: str | Path,
    sample_rate: int = 8000,
    mode: Literal["min", "max"] = "min",
    mixture: Literal["mix_clean", "mix_both"] = "mix_clean",
    train_splits: Sequence[str] = ("train-100",),
) -> dict[str, int]:
    """Write ``<output_folder>/{train,dev,test}.jsonl``; returns the mixtures per partition."""
    partitions = read_libri2mix(root, sample_rate, mode, mixture, train_splits)
    for partition, mixtures in partitions.items():
        write_mixtures(manifest_path(output_folder, partition), mixtures)
    return {partition: len(mixtures) for partition, mixtures in partitions.items()}
