"""The wsj0-2mix layout (Hershey et al. 2016's scripts run on WSJ0) read into mixture manifests.

Called by scripts/prep_mixtures.py (``layout: wsj0_2mix``); the synthetic mixtures
(speechbed.corpora.synthetic_mixtures) are written in this layout too.

Layout: ``<root>/wav{8,16}k/{min,max}/{tr,cv,tt}/{mix,s1,s2}/<name>.wav``, the same name in
each folder; ``tr``, ``cv``, ``tt`` become the partitions train, dev, test. A ``noise`` folder
beside them (the synthetic set with noise) is recorded as the mixture's noise. Names are
``<utt1>_<gain1>_<utt2>_<gain2>``; the first three characters of a WSJ0 id are its speaker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from speechbed.corpora.manifest import manifest_path
from speechbed.corpora.mixtures import Mixture, mixtures_in_folders, write_mixtures
from speechbed.errors import UserInputError

#: The layout's split folder of each manifest partition.
SPLITS = {"train": "tr", "dev": "cv", "test": "tt"}
SOURCES = ("s1", "s2")


def wsj0_2mix_folder(
    root: str | Path, sample_rate: int, mode: Literal["min", "max"], partition: str
) -> Path:
    """``<root>/wav8k/min/tr`` and the like: one partition's folder."""
    if sample_rate % 1000:
        raise UserInputError(f"sample_rate {sample_rate}: wsj0-2mix folders are wav8k or wav16k")
    return Path(root) / f"wav{sample_rate // 1000}k" / mode / SPLITS[partition]


def wsj0_speakers(name: str) -> list[str]:
    """The two speakers of a wsj0-2mix name: the first 3 characters of each WSJ0 utterance id,
    or what comes before ``-`` in a synthetic TIMIT id (``fadg0-si471``)."""
    parts = name.split("_")
    if len(parts) != 4:
        return []
    return [part.split("-")[0] if "-" in part else part[:3] for part in (parts[0], parts[2])]


def read_wsj0_2mix(
    root: str | Path, sample_rate: int = 8000, mode: Literal["min", "max"] = "min"
) -> dict[str, list[Mixture]]:
    """Every partition's mixtures, by partition name (train, dev, test)."""
    found = {}
    for partition in SPLITS:
        folder = wsj0_2mix_folder(root, sample_rate, mode, partition)
        noise = folder / "noise"
        found[partition] = mixtures_in_folders(
            folder / "mix",
            [folder / source for source in SOURCES],
            sample_rate,
            noise_folder=noise if noise.is_dir() else None,
            speakers_of=wsj0_speakers,
        )
    return found


def prepare_wsj0_2mix(
    root: str | Path,
    output_folder: str | Path,
    sample_rate: int = 8000,
    mode: Literal["min", "max"] = "min",
) -> dict[str, int]:
    """Write ``<output_folder>/{train,dev,test}.jsonl``; returns the mixtures per partition."""
    partitions = read_wsj0_2mix(root, sample_rate, mode)
    for partition, mixtures in partitions.items():
        write_mixtures(manifest_path(output_folder, partition), mixtures)
    return {partition: len(mixtures) for partition, mixtures in partitions.items()}
