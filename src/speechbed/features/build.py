"""Builds a feature cache from a partition's manifest: read audio, compute in batches, write the store.

Called by scripts/compute_features.py (one call per partition); skips stores that are up to date
and pass their integrity check (speechbed.features.integrity), rebuilds the others.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from speechbed.corpora.manifest import (
    MANIFEST_SUFFIX,
    TOKENS_FILE,
    Utterance,
    manifest_hash,
    manifest_path,
    read_manifest,
    read_tokens,
)
from speechbed.corpora.phones import PHONES_48
from speechbed.corpora.sphere import read_sphere
from speechbed.errors import UserInputError
from speechbed.features.cache import read_store_attributes
from speechbed.features.computers import make_computer
from speechbed.features.integrity import DamagedFeatureStore, check_store, count_chunks
from speechbed.features.settings import (
    FbankSettings,
    RawSettings,
    SigbankSettings,
    feature_name,
    resolve_feature,
    settings_hash,
)
from speechbed.features.store_writer import FeatureStoreWriter
from speechbed.outputs import remove_dead_partials

#: Utterances read ahead and sorted by length, so each computed batch pads little.
_WINDOW_BATCHES = 8
_TOKEN_IDS = {phone: index for index, phone in enumerate(PHONES_48)}


@dataclass(frozen=True)
class CacheBuildResult:
    """What one partition's build did."""

    path: Path
    skipped: bool
    num_utterances: int
    num_frames: int
    num_features: int
    seconds: float
    #: Why an up-to-date store was rebuilt: what its integrity check found (None: it was not).
    damage: str | None = None
    #: Chunks whose checksums were read and checked (``verify``) on a skipped store.
    verified_chunks: int = 0
    #: Temporary stores of dead processes removed before building.
    removed_partials: tuple[Path, ...] = ()


def manifest_partitions(manifest_folder: str | Path) -> list[str]:
    """The partitions with a manifest in ``manifest_folder`` (e.g. dev, test, train), sorted."""
    folder = Path(manifest_folder)
    names = sorted(
        path.name[: -len(MANIFEST_SUFFIX)] for path in folder.glob(f"*{MANIFEST_SUFFIX}")
    )
    if not names:
        raise UserInputError(
            f"{folder}: no manifests (*{MANIFEST_SUFFIX}) here; run scripts/prep_timit.py first"
        )
    return names


def store_path(output_folder: str | Path, partition: str) -> Path:
    """Where a partition's store lives: ``<output_folder>/<partition>.zarr``."""
    return Path(output_folder) / f"{partition}.zarr"


def token_ids(utterance: Utterance, source: Path) -> np.ndarray:
    """The utterance's 48-phone labels as token ids (index in PHONES_48)."""
    try:
        return np.array([_TOKEN_IDS[phone] for phone in utterance.phones_48], dtype=np.int32)
    except KeyError as error:
        raise UserInputError(
            f"{source}: utterance {utterance.id}: phone {error.args[0]!r} is not in the 48-phone set"
        ) from None


def _check_token_list(manifest_folder: Path) -> None:
    tokens_file = manifest_folder / TOKENS_FILE
    if tokens_file.is_file() and read_tokens(tokens_file) != list(PHONES_48):
        raise UserInputError(
            f"{tokens_file}: differs from speechbed's 48-phone list; token ids would not match"
        )


def read_utterance_audio(utterance: Utterance, sampling_rate: int, source: Path) -> np.ndarray:
    """The utterance's int16 samples (the computers scale them); the count must match the manifest."""
    audio_path = Path(utterance.audio_path)
    if not audio_path.is_absolute():
        audio_path = source.parent / audio_path
    samples, _ = read_sphere(audio_path, expected_rate=sampling_rate)
    if len(samples) != utterance.num_samples:
        raise UserInputError(
            f"{audio_path}: {len(samples)} samples, but {source} says {utterance.num_samples} "
            f"(utterance {utterance.id}); re-run prep"
        )
    return samples


def _resolve_device(device: str) -> str:
    if device == "cuda" and not torch.cuda.is_available():
        raise UserInputError("device 'cuda' asked for, but torch sees no CUDA device")
    return device


def build_feature_cache(
    manifest_folder: str | Path,
    partition: str,
    feature: str | dict[str, Any] | FbankSettings | SigbankSettings | RawSettings,
    output_folder: str | Path,
    device: str = "cpu",
    batch_size: int = 16,
    force: bool = False,
    progress: bool = True,
    verify: bool = False,
) -> CacheBuildResult:
    """Compute ``feature`` for every utterance of ``partition`` into ``<output_folder>/<partition>.zarr``.

    A store whose settings hash and manifest hash match and that passes its integrity check
    (every chunk there with its recorded size, metadata unchanged; with ``verify``, every
    chunk's checksum read and checked) is left alone (``skipped``) unless ``force``; a store
    that fails the check is rebuilt (``damage`` says why). The store is written under a
    temporary name and renamed when complete; temporaries of dead processes are removed.
    """
    started = time.perf_counter()
    folder = Path(manifest_folder)
    source = manifest_path(folder, partition)
    utterances = read_manifest(source)
    settings = resolve_feature(feature)
    hashes = {"settings_hash": settings_hash(settings), "manifest_hash": manifest_hash(source)}
    target = store_path(output_folder, partition)
    removed = tuple(remove_dead_partials(target))
    existing = read_store_attributes(target)
    damage = None
    if not force and existing is not None:
        if all(existing.get(key) == value for key, value in hashes.items()):
            try:
                record = check_store(target, verify=verify)
            except DamagedFeatureStore as error:
                damage = error.problem
            else:
                frames = int(existing.get("num_frames", 0))
                return CacheBuildResult(
                    target,
                    True,
                    len(utterances),
                    frames,
                    settings.num_features,
                    time.perf_counter() - started,
                    verified_chunks=count_chunks(record) if verify else 0,
                    removed_partials=removed,
                )
    _check_token_list(folder)
    computer = make_computer(settings, _resolve_device(device))
    tokens = [token_ids(utterance, source) for utterance in utterances]
    counts = [computer.num_frames(utterance.num_samples) for utterance in utterances]
    attributes = {
        "feature_settings": settings.model_dump(),
        "feature_name": feature_name(settings),
        "partition": partition,
        "num_frames": int(sum(counts)),
        "token_list": list(PHONES_48),
        **hashes,
    }
    ids = [utterance.id for utterance in utterances]
    window = batch_size * _WINDOW_BATCHES
    with FeatureStoreWriter(
        target, ids, counts, settings.num_features, tokens, attributes
    ) as writer:
        bar = tqdm(
            total=len(utterances),
            desc=f"{partition} {attributes['feature_name'] or settings.kind}",
            unit="utt",
            disable=not progress,
        )
        for first in range(0, len(utterances), window):
            chunk = utterances[first : first + window]
            signals = [read_utterance_audio(u, settings.sampling_rate, source) for u in chunk]
            by_length = np.argsort([len(signal) for signal in signals], kind="stable")
            feats: list[np.ndarray | None] = [None] * len(chunk)
            for start in range(0, len(chunk), batch_size):
                rows = by_length[start : start + batch_size]
                for row, computed in zip(rows, computer([signals[r] for r in rows]), strict=True):
                    feats[row] = computed
                bar.update(len(rows))
            writer.write(first, feats)
        bar.close()
        writer.commit()
    return CacheBuildResult(
        target,
        False,
        len(utterances),
        int(sum(counts)),
        settings.num_features,
        time.perf_counter() - started,
        damage=damage,
        removed_partials=removed,
    )
