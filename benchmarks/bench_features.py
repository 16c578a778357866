"""Feature speed: our fbank/sigbank against pydrobert-speech, and cache reads against recomputing.

Run by `make bench` (benchmarks/run_all.py) or `.venv/bin/python benchmarks/run_all.py features`.
Both sides run in this process on the same 50 utterances (1.5-4.5 s, written as SPHERE files).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from speechbed.corpora.manifest import Utterance, manifest_path, write_manifest
from speechbed.corpora.sphere import write_sphere
from speechbed.features import (
    NAMED_FEATURES,
    BucketBatchSampler,
    CachedUtterances,
    FeatureCache,
)
from speechbed.features.build import build_feature_cache, read_utterance_audio
from speechbed.features.computers import make_computer

NUM_UTTERANCES = 50
RATE = 16000
BATCH_SIZE = 16
TARGET_SPEEDUP = 20.0
TARGET_CACHE_SPEEDUP = 10.0
OURS_REPEATS = 5
CACHE_ROUNDS = 9


def _speech_like(num_samples: int, rng: np.random.Generator) -> np.ndarray:
    time_axis = np.arange(num_samples) / RATE
    pitch = 110 + 60 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * time_axis)
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20))
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(1, 4) * time_axis), 0, None)
    signal = 3000 * envelope * voiced + 300 * rng.standard_normal(num_samples)
    return np.clip(np.round(signal), -32768, 32767).astype(np.int16)


def _write_corpus(folder: Path) -> list[Utterance]:
    rng = np.random.default_rng(0)
    utterances = []
    for index in range(NUM_UTTERANCES):
        samples = _speech_like(int(rng.uniform(1.5, 4.5) * RATE), rng)
        audio = folder / f"utt{index:02d}.wav"
        write_sphere(audio, samples, RATE)
        utterances.append(
            Utterance(
                id=f"spk{index % 5}-sx{index}",
                speaker=f"spk{index % 5}",
                dialect="dr1",
                gender="m",
                audio_path=str(audio),
                num_samples=len(samples),
                text="",
                phones_48=["sil", "aa", "sil"],
            )
        )
    write_manifest(manifest_path(folder, "bench"), utterances)
    return utterances


def _seconds(work: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` runs (the machine is shared; the best is the least disturbed)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def _ours(name: str, signals: list[np.ndarray]) -> Callable[[], object]:
    computer = make_computer(NAMED_FEATURES[name])
    order = np.argsort([len(signal) for signal in signals])  # as the cache builder batches

    def run() -> None:
        for first in range(0, len(signals), BATCH_SIZE):
            computer([signals[i] for i in order[first : first + BATCH_SIZE]])

    return run


def _reference(name: str, signals: list[np.ndarray]) -> Callable[[], object]:
    from pydrobert.speech.alias import alias_factory_subclass_from_arg
    from pydrobert.speech.compute import FrameComputer

    computer = alias_factory_subclass_from_arg(FrameComputer, NAMED_FEATURES[name].to_pydrobert())
    as_float64 = [signal.astype(np.float64) for signal in signals]
    return lambda: [computer.compute_full(signal) for signal in as_float64]


def main() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # pydrobert-speech is single-threaded; compare per core
    try:
        _main()
    finally:
        torch.set_num_threads(threads)


def _main() -> None:
    rows: list[tuple[str, float, str, str]] = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        utterances = _write_corpus(folder)
        source = manifest_path(folder, "bench")
        signals = [read_utterance_audio(u, RATE, source) for u in utterances]
        audio_seconds = sum(len(signal) for signal in signals) / RATE
        for name in ("fbank-81-10ms", "sigbank-41-2ms"):
            ours = _ours(name, signals)
            ours()  # warm up (FFT plans, allocations)
            ours_seconds = _seconds(ours, OURS_REPEATS)
            reference_seconds = _seconds(_reference(name, signals), 1)
            ratio = reference_seconds / ours_seconds
            verdict = "ok" if ratio >= TARGET_SPEEDUP else "BELOW TARGET"
            rows.append((f"{name}: pydrobert-speech", reference_seconds, "1.0x", ""))
            rows.append((f"{name}: speechbed (torch cpu)", ours_seconds, f"{ratio:.1f}x", verdict))

        store = build_feature_cache(folder, "bench", "fbank-81-10ms", folder, progress=False).path
        fbank = make_computer(NAMED_FEATURES["fbank-81-10ms"])

        def recompute(_: object) -> None:
            audio = [read_utterance_audio(u, RATE, source) for u in utterances]
            for first in range(0, len(audio), BATCH_SIZE):
                fbank(audio[first : first + BATCH_SIZE])

        def read_in_memory(cache: FeatureCache) -> None:
            cache.load_into_memory()
            for index in range(len(cache)):
                cache.feats(index)

        batches = list(BucketBatchSampler(FeatureCache(store).num_frames, batch_size=10, seed=0))

        def read_batches(dataset: CachedUtterances) -> None:
            for batch in batches:
                dataset.__getitems__(batch)

        def read_each(dataset: CachedUtterances) -> None:
            for index in range(len(dataset)):
                dataset[index]

        recompute_label = "fbank from audio (read + compute)"
        open_label = "cache, opening the store (once per run)"
        variants = {  # label: (untimed set-up, timed work on what the set-up made)
            recompute_label: (lambda: None, recompute),
            open_label: (lambda: None, lambda _: FeatureCache(store)),
            "cache, load_into_memory() + slices": (lambda: FeatureCache(store), read_in_memory),
            "cache, bucketed batches of 10 (__getitems__)": (
                lambda: CachedUtterances(store),
                read_batches,
            ),
            "cache, one utterance at a time": (lambda: CachedUtterances(store), read_each),
        }
        best = {label: float("inf") for label in variants}
        for _ in range(CACHE_ROUNDS):  # interleaved, so a burst of load hits every variant
            for label, (set_up, work) in variants.items():
                made = set_up()
                started = time.perf_counter()
                work(made)
                best[label] = min(best[label], time.perf_counter() - started)
        recompute_seconds = best.pop(recompute_label)
        rows.append((recompute_label, recompute_seconds, "1.0x", ""))
        rows.append((open_label, best.pop(open_label), "", ""))
        for label, seconds in best.items():
            ratio = recompute_seconds / seconds
            verdict = "ok" if ratio >= TARGET_CACHE_SPEEDUP else "BELOW TARGET"
            rows.append((label, seconds, f"{ratio:.1f}x", verdict))

    print(
        f"{NUM_UTTERANCES} utterances, {audio_seconds:.0f} s of audio; torch on 1 CPU thread; "
        f"best of {OURS_REPEATS} (features) or {CACHE_ROUNDS} interleaved rounds (cache) for "
        "speechbed, 1 run for pydrobert-speech; on a shared machine timings are noisy"
    )
    print(
        f"targets: features >= {TARGET_SPEEDUP:.0f}x pydrobert, cache >= {TARGET_CACHE_SPEEDUP:.0f}x recompute"
    )
    width = max(len(row[0]) for row in rows)
    print(f"{'what':<{width}}  {'seconds':>8}  {'speed':>7}  {'x RTF':>7}  verdict")
    for label, seconds, ratio, verdict in rows:
        print(
            f"{label:<{width}}  {seconds:8.3f}  {ratio:>7}  {audio_seconds / seconds:7.0f}  {verdict}"
        )


if __name__ == "__main__":
    main()
