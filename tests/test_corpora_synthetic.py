"""The synthetic TIMIT: phone table, eSpeak alignments checked against the audio, plan, round trip.

The tiny corpus is made once per session (about a second) and read back through prep_timit.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile

from speechbed.corpora import sentences
from speechbed.corpora.espeak import Espeak, Voice
from speechbed.corpora.espeak_phones import (
    CLOSURE_OF,
    ESPEAK_TO_TIMIT,
    NOT_AMERICAN_OVERRIDES,
    NOT_RHOTIC_OVERRIDES,
)
from speechbed.corpora.manifest import manifest_path, read_manifest
from speechbed.corpora.phones import PHONES_61
from speechbed.corpora.sphere import read_sphere
from speechbed.corpora.synthesis import resample_to_16k, synthesize_utterance
from speechbed.corpora.synthetic import (
    CORE_TEST_DIALECTS,
    DIALECT_ACCENTS,
    FEMALE_VARIANTS,
    MALE_VARIANTS,
    SCALES,
    STAMP_FILE,
    TIMIT_TEST_PER_DIALECT,
    TIMIT_TRAIN_PER_DIALECT,
    make_synthetic_timit,
    plan_prompts,
    plan_speakers,
)
from speechbed.corpora.timit import CORE_TEST_SPEAKERS, DEV_SPEAKERS, prepare_timit
from speechbed.errors import UserInputError

REPOSITORY = Path(__file__).resolve().parents[1]
VOWELS = {"iy", "ih", "eh", "ae", "aa", "ao", "ah", "uh", "uw", "ax", "ey", "ay", "oy", "aw", "ow"}
CLOSURES = set(CLOSURE_OF.values())
FRICATIVES = {"s", "sh", "z", "f", "th"}


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "synthetic_timit"
    assert make_synthetic_timit(root, "tiny", seed=3, progress=False) is not None
    return root


@pytest.fixture(scope="module")
def tiny_manifests(tiny_corpus: Path) -> Path:
    output = tiny_corpus.parent / "manifests"
    prepare_timit(tiny_corpus, output, progress=False)
    return output


def voice(accent: str = "en-us", variant: str = "m3") -> Voice:
    return Voice(accent, variant, rate=170, pitch=50, pitch_range=50, level=0.5, noise=2.0)


# --------------------------------------------------------------------------- the phone table


def test_every_table_label_is_a_timit_label() -> None:
    tables = [ESPEAK_TO_TIMIT, NOT_AMERICAN_OVERRIDES, NOT_RHOTIC_OVERRIDES]
    labels = {label for table in tables for value in table.values() for label in value}
    labels |= CLOSURES | set(CLOSURE_OF)
    assert labels <= set(PHONES_61), labels - set(PHONES_61)
    assert set(NOT_AMERICAN_OVERRIDES) | set(NOT_RHOTIC_OVERRIDES) <= set(ESPEAK_TO_TIMIT)


def vocabulary() -> list[str]:
    words: set[str] = set()
    for name in dir(sentences):
        value = getattr(sentences, name)
        if isinstance(value, list):
            for item in value:
                words.update(item if isinstance(item, tuple) else item.split())
    return sorted(words)


@pytest.mark.parametrize("accent", sorted(set(DIALECT_ACCENTS.values())))
def test_whole_vocabulary_aligns_in_every_accent(accent: str) -> None:
    """Every word of the grammar, in every accent used, maps onto TIMIT labels and aligns."""
    words = vocabulary() + sentences.SHARED_PROMPTS[0].rstrip(".").split()
    rng = np.random.default_rng(0)
    for start in range(0, len(words), 40):
        text = " ".join(words[start : start + 40]) + "."
        spoken = synthesize_utterance(text, voice(accent), rng, (800, 800))
        check_alignment(spoken.phones, spoken.words, len(spoken.samples))
        assert [word.label for word in spoken.words] == text.rstrip(".").lower().split()


def check_alignment(phones, words, num_samples: int) -> None:  # noqa: ANN001
    assert phones[0].label == "h#" and phones[-1].label == "h#"
    assert phones[0].start == 0 and phones[-1].end == num_samples
    for before, after in zip(phones, phones[1:], strict=False):
        assert before.end == after.start and before.start < before.end
    assert {phone.label for phone in phones} <= set(PHONES_61)
    for before, after in zip(words, words[1:], strict=False):
        assert before.start < before.end <= after.start
    assert phones[0].end <= words[0].start and words[-1].end <= phones[-1].start


def test_every_voice_variant_exists() -> None:
    espeak = Espeak.get()
    heard = set()
    for variant in MALE_VARIANTS + FEMALE_VARIANTS:
        samples, events = espeak.synthesize("Hello there.", voice("en-us", variant))
        assert len(samples) > 5000 and events, variant
        heard.add(hashlib.sha256(samples.tobytes()).hexdigest())
    assert len(heard) == len(MALE_VARIANTS + FEMALE_VARIANTS)  # every variant sounds different
    with pytest.raises(ValueError, match="no voice variant"):
        espeak.synthesize("Hello.", voice("en-us", "no-such-variant"))


def test_words_spoken_as_one_phrase_are_divided() -> None:
    # eSpeak speaks "in the" as one word (both phonemes carry the position of "in").
    text = "Our baker vanished in the spring."
    spoken = synthesize_utterance(text, voice(), np.random.default_rng(0), (400, 400))
    assert [word.label for word in spoken.words] == "our baker vanished in the spring".split()
    check_alignment(spoken.phones, spoken.words, len(spoken.samples))
    labels = {word.label: word for word in spoken.words}
    inside = [p.label for p in spoken.phones if labels["the"].start <= p.start < labels["the"].end]
    assert inside[0] == "dh"  # "the" starts with its own first phone, not "in"'s
    with pytest.raises(ValueError, match="padding"):
        synthesize_utterance(text, voice(), np.random.default_rng(0), (0, 400))


def test_resampling_keeps_event_times() -> None:
    """An impulse at 22050 Hz sample n lands at 16 kHz sample n * 320 / 441 (how events map)."""
    for position in (441, 10000, 20001):
        impulse = np.zeros(30000)
        impulse[position] = 1.0
        assert int(np.argmax(resample_to_16k(impulse))) == round(position * 320 / 441)


def test_alignment_matches_the_audio(tiny_manifests: Path) -> None:
    """Independent acoustic checks: vowels are loud, closures quiet, fricatives noisy (ZCR)."""
    levels: dict[str, list[float]] = {"vowel": [], "closure": [], "edge": []}
    crossings: dict[str, list[float]] = {"vowel": [], "fricative": []}
    for utterance in read_manifest(manifest_path(tiny_manifests, "train")):
        samples = read_sphere(utterance.audio_path)[0].astype(np.float64)
        for phone in utterance.phones:
            piece = samples[phone.start : phone.end]
            rms = float(np.sqrt(np.mean(piece**2)))
            rate = float(np.mean(np.signbit(piece[1:]) != np.signbit(piece[:-1])))
            if phone.label in VOWELS:
                levels["vowel"].append(rms)
                crossings["vowel"].append(rate)
            elif phone.label in CLOSURES:
                levels["closure"].append(rms)
            elif phone.label == "h#":
                levels["edge"].append(rms)
            if phone.label in FRICATIVES:
                crossings["fricative"].append(rate)
    assert np.median(levels["vowel"]) > 20 * np.median(levels["closure"])
    assert np.median(levels["vowel"]) > 50 * np.median(levels["edge"])
    assert np.median(crossings["fricative"]) > 2 * np.median(crossings["vowel"])


# --------------------------------------------------------------------------- the plan


def test_full_scale_plan_has_timits_shape() -> None:
    speakers = plan_speakers(SCALES["full"], seed=0)
    train = [s for s in speakers if s.split == "train"]
    test = [s for s in speakers if s.split == "test"]
    assert (len(train), len(test)) == (462, 168)
    count = Counter((s.split, s.dialect) for s in speakers)
    assert [count["train", f"dr{n}"] for n in range(1, 9)] == list(TIMIT_TRAIN_PER_DIALECT)
    assert [count["test", f"dr{n}"] for n in range(1, 9)] == list(TIMIT_TEST_PER_DIALECT)
    ids = [s.id for s in speakers]
    assert len(set(ids)) == 630
    assert set(CORE_TEST_SPEAKERS) | set(DEV_SPEAKERS) <= {s.id for s in test}
    assert not (set(CORE_TEST_SPEAKERS) | set(DEV_SPEAKERS)) & {s.id for s in train}
    assert all(CORE_TEST_DIALECTS[s.id] == s.dialect for s in test if s.id in CORE_TEST_DIALECTS)
    prompts = plan_prompts(speakers, seed=0)
    assert len(prompts) == 6300
    names = Counter(p.name[:2] for p in prompts)
    assert names == {"sa": 1260, "sx": 3150, "si": 1890}
    sx_texts = {p.name: p.text for p in prompts if p.name.startswith("sx")}
    assert len(sx_texts) == 450  # TIMIT's 450 SX prompts, each read by about 7 speakers
    readers = Counter(p.name for p in prompts if p.name.startswith("sx"))
    assert max(readers.values()) == 7 and min(readers.values()) >= 5
    train_texts = {p.text for p in prompts if p.speaker.split == "train" and p.name[:2] != "sa"}
    test_texts = {p.text for p in prompts if p.speaker.split == "test" and p.name[:2] != "sa"}
    assert not train_texts & test_texts
    si_texts = [p.text for p in prompts if p.name.startswith("si")]
    assert len(set(si_texts)) == len(si_texts)


def test_voice_depends_on_seed_speaker_and_region_only() -> None:
    tiny = {(s.id, s.dialect): s.voice for s in plan_speakers(SCALES["tiny"], seed=0)}
    small = {(s.id, s.dialect): s.voice for s in plan_speakers(SCALES["small"], seed=0)}
    shared = set(tiny) & set(small)
    assert {"fadg0", "mdab0"} <= {speaker for speaker, _ in shared}  # dev and core speakers
    assert all(tiny[speaker] == small[speaker] for speaker in shared)
    other = {(s.id, s.dialect): s.voice for s in plan_speakers(SCALES["tiny"], seed=1)}
    assert any(tiny[s] != other[s] for s in set(tiny) & set(other))


def test_sentences_are_deterministic_and_plain() -> None:
    first = sentences.SentenceGenerator(5).unique_sentences(200)
    assert first == sentences.SentenceGenerator(5).unique_sentences(200)
    assert first != sentences.SentenceGenerator(6).unique_sentences(200)
    for sentence in first:
        words = sentences.sentence_words(sentence)
        assert sentences.MIN_WORDS <= len(words) <= sentences.MAX_WORDS
        assert all(word.isalpha() for _, word in words)
        for offset, word in words:
            assert sentence[offset : offset + len(word)].lower() == word


# --------------------------------------------------------------------------- the corpus


def test_tiny_corpus_round_trip(tiny_corpus: Path, tiny_manifests: Path) -> None:
    counts = {
        p: len(read_manifest(manifest_path(tiny_manifests, p))) for p in ("train", "dev", "test")
    }
    tiny = SCALES["tiny"]
    assert counts == {
        "train": 8 * tiny.train_speakers,
        "dev": 8 * tiny.dev_speakers,
        "test": 8 * tiny.core_speakers,
    }
    for partition in ("train", "dev", "test"):
        for utterance in read_manifest(manifest_path(tiny_manifests, partition)):
            assert not utterance.id.split("-")[1].startswith("sa")
            assert Path(utterance.audio_path).is_file()
            samples, rate = read_sphere(utterance.audio_path)
            assert rate == 16000 and len(samples) == utterance.num_samples
            check_alignment(utterance.phones, utterance.words, utterance.num_samples)
            assert utterance.text.rstrip(".?").replace(",", "").lower().split() == [
                word.label for word in utterance.words
            ]
            assert len(utterance.phones_48) == len(utterance.phones_39) == len(utterance.phones_61)
            if partition == "dev":
                assert utterance.speaker in DEV_SPEAKERS
            if partition == "test":
                assert utterance.speaker in CORE_TEST_SPEAKERS
    genders = {u.gender for u in read_manifest(manifest_path(tiny_manifests, "train"))}
    assert genders == {"m", "f"}


def test_audio_is_plain_sphere_readable_by_libsndfile(tiny_corpus: Path) -> None:
    wav = next(tiny_corpus.glob("TRAIN/DR*/*/SA1.WAV"))
    assert wav.read_bytes()[:16] == b"NIST_1A\n   1024\n"
    reference, rate = soundfile.read(wav, dtype="int16")
    assert rate == 16000
    np.testing.assert_array_equal(read_sphere(wav)[0], reference)


def corpus_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != STAMP_FILE:
            digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def run_script(job: Path, settings: dict) -> subprocess.CompletedProcess:
    job.write_text(json.dumps(settings))
    command = [sys.executable, str(REPOSITORY / "scripts/make_synthetic_timit.py"), "-y", str(job)]
    return subprocess.run(command, capture_output=True, text=True)


def test_same_seed_same_bytes_in_another_process_and_skip(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    job = tmp_path / "make.yml"
    run = run_script(job, {"output_path": str(again), "scale": "tiny", "seed": 3})
    assert run.returncode == 0, run.stderr
    assert corpus_digest(again) == corpus_digest(tiny_corpus)
    run = run_script(job, {"output_path": str(again), "scale": "tiny", "seed": 3})
    assert run.returncode == 0 and "skipped" in run.stdout
    assert make_synthetic_timit(again, "tiny", seed=3, progress=False) is None  # up to date
    assert make_synthetic_timit(again, "tiny", seed=4, progress=False) is not None
    assert corpus_digest(again) != corpus_digest(tiny_corpus)
    assert not list(tmp_path.glob(".*partial"))
    run = run_script(job, {"output_path": str(again), "scale": "huge"})
    assert run.returncode == 2 and "scale" in run.stderr and "Traceback" not in run.stderr


def test_refuses_to_overwrite_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "timit").mkdir()
    (tmp_path / "timit" / "README.DOC").write_text("the real discs")
    with pytest.raises(UserInputError, match="not a synthetic corpus made by speechbed"):
        make_synthetic_timit(tmp_path / "timit", "tiny", seed=0, progress=False)
    assert (tmp_path / "timit" / "README.DOC").is_file()
