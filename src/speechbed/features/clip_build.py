"""Builds a keyword-spotting feature store from a clip manifest: read clips, compute in batches, write.

Called by scripts/compute_clip_features.py, one call per partition. The store has the layout
of every feature store (speechbed.features.cache, written by ``FeatureStoreWriter``, with its
integrity record and lineage fingerprint): each clip is one "utterance" of fixed frames, its
one token the class id, and the store's ``token_list`` the class names (``classes.txt``).
Up-to-date stores that pass their integrity check are skipped; damaged ones rebuilt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from speechbed.corpora.manifest import manifest_hash
from speechbed.corpora.speech_commands import CLASSES_FILE, read_clip, read_clips
from speechbed.errors import UserInputError
from speechbed.features.cache import read_store_attributes
from speechbed.features.clip_computers import ClipFeatureComputer
from speechbed.features.clip_settings import (
    ClipFeatureSettings,
    clip_feature_name,
    clip_settings_hash,
    resolve_clip_feature,
)
from speechbed.features.integrity import DamagedFeatureStore, check_store
from speechbed.features.store_writer import FeatureStoreWriter
from speechbed.outputs import remove_dead_partials

#: int16 sample values -> the unit scale the clip features take.
UNIT_SCALE = 1.0 / 32768.0


@dataclass(frozen=True)
class ClipStoreResult:
    path: Path
    skipped: bool
    num_clips: int
    seconds: float
    damage: str | None = None


def read_classes(manifest_folder: str | Path) -> list[str]:
    path = Path(manifest_folder) / CLASSES_FILE
    if not path.is_file():
        raise UserInputError(f"{path}: no class list (run scripts/prep_speech_commands.py)")
    return path.read_text(encoding="utf-8").split()


def build_clip_store(
    manifest_folder: str | Path,
    partition: str,
    feature: str | dict[str, Any] | ClipFeatureSettings,
    output_folder: str | Path,
    device: str = "cpu",
    batch_size: int = 64,
    force: bool = False,
    progress: bool = True,
) -> ClipStoreResult:
    """Compute ``feature`` of every clip of ``<manifest_folder>/<partition>.jsonl`` into
    ``<output_folder>/<partition>.zarr``."""
    started = time.perf_counter()
    source = Path(manifest_folder) / f"{partition}.jsonl"
    clips = read_clips(source)
    classes = read_classes(manifest_folder)
    settings = resolve_clip_feature(feature)
    hashes = {"settings_hash": clip_settings_hash(settings), "manifest_hash": manifest_hash(source)}
    target = Path(output_folder) / f"{partition}.zarr"
    remove_dead_partials(target)
    existing = read_store_attributes(target)
    damage = None
    if not force and existing is not None and all(existing.get(k) == v for k, v in hashes.items()):
        try:
            check_store(target)
            return ClipStoreResult(target, True, len(clips), time.perf_counter() - started)
        except DamagedFeatureStore as error:
            damage = error.problem
    ids = {name: index for index, name in enumerate(classes)}
    unknown = sorted({clip.label for clip in clips} - set(ids))
    if unknown:
        raise UserInputError(f"{source}: labels {unknown} are not in {CLASSES_FILE}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserInputError("device 'cuda' asked for, but torch sees no CUDA device")
    computer = ClipFeatureComputer(settings, device)
    frames = settings.num_frames
    attributes = {
        "feature_settings": settings.model_dump(),
        "feature_name": clip_feature_name(settings),
        "partition": partition,
        "num_frames": frames * len(clips),
        "token_list": classes,
        "clip_store": True,
        **hashes,
    }
    with FeatureStoreWriter(
        target,
        [clip.id for clip in clips],
        [frames] * len(clips),
        settings.num_features,
        [[ids[clip.label]] for clip in clips],
        attributes,
    ) as writer:
        bar = tqdm(
            total=len(clips), desc=f"{partition} {settings.kind}", unit="clip", disable=not progress
        )
        for first in range(0, len(clips), batch_size):
            batch = np.stack([read_clip(clip) for clip in clips[first : first + batch_size]])
            with torch.no_grad():
                feats = computer(torch.from_numpy(batch * UNIT_SCALE)).cpu().numpy()
            writer.write(first, list(feats))
            bar.update(len(batch))
        bar.close()
        writer.commit()
    return ClipStoreResult(target, False, len(clips), time.perf_counter() - started, damage)
