"""Corpus speed: synthetic utterances against bare eSpeak, SPHERE reads against libsndfile, prep rate.

Run by `make bench` (benchmarks/run_all.py) or `.venv/bin/python benchmarks/run_all.py corpora`.
Targets: the tiny corpus (100 utterances) in under 10 s, so synthesis >= 10 utterances/s.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from speechbed.corpora.espeak import Espeak
from speechbed.corpora.sentences import SentenceGenerator
from speechbed.corpora.sphere import read_sphere
from speechbed.corpora.synthesis import synthesize_utterance
from speechbed.corpora.synthetic import SCALES, make_synthetic_timit, make_voice
from speechbed.corpora.timit import prepare_timit

NUM_SENTENCES = 40
TARGET_UTTERANCES_PER_SECOND = 10.0


def _timed(function) -> float:  # noqa: ANN001
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main() -> None:
    texts = SentenceGenerator(0).unique_sentences(NUM_SENTENCES)
    voice = make_voice(0, "mabc0", "dr2")
    espeak = Espeak.get()
    espeak.synthesize(texts[0], voice)  # warm the voice data and caches
    rng = np.random.default_rng(0)
    audio_seconds = sum(
        len(synthesize_utterance(t, voice, rng, (2000, 2000)).samples) for t in texts
    )
    audio_seconds /= 16000
    bare = _timed(lambda: [espeak.synthesize(text, voice) for text in texts])
    ours = _timed(lambda: [synthesize_utterance(t, voice, rng, (2000, 2000)) for t in texts])
    with tempfile.TemporaryDirectory() as scratch:
        corpus = Path(scratch) / "tiny"
        whole = _timed(lambda: make_synthetic_timit(corpus, "tiny", seed=0, progress=False))
        utterances = 10 * sum(
            getattr(SCALES["tiny"], key)
            for key in ("train_speakers", "dev_speakers", "core_speakers", "other_test_speakers")
        )
        wavs = sorted(corpus.rglob("*.WAV"))
        ours_read = _timed(lambda: [read_sphere(path) for path in wavs])
        libsndfile_read = _timed(lambda: [soundfile.read(path, dtype="int16") for path in wavs])
        prep = _timed(lambda: prepare_timit(corpus, Path(scratch) / "m", progress=False))
    rate = utterances / whole
    rows = [
        ("eSpeak alone (reload + synth)", f"{1000 * bare / NUM_SENTENCES:.1f} ms/utt", "1.00", ""),
        (
            "+ resample, align",
            f"{1000 * ours / NUM_SENTENCES:.1f} ms/utt",
            f"{ours / bare:.2f}",
            f"{audio_seconds / ours:.0f}x real time",
        ),
        (
            "tiny corpus, written",
            f"{whole:.2f} s ({rate:.0f} utt/s)",
            "",
            f"target >= {TARGET_UTTERANCES_PER_SECOND:.0f} utt/s: "
            + ("met" if rate >= TARGET_UTTERANCES_PER_SECOND else "MISSED"),
        ),
        ("libsndfile SPHERE read", f"{1000 * libsndfile_read / len(wavs):.2f} ms/file", "1.00", ""),
        (
            "read_sphere",
            f"{1000 * ours_read / len(wavs):.2f} ms/file",
            f"{ours_read / libsndfile_read:.2f}",
            "",
        ),
        ("prep_timit (tiny)", f"{prep:.2f} s", "", f"{(utterances * 0.8) / prep:.0f} utt/s"),
    ]
    print(f"{'step':32} {'time':24} {'ratio':>6}  note")
    for name, value, ratio, note in rows:
        print(f"{name:32} {value:24} {ratio:>6}  {note}")


if __name__ == "__main__":
    main()
