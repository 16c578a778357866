"""Separation cache speed: reading mixture and source spectra from the store against recomputing them.

Run by `make bench` (benchmarks/run_all.py) or `.venv/bin/python benchmarks/run_all.py separation`.
Both sides run in this process on the same 60 two-speaker mixtures (8 kHz, 2-5 s, a wsj0-2mix
tree written as 16-bit WAV): recomputing reads the mixture and both sources and takes their
STFT magnitudes (32 ms sqrt-Hann, 8 ms hop, as the cache holds them).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

from speechbed.corpora.mixtures import read_mixtures, read_wav
from speechbed.corpora.wsj0_2mix import prepare_wsj0_2mix
from speechbed.features.loader import BucketBatchSampler
from speechbed.features.separation_job import SeparationFeatureSettings
from speechbed.features.separation_store import (
    SeparationStore,
    build_separation_store,
    stft,
)

NUM_MIXTURES = 60
RATE = 8000
ROUNDS = 7
TARGET_SPEEDUP = 2.0


def _write_tree(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split in ("tr", "cv", "tt"):
        for index in range(NUM_MIXTURES if split == "tr" else 1):
            length = int(rng.integers(2 * RATE, 5 * RATE))
            # voiced-like sources: harmonics of a slowly moving pitch, amplitude-modulated
            t = np.arange(length) / RATE
            sources = []
            for pitch in rng.uniform(90, 260, size=2):
                phase = 2 * np.pi * np.cumsum(pitch * (1 + 0.1 * np.sin(2 * t))) / RATE
                wave = sum(np.sin(k * phase) / k for k in range(1, 12))
                sources.append(0.2 * wave * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2))
            parts = {"s1": sources[0], "s2": sources[1], "mix": sources[0] + sources[1]}
            for folder, samples in parts.items():
                path = root / "wav8k" / "min" / split / folder / f"m{index}_0_n{index}_0.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                soundfile.write(path, samples / 2, RATE, subtype="PCM_16")


def main() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _main()
    finally:
        torch.set_num_threads(threads)


def _main() -> None:
    settings = SeparationFeatureSettings()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        _write_tree(folder)
        prepare_wsj0_2mix(folder, folder / "manifests")
        mixtures = read_mixtures(folder / "manifests" / "train.jsonl")
        store = build_separation_store(
            folder / "manifests", "train", settings, folder / "cache", progress=False
        ).path
        audio_seconds = sum(m.num_samples for m in mixtures) / RATE

        def recompute(_: object) -> None:
            for mixture in mixtures:
                paths = [mixture.mixture_path, *mixture.source_paths]
                waves = torch.from_numpy(np.stack([read_wav(p, RATE) for p in paths]))
                stft(waves, settings).abs()

        def read_in_memory(opened: SeparationStore) -> None:
            opened.load_into_memory()
            for index in range(len(opened)):
                opened.example(index)

        batches = list(BucketBatchSampler(SeparationStore(store).num_frames, batch_size=8, seed=0))

        def read_batches(opened: SeparationStore) -> None:
            for batch in batches:
                opened.examples(batch)

        def read_each(opened: SeparationStore) -> None:
            for index in range(len(opened)):
                opened.example(index)

        recompute_label = "spectra from WAV (read 3 files + STFT)"
        open_label = "cache, opening the store (once per run)"
        variants = {
            recompute_label: (lambda: None, recompute),
            open_label: (lambda: None, lambda _: SeparationStore(store)),
            "cache, load_into_memory() + slices": (lambda: SeparationStore(store), read_in_memory),
            "cache, bucketed batches of 8": (lambda: SeparationStore(store), read_batches),
            "cache, one mixture at a time": (lambda: SeparationStore(store), read_each),
        }
        best = {label: float("inf") for label in variants}
        for _ in range(ROUNDS):  # interleaved, so a burst of load hits every variant
            for label, (set_up, work) in variants.items():
                made = set_up()
                started = time.perf_counter()
                work(made)
                best[label] = min(best[label], time.perf_counter() - started)
    rows = [(recompute_label, best.pop(recompute_label), "1.0x", "")]
    rows.append((open_label, best.pop(open_label), "", ""))
    for label, seconds in best.items():
        ratio = rows[0][1] / seconds
        verdict = "ok" if ratio >= TARGET_SPEEDUP else "BELOW TARGET"
        rows.append((label, seconds, f"{ratio:.1f}x", verdict))
    print(
        f"{NUM_MIXTURES} mixtures, {audio_seconds:.0f} s of audio at 8 kHz (mixture + 2 sources: "
        f"3 x 129-bin magnitudes and the samples); torch on 1 CPU thread; best of {ROUNDS} "
        f"interleaved rounds; target: cache >= {TARGET_SPEEDUP:.0f}x recompute"
    )
    width = max(len(row[0]) for row in rows)
    print(f"{'what':<{width}}  {'seconds':>8}  {'speed':>7}  {'x RTF':>7}  verdict")
    for label, seconds, ratio, verdict in rows:
        print(
            f"{label:<{width}}  {seconds:8.3f}  {ratio:>7}  {audio_seconds / seconds:7.0f}  {verdict}"
        )


if __name__ == "__main__":
    main()
