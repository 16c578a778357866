"""Speech Commands data: the v2 layout on a tiny tree written here, splits by list and speaker,
the silence/unknown proportions, the hash rule, and the synthetic corpus's planning and resume."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile

from speechbed.corpora import speech_commands as sc
from speechbed.corpora import synthetic_speech_commands as synthetic
from speechbed.errors import UserInputError

WORDS = ("yes", "no", "up", "cat", "dog")
SPEAKERS = {
    "train": ["aa000001", "aa000002", "aa000003"],
    "dev": ["bb000001"],
    "test": ["cc000001"],
}


def _wav(path: Path, samples: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples.astype(np.int16), 16000, subtype="PCM_16")


def write_tree(root: Path, short_clip: bool = False) -> None:
    """Each speaker says every word twice; the lists by the table above (not the hash rule)."""
    rng = np.random.default_rng(0)
    lists: dict[str, list[str]] = {"dev": [], "test": []}
    for partition, speakers in SPEAKERS.items():
        for speaker in speakers:
            for word in WORDS:
                for number in range(2):
                    name = f"{word}/{speaker}_nohash_{number}.wav"
                    length = 12000 if short_clip and partition == "train" else 16000
                    _wav(root / name, rng.integers(-3000, 3000, length))
                    if partition in lists:
                        lists[partition].append(name)
    (root / sc.VALIDATION_LIST).write_text("\n".join(lists["dev"]) + "\n")
    (root / sc.TESTING_LIST).write_text("\n".join(lists["test"]) + "\n")
    for name in ("white_noise", "hum"):
        _wav(root / sc.NOISE_FOLDER / f"{name}.wav", rng.integers(-1000, 1000, 20 * 16000))


def test_manifests_follow_the_lists_and_speakers(tmp_path: Path) -> None:
    write_tree(tmp_path / "corpus")
    counts = sc.prepare_speech_commands(
        tmp_path / "corpus", tmp_path / "out", keywords=["yes", "no", "up"]
    )
    manifests = {p: sc.read_clips(tmp_path / "out" / f"{p}.jsonl") for p in sc.PARTITIONS}
    for partition, clips in manifests.items():
        speakers = {clip.speaker for clip in clips if clip.label != sc.SILENCE}
        assert speakers <= set(SPEAKERS[partition])
        keyword_clips = [c for c in clips if c.label in ("yes", "no", "up")]
        # every listed keyword file of the partition, no other: 3 words x 2 takes per speaker
        assert len(keyword_clips) == 3 * 2 * len(SPEAKERS[partition])
        assert all(c.word == c.label for c in keyword_clips)
        unknown = [c for c in clips if c.label == sc.UNKNOWN]
        assert all(c.word in ("cat", "dog") for c in unknown)
        # proportions: ceil(0.1 * keyword clips) of each extra class
        expected = math.ceil(0.1 * len(keyword_clips))
        assert len(unknown) == expected == counts[partition][sc.UNKNOWN]
        silence = [c for c in clips if c.label == sc.SILENCE]
        assert len(silence) == expected
        for clip in silence:  # noise never crosses partitions: each has its own span
            frames = soundfile.info(clip.audio_path).frames
            start, end = sc.noise_span(frames, partition)
            assert start <= clip.offset and clip.offset + 16000 <= end
            assert 0.0 <= clip.gain <= 1.0
    assert (tmp_path / "out" / "classes.txt").read_text().split() == [
        "silence",
        "unknown",
        "yes",
        "no",
        "up",
    ]
    noise = sc.read_clips(tmp_path / "out" / "noise.jsonl")
    assert len(noise) == 2 * 16  # the first 80 % of two 20 s files, in whole seconds
    assert (
        sc.prepare_speech_commands(
            tmp_path / "corpus", tmp_path / "out", keywords=["yes", "no", "up"]
        )
        is None
    )


def test_other_proportions_and_padding(tmp_path: Path) -> None:
    write_tree(tmp_path / "corpus", short_clip=True)
    sc.prepare_speech_commands(tmp_path / "corpus", tmp_path / "out", ["yes"], 0.5, 1.0, seed=3)
    train = sc.read_clips(tmp_path / "out" / "train.jsonl")
    keywords = sum(c.label == "yes" for c in train)
    assert sum(c.label == sc.SILENCE for c in train) == math.ceil(0.5 * keywords)
    assert sum(c.label == sc.UNKNOWN for c in train) == keywords
    samples = sc.read_clip(train[0])
    assert samples.shape == (16000,) and not samples[12000:].any()  # a 0.75 s file, padded


def test_speaker_in_two_partitions_is_an_error(tmp_path: Path) -> None:
    write_tree(tmp_path / "corpus")
    with (tmp_path / "corpus" / sc.VALIDATION_LIST).open("a") as stream:
        stream.write("yes/aa000001_nohash_0.wav\n")
    with pytest.raises(UserInputError, match="speaker aa000001 is in"):
        sc.prepare_speech_commands(tmp_path / "corpus", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_list_line_and_missing_file(tmp_path: Path) -> None:
    write_tree(tmp_path / "corpus")
    listed = tmp_path / "corpus" / sc.TESTING_LIST
    listed.write_text(listed.read_text() + "yes/cc000001_nohash_7.wav\n")
    with pytest.raises(UserInputError, match="listed for test but not there"):
        sc.list_corpus(tmp_path / "corpus")
    listed.write_text("yes/oops.wav\n")
    with pytest.raises(UserInputError, match=rf"{sc.TESTING_LIST}:1: "):
        sc.list_corpus(tmp_path / "corpus")


def test_hash_rule() -> None:
    """The dataset's rule, worked out here from its definition, and its 10/10/80 shares."""
    for speaker in ("0a7c2a8d", "ffd2ba2f", "c06ed3dc"):
        value = int(hashlib.sha1(speaker.encode()).hexdigest(), 16) % (2**27)
        percent = value * 100.0 / (2**27 - 1)
        expected = "dev" if percent < 10 else "test" if percent < 20 else "train"
        assert sc.split_of_speaker(speaker) == expected
    shares = [sc.split_of_speaker(f"{n:08x}") for n in range(4000)]
    assert abs(shares.count("dev") / 4000 - 0.1) < 0.02
    assert abs(shares.count("test") / 4000 - 0.1) < 0.02
    assert sc.speaker_of("3b4f8f24_nohash_2.wav") == "3b4f8f24"
    with pytest.raises(ValueError, match="nohash"):
        sc.speaker_of("3b4f8f24.wav")


def test_synthetic_speakers_follow_the_hash_rule() -> None:
    speakers = synthetic.plan_speakers(synthetic.SCALES["small"], seed=1)
    assert [len(speakers[p]) for p in ("train", "dev", "test")] == [100, 12, 12]
    for partition, found in speakers.items():
        assert all(sc.split_of_speaker(s.id) == partition for s in found)
    assert synthetic.plan_speakers(synthetic.SCALES["small"], seed=1) == speakers
    assert synthetic.plan_speakers(synthetic.SCALES["small"], seed=2) != speakers


def test_noise_types() -> None:
    length = 4 * 16000
    pink = synthetic.noise_signal("pink_noise", length, 0).astype(float)
    power = np.abs(np.fft.rfft(pink)) ** 2
    frequencies = np.fft.rfftfreq(length, 1 / 16000)
    low = power[(frequencies > 100) & (frequencies < 200)].mean()
    high = power[(frequencies > 3200) & (frequencies < 6400)].mean()
    assert 10 < low / high < 60  # 1/f: 32 times the power a factor 32 lower
    hum = synthetic.noise_signal("hum", length, 0).astype(float)
    spectrum = np.abs(np.fft.rfft(hum))
    assert frequencies[np.argmax(spectrum)] in (50.0, 60.0, 100.0, 120.0, 150.0, 180.0)
    assert np.array_equal(
        synthetic.noise_signal("white_noise", length, 0),
        synthetic.noise_signal("white_noise", length, 0),
    )


def test_synthetic_corpus_resumes_and_is_atomic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed midway leaves no corpus, only its work folder; the rerun keeps what was made."""
    calls = []

    def fake_clip(word: str, speaker: synthetic.Speaker, repetition: int, seed: int) -> np.ndarray:
        calls.append(word)
        if len(calls) == 30:
            raise KeyboardInterrupt
        rng = np.random.default_rng([seed, int(speaker.id, 16), repetition, len(word)])
        return rng.integers(-100, 100, 16000).astype(np.int16)

    monkeypatch.setattr(synthetic, "word_clip", fake_clip)
    monkeypatch.setattr(
        synthetic, "noise_signal", lambda name, length, seed: np.zeros(length, np.int16)
    )
    output = tmp_path / "sc"
    with pytest.raises(KeyboardInterrupt):
        synthetic.make_synthetic_speech_commands(output, "tiny", 0, progress=False)
    assert not output.exists()
    work = tmp_path / ".sc.incomplete"
    made = sorted(work.rglob("*_nohash_*.wav"))
    assert len(made) == 29
    before = {path.relative_to(work): path.stat().st_mtime_ns for path in made}
    summary = synthetic.make_synthetic_speech_commands(output, "tiny", 0, progress=False)
    assert len(calls) == 30 + summary["clips"] - 29  # the 29 clips were not made again
    assert not work.exists()
    for relative, mtime in before.items():
        assert (output / relative).stat().st_mtime_ns == mtime
    listing = sc.list_corpus(output)
    assert {c.speaker for c in listing.clips["dev"]}.isdisjoint(
        {c.speaker for c in listing.clips["train"]}
    )
    stamp = json.loads((output / synthetic.STAMP_FILE).read_text())
    assert stamp["settings"]["scale"] == "tiny"
    assert synthetic.make_synthetic_speech_commands(output, "tiny", 0, progress=False) is None


def test_a_synthetic_clip_is_a_function_of_the_seed() -> None:
    speaker = synthetic.plan_speakers(synthetic.SCALES["tiny"], seed=0)["train"][0]
    first = synthetic.word_clip("yes", speaker, 0, seed=0)
    assert first.shape == (16000,) and first.dtype == np.int16
    assert np.array_equal(first, synthetic.word_clip("yes", speaker, 0, seed=0))
    assert not np.array_equal(first, synthetic.word_clip("yes", speaker, 1, seed=0))
    loud = np.flatnonzero(np.abs(first) > 0.02 * np.abs(first).max())
    assert 1000 < loud[-1] - loud[0] < 16000  # a word, placed inside the second
