"""The separation cache: per partition, a feature store of mixture and source spectra and samples.

Built by scripts/compute_separation_cache.py from mixture manifests (speechbed.corpora.mixtures);
read by the separation task's loader (speechbed.tasks.separation). The store is an ordinary
feature store (speechbed.features.cache): written by ``FeatureStoreWriter``, recorded and
checked by speechbed.features.integrity, fingerprinted for lineage, read through
``FeatureCache`` (chunk cache, in-memory loading). Its ``feats`` columns per STFT frame:

- ``[0, F)``: the mixture's magnitude (F = window // 2 + 1 bins)
- ``[F, (C + 1) F)``: each of the C sources' magnitudes
- then ``hop`` columns of the mixture's samples and ``hop`` per source: frame t holds samples
  ``[t * hop, (t + 1) * hop)`` (zero past the end), so the waveforms travel with the spectra

``tokens`` holds each mixture's sample count; attribute ``separation`` the layout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from speechbed.corpora.manifest import manifest_hash, manifest_path
from speechbed.corpora.mixtures import Mixture, read_mixtures, read_wav
from speechbed.errors import UserInputError
from speechbed.features.build import CacheBuildResult, store_path
from speechbed.features.cache import FeatureCache, read_store_attributes
from speechbed.features.integrity import DamagedFeatureStore, check_store, count_chunks
from speechbed.features.separation_job import SeparationFeatureSettings
from speechbed.features.store_writer import FeatureStoreWriter
from speechbed.outputs import remove_dead_partials

#: Mixtures computed, then written, together.
_WRITE_BATCH = 32


def analysis_window(settings: SeparationFeatureSettings) -> torch.Tensor:
    """The periodic (square-rooted) Hann window of the transform, float32."""
    window = torch.hann_window(settings.window_length, periodic=True)
    return window.sqrt() if settings.window == "sqrt_hann" else window


def stft(samples: torch.Tensor, settings: SeparationFeatureSettings) -> torch.Tensor:
    """Complex STFT (..., frames, bins) of samples (..., n); frames = 1 + n // hop (centred)."""
    spectrum = torch.stft(
        samples,
        n_fft=settings.window_length,
        hop_length=settings.hop_length,
        window=analysis_window(settings).to(samples.device),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    return spectrum.transpose(-1, -2)


def istft(spectrum: torch.Tensor, settings: SeparationFeatureSettings, length: int) -> torch.Tensor:
    """Samples (..., length) of a complex STFT (..., frames, bins): the inverse of ``stft``."""
    return torch.istft(
        spectrum.transpose(-1, -2),
        n_fft=settings.window_length,
        hop_length=settings.hop_length,
        window=analysis_window(settings).to(spectrum.device),
        center=True,
        length=length,
    )


def num_frames(num_samples: int, settings: SeparationFeatureSettings) -> int:
    return 1 + num_samples // settings.hop_length


def _mixture_columns(
    mixture: Mixture, settings: SeparationFeatureSettings, source: Path
) -> np.ndarray:
    """One mixture's rows of ``feats`` (layout in the module docstring)."""
    signals = [read_wav(mixture.mixture_path, settings.sample_rate)]
    signals += [read_wav(path, settings.sample_rate) for path in mixture.source_paths]
    for path, signal in zip([mixture.mixture_path, *mixture.source_paths], signals, strict=True):
        if len(signal) != mixture.num_samples:
            raise UserInputError(
                f"{path}: {len(signal)} samples, but {source} says {mixture.num_samples} "
                f"(mixture {mixture.id}); re-run prep_mixtures"
            )
    waves = torch.from_numpy(np.stack(signals))
    magnitudes = stft(waves, settings).abs()  # (1 + C, T, F)
    frames, hop = magnitudes.shape[1], settings.hop_length
    padded = torch.zeros(len(signals), frames * hop)
    padded[:, : mixture.num_samples] = waves
    blocks = [*magnitudes, *padded.reshape(len(signals), frames, hop)]
    return torch.cat(blocks, dim=1).numpy()


def separation_layout(settings: SeparationFeatureSettings, num_sources: int) -> dict[str, Any]:
    """The ``separation`` attribute: column ranges of each part of ``feats``."""
    bins, hop = settings.num_bins, settings.hop_length
    spectra = (1 + num_sources) * bins
    return {
        "num_sources": num_sources,
        "num_bins": bins,
        "hop_length": hop,
        "mixture_magnitude": [0, bins],
        "source_magnitudes": [bins, spectra],
        "mixture_samples": [spectra, spectra + hop],
        "source_samples": [spectra + hop, spectra + (1 + num_sources) * hop],
    }


def build_separation_store(
    manifest_folder: str | Path,
    partition: str,
    settings: SeparationFeatureSettings,
    output_folder: str | Path,
    force: bool = False,
    progress: bool = True,
    verify: bool = False,
) -> CacheBuildResult:
    """Compute one partition's store (skipped when up to date and undamaged, as feature caches)."""
    started = time.perf_counter()
    source = manifest_path(manifest_folder, partition)
    mixtures = read_mixtures(source)
    hashes = {"settings_hash": settings.settings_hash(), "manifest_hash": manifest_hash(source)}
    target = store_path(output_folder, partition)
    removed = tuple(remove_dead_partials(target))
    existing = read_store_attributes(target)
    num_sources = len(mixtures[0].source_paths) if mixtures else 2
    width = (1 + num_sources) * (settings.num_bins + settings.hop_length)
    damage = None
    if not force and existing is not None and all(existing.get(k) == v for k, v in hashes.items()):
        try:
            record = check_store(target, verify=verify)
        except DamagedFeatureStore as error:
            damage = error.problem
        else:
            frames = int(existing.get("num_frames", 0))
            return CacheBuildResult(
                target, True, len(mixtures), frames, width, time.perf_counter() - started,
                verified_chunks=count_chunks(record) if verify else 0, removed_partials=removed,
            )  # fmt: skip
    for mixture in mixtures:
        if len(mixture.source_paths) != num_sources:
            raise UserInputError(f"{source}: mixture {mixture.id} has a different source count")
    counts = [num_frames(mixture.num_samples, settings) for mixture in mixtures]
    attributes = {
        "feature_settings": settings.model_dump(),
        "feature_name": settings.name(),
        "partition": partition,
        "num_frames": int(sum(counts)),
        "token_list": [],
        "separation": separation_layout(settings, num_sources),
        "manifest_path": str(source.absolute()),
        **hashes,
    }
    samples = [[mixture.num_samples] for mixture in mixtures]
    ids = [mixture.id for mixture in mixtures]
    with FeatureStoreWriter(target, ids, counts, width, samples, attributes) as writer:
        for first in tqdm(
            range(0, len(mixtures), _WRITE_BATCH),
            desc=f"{partition} {settings.name()}",
            unit="batch",
            disable=not progress,
        ):
            batch = mixtures[first : first + _WRITE_BATCH]
            writer.write(first, [_mixture_columns(m, settings, source) for m in batch])
        writer.commit()
    return CacheBuildResult(
        target, False, len(mixtures), int(sum(counts)), width, time.perf_counter() - started,
        damage=damage, removed_partials=removed,
    )  # fmt: skip


@dataclass(frozen=True)
class SeparationExample:
    """One mixture as stored: magnitudes (frames, bins) and samples."""

    mixture_magnitude: np.ndarray  # (T, F)
    source_magnitudes: np.ndarray  # (C, T, F)
    mixture_samples: np.ndarray  # (n,)
    source_samples: np.ndarray  # (C, n)


class SeparationStore:
    """Reads a separation store (a checked ``FeatureCache``) as ``SeparationExample``s."""

    def __init__(self, path: str | Path, in_memory: bool = False) -> None:
        self.cache = FeatureCache(path, in_memory=in_memory)
        layout = self.cache.attributes.get("separation")
        if not isinstance(layout, dict):
            raise UserInputError(
                f"{path}: a feature store, but not a separation store (no 'separation' "
                "attribute); build it with scripts/compute_separation_cache.py"
            )
        self.layout: dict[str, Any] = layout
        self.settings = SeparationFeatureSettings(**self.cache.attributes["feature_settings"])
        self.num_sources: int = int(layout["num_sources"])
        self.num_bins: int = int(layout["num_bins"])

    @property
    def path(self) -> Path:
        return self.cache.path

    @property
    def ids(self) -> list[str]:
        return self.cache.ids

    @property
    def num_frames(self) -> np.ndarray:
        return self.cache.num_frames

    def __len__(self) -> int:
        return len(self.cache)

    def num_samples(self, index: int) -> int:
        return int(self.cache.tokens(index)[0])

    def _split(self, index: int, rows: np.ndarray) -> SeparationExample:
        def columns(name: str) -> np.ndarray:
            start, end = self.layout[name]
            return rows[:, start:end]

        count, frames = self.num_samples(index), rows.shape[0]
        sources = columns("source_magnitudes").reshape(frames, self.num_sources, self.num_bins)
        source_samples = columns("source_samples").reshape(frames, self.num_sources, -1)
        return SeparationExample(
            mixture_magnitude=columns("mixture_magnitude"),
            source_magnitudes=sources.transpose(1, 0, 2),
            mixture_samples=columns("mixture_samples").reshape(-1)[:count],
            source_samples=source_samples.transpose(1, 0, 2).reshape(self.num_sources, -1)[
                :, :count
            ],
        )

    def examples(self, indices: list[int]) -> list[SeparationExample]:
        """Several mixtures; the chunks they need are read at once."""
        return [
            self._split(i, rows)
            for i, rows in zip(indices, self.cache.feats_many(indices), strict=True)
        ]

    def example(self, index: int) -> SeparationExample:
        return self.examples([index])[0]

    def load_into_memory(self) -> None:
        self.cache.load_into_memory()
