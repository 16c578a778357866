"""Two-speaker mixtures of the synthetic TIMIT's utterances, written in the wsj0-2mix layout.

Called by scripts/make_mixtures.py; scripts/prep_mixtures.py (``layout: wsj0_2mix``) then reads
the result like the real wsj0-2mix.

Each partition of the prepared corpus (train, dev, test: TIMIT's partitions share no speaker,
which is checked) gives mixtures of two utterances by two different speakers of that
partition only. The utterances are resampled to ``sample_rate``, brought to the same RMS, the
second set at a level relative to the first drawn from ``relative_level_db`` and started at
an offset drawn from ``[0, max_offset_seconds]``; the mixture lasts until both have ended
(wsj0-2mix's ``max`` mode). Optional white noise at an SNR drawn from ``noise_snr_db``
(against the two speakers' sum) goes to ``noise/``. Everything is scaled to peak at 0.9 and
written as 16-bit PCM, the mixture being the exact sum of the written parts. The project's
own mixer rather than Scaper: Scaper's ``soxbindings`` dependency does not build here (it
needs the libsox headers), and its event model draws from label folders, not speaker pairs.
The same seed gives the same bytes; a per-split ``mixtures.jsonl`` records each mixture's
utterances, speakers, level and offset.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import resample_poly
from tqdm import tqdm

from speechbed.code_versions import CODE_VERSIONS
from speechbed.corpora.manifest import Utterance, manifest_hash, manifest_path, read_manifest
from speechbed.corpora.sphere import read_sphere
from speechbed.corpora.wsj0_2mix import SOURCES, SPLITS, wsj0_2mix_folder
from speechbed.errors import UserInputError
from speechbed.lineage import digest, write_folder_fingerprint
from speechbed.outputs import atomic_output

#: Bump when the mixer's output changes, so mixtures made by older code are redone.
MIXER_VERSION = CODE_VERSIONS["separation_mixtures"]
#: Written at the root: the settings the mixtures were made with (also marks them as ours).
STAMP_FILE = "SPEECHBED_MIXTURES.json"
#: Mixtures per partition of each scale.
SCALES = {
    "tiny": {"train": 48, "dev": 12, "test": 12},
    "small": {"train": 600, "dev": 60, "test": 60},
}
PEAK = 0.9
LAYOUT_MODE = "max"


@dataclass(frozen=True)
class MixingSettings:
    """How the mixtures are drawn (every value part of the output's fingerprint)."""

    scale: str = "tiny"
    seed: int = 0
    sample_rate: int = 8000
    relative_level_db: tuple[float, float] = (-5.0, 5.0)
    max_offset_seconds: float = 0.5
    noise_snr_db: tuple[float, float] | None = None

    def to_json(self) -> dict:
        return {
            "scale": self.scale,
            "seed": self.seed,
            "sample_rate": self.sample_rate,
            "relative_level_db": list(self.relative_level_db),
            "max_offset_seconds": self.max_offset_seconds,
            "noise_snr_db": None if self.noise_snr_db is None else list(self.noise_snr_db),
            "mixer_version": MIXER_VERSION,
        }


def _partition_speakers(manifests: dict[str, list[Utterance]], folder: Path) -> None:
    """Refuse a corpus whose partitions share a speaker (a mixture would leak it into test)."""
    seen: dict[str, str] = {}
    for partition, utterances in manifests.items():
        for utterance in utterances:
            other = seen.setdefault(utterance.speaker, partition)
            if other != partition:
                raise UserInputError(
                    f"{folder}: speaker {utterance.speaker} is in both {other} and {partition}; "
                    "mixtures need speaker-disjoint partitions"
                )
        if len({u.speaker for u in utterances}) < 2:
            raise UserInputError(f"{manifest_path(folder, partition)}: fewer than two speakers")


def _load(utterance: Utterance, sample_rate: int) -> np.ndarray:
    samples, rate = read_sphere(utterance.audio_path, expected_rate=None)
    signal = samples.astype(np.float64) / 32768.0
    if rate != sample_rate:
        divisor = np.gcd(rate, sample_rate)
        signal = resample_poly(signal, sample_rate // divisor, rate // divisor)
    rms = np.sqrt(np.mean(signal**2))
    if rms == 0:
        raise UserInputError(f"{utterance.audio_path}: silent utterance cannot be mixed")
    return signal / rms


def mix_pair(
    first: np.ndarray,
    second: np.ndarray,
    level_db: float,
    offset: int,
    noise: np.ndarray | None = None,
    noise_snr_db: float | None = None,
) -> dict[str, np.ndarray]:
    """int16 parts ``s1``, ``s2`` (and ``noise``) and their exact sum ``mix``.

    ``second`` is set ``level_db`` above ``first`` (same RMS to start with) and delayed by
    ``offset`` samples; ``noise`` (white, as long as the mixture) is set ``noise_snr_db``
    below the speakers' sum. Everything is scaled so that the largest part peaks at 0.9.
    """
    length = max(len(first), offset + len(second))
    parts = {"s1": np.zeros(length), "s2": np.zeros(length)}
    parts["s1"][: len(first)] = first
    parts["s2"][offset : offset + len(second)] = second * 10 ** (level_db / 20)
    if noise is not None and noise_snr_db is not None:
        speech = parts["s1"] + parts["s2"]
        noise = noise[:length]
        gain = np.sqrt(np.mean(speech**2) / np.mean(noise**2)) * 10 ** (-noise_snr_db / 20)
        parts["noise"] = noise * gain
    total = sum(parts.values())
    scale = PEAK / max(np.abs(p).max() for p in [*parts.values(), total])
    quantized = {name: np.round(p * scale * 32767).astype(np.int16) for name, p in parts.items()}
    mixed = sum(q.astype(np.int32) for q in quantized.values())
    quantized["mix"] = np.clip(mixed, -32768, 32767).astype(np.int16)
    return quantized


def _mixture_name(first: Utterance, second: Utterance, level_db: float) -> str:
    return f"{first.id}_{0.0:.4f}_{second.id}_{level_db:.4f}"


def _mix_partition(
    utterances: list[Utterance],
    partition: str,
    count: int,
    settings: MixingSettings,
    folder: Path,
    progress: bool,
) -> None:
    rng = np.random.default_rng([settings.seed, zlib.crc32(partition.encode())])
    for name in (*SOURCES, "mix", *(["noise"] if settings.noise_snr_db else [])):
        (folder / name).mkdir(parents=True)
    records = []
    cache: dict[str, np.ndarray] = {}
    names = set()
    for _ in tqdm(range(count), desc=f"mixing {partition}", unit="mix", disable=not progress):
        first = utterances[rng.integers(len(utterances))]
        others = [u for u in utterances if u.speaker != first.speaker]
        second = others[rng.integers(len(others))]
        level = float(rng.uniform(*settings.relative_level_db))
        offset = int(rng.integers(0, int(settings.max_offset_seconds * settings.sample_rate) + 1))
        noise_snr = float(rng.uniform(*settings.noise_snr_db)) if settings.noise_snr_db else None
        signals = [
            cache[u.id] if u.id in cache else cache.setdefault(u.id, _load(u, settings.sample_rate))
            for u in (first, second)
        ]
        length = max(len(signals[0]), offset + len(signals[1]))
        noise = rng.standard_normal(length) if noise_snr is not None else None
        parts = mix_pair(signals[0], signals[1], level, offset, noise, noise_snr)
        name = _mixture_name(first, second, level)
        if name in names:  # the same pair at the same level: draw again rather than overwrite
            continue
        names.add(name)
        for part, samples in parts.items():
            soundfile.write(
                str(folder / part / f"{name}.wav"), samples, settings.sample_rate, subtype="PCM_16"
            )
        records.append(
            {
                "name": name,
                "utterances": [first.id, second.id],
                "speakers": [first.speaker, second.speaker],
                "relative_level_db": level,
                "offset_samples": offset,
                "noise_snr_db": noise_snr,
                "num_samples": length,
            }
        )
    lines = "".join(json.dumps(record, sort_keys=True) + "\n" for record in records)
    (folder / "mixtures.jsonl").write_text(lines, encoding="utf-8")


def make_mixtures(
    manifest_folder: str | Path,
    output_path: str | Path,
    settings: MixingSettings,
    force: bool = False,
    progress: bool = True,
) -> dict | None:
    """Write the mixtures under ``output_path`` (atomically); None when they exist as asked."""
    if settings.scale not in SCALES:
        raise UserInputError(f"scale {settings.scale!r}: choose one of {', '.join(SCALES)}")
    folder = Path(manifest_folder)
    sources = {partition: manifest_path(folder, partition) for partition in SPLITS}
    manifests = {partition: read_manifest(path) for partition, path in sources.items()}
    _partition_speakers(manifests, folder)
    stamp = {
        "settings": settings.to_json(),
        "manifests": {partition: manifest_hash(path) for partition, path in sources.items()},
    }
    output = Path(output_path)
    if output.exists():
        if not (output / STAMP_FILE).is_file():
            raise UserInputError(
                f"{output}: exists and holds no {STAMP_FILE} (not mixtures made by speechbed); "
                "remove it or choose another output_path"
            )
        if not force and json.loads((output / STAMP_FILE).read_text()) == stamp:
            return None
    with atomic_output(output) as temporary:
        temporary.mkdir()
        for partition, count in SCALES[settings.scale].items():
            split = wsj0_2mix_folder(temporary, settings.sample_rate, LAYOUT_MODE, partition)
            _mix_partition(manifests[partition], partition, count, settings, split, progress)
        (temporary / STAMP_FILE).write_text(json.dumps(stamp, sort_keys=True), encoding="utf-8")
        write_folder_fingerprint(temporary, digest([json.dumps(stamp, sort_keys=True)]))
    return stamp
