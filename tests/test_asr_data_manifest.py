"""The RNN-T recipe's data library: JSON manifests, text normalisation, the sentencepiece step."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st

from speechbed.corpora.asr_manifest import (
    filter_by_duration,
    load_audio,
    read_manifest,
    write_manifest,
)
from speechbed.corpora.sentences import SentenceGenerator
from speechbed.corpora.text_normalization import (
    CHARACTERS,
    normalize_transcript,
    number_to_words,
)
from speechbed.corpora.tokenizer import MODEL_FILE, load_tokenizer
from speechbed.errors import UserInputError

REPOSITORY = Path(__file__).resolve().parents[1]

#: Two entries as the Myrtle.ai/MLPerf preprocessing writes them (extra keys included).
MYRTLE_MANIFEST = [
    {
        "transcript": "he hoped there would be stew for dinner",
        "files": [
            {"channels": 1, "sample_rate": 16000.0, "bitdepth": 16, "bitrate": 256000.0,
             "duration": 10.435, "num_samples": 166960, "encoding": "Signed Integer PCM",
             "silent": False, "fname": "test-clean-wav/1089-134686-0000.wav", "speed": 1},
            {"channels": 1, "sample_rate": 16000.0, "bitdepth": 16, "bitrate": 256000.0,
             "duration": 11.594, "num_samples": 185511, "encoding": "Signed Integer PCM",
             "silent": False, "fname": "test-clean-wav/1089-134686-0000-0.9.wav", "speed": 0.9},
        ],
        "original_duration": 10.435,
        "original_num_samples": 166960,
    },
    {
        "transcript": "stuff it into you his belly counselled him",
        "files": [{"channels": 1, "sample_rate": 16000, "duration": 3.275,
                   "num_samples": 52400, "fname": "test-clean-wav/1089-134686-0001.wav"}],
        "original_duration": 3.275,
        "original_num_samples": 52400,
    },
]  # fmt: skip


def run_step(script: str, job: dict, tmp_path: Path, *flags: str) -> int:
    """Run a step script in this process, as ``SCRIPT -y job.yml [flags]``; its exit code."""
    spec = importlib.util.spec_from_file_location(f"step_{Path(script).stem}", REPOSITORY / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    job_file = tmp_path / f"{Path(script).stem}.yml"
    job_file.write_text(json.dumps(job))  # JSON is YAML
    from speechbed.step_runner import run_jobs_cli

    schema = module.run.__annotations__["job"]
    schema = getattr(module, schema) if isinstance(schema, str) else schema
    return run_jobs_cli(schema, module.run, module.__doc__, ["-y", str(job_file), *flags])


# --------------------------------------------------------------------------- manifests


def test_a_myrtle_manifest_round_trips_unchanged(tmp_path):
    source = tmp_path / "in.json"
    source.write_text(json.dumps(MYRTLE_MANIFEST))
    entries = read_manifest(source)
    assert [entry.transcript for entry in entries] == [m["transcript"] for m in MYRTLE_MANIFEST]
    assert entries[0].files[1].fname == "test-clean-wav/1089-134686-0000-0.9.wav"
    assert entries[0].files[1].extra["speed"] == 0.9
    assert entries[0].files[0].sample_rate == 16000 and entries[1].duration == 3.275
    written = tmp_path / "out.json"
    write_manifest(written, entries)
    assert json.loads(written.read_text()) == MYRTLE_MANIFEST
    assert read_manifest(written) == entries
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.json", "out.json"]  # no temporary
    write_manifest(tmp_path / "empty.json", [])
    assert read_manifest(tmp_path / "empty.json") == []


def test_max_duration_filter():
    from speechbed.corpora.asr_manifest import entry_from_json

    entries = [entry_from_json(record) for record in MYRTLE_MANIFEST]
    assert filter_by_duration(entries, None) == entries
    assert filter_by_duration(entries, 10.435) == entries
    assert filter_by_duration(entries, 10.0) == entries[1:]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m[1].pop("transcript"), "entry 1: transcript: expected a string, got None"),
        (lambda m: m[0]["files"][1].pop("num_samples"), "entry 0: files[1].num_samples: missing"),
        (lambda m: m[1]["files"][0].update(duration=-1), "entry 1: files[0].duration: expected"),
        (lambda m: m[1]["files"][0].update(channels=1.5), "files[0].channels: expected a whole"),
        (lambda m: m[1]["files"][0].update(fname=""), "entry 1: files[0].fname: expected a file"),
        (lambda m: m[1].update(files=[]), "entry 1: files: expected a non-empty list"),
        (lambda m: m[0].update(original_num_samples="7"), "entry 0: original_num_samples: expected a number"),
        (lambda m: m.append(3), "entry 2: expected an object, got int"),
    ],
)  # fmt: skip
def test_a_bad_entry_is_named_by_file_entry_and_key(tmp_path, change, message):
    manifest = json.loads(json.dumps(MYRTLE_MANIFEST))
    change(manifest)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(manifest))
    with pytest.raises(UserInputError, match=str(path)) as raised:
        read_manifest(path)
    assert message in str(raised.value)


def test_unreadable_manifests_are_clear_errors(tmp_path):
    with pytest.raises(UserInputError, match="manifest not found"):
        read_manifest(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('[\n{"transcript": "a",\n "files": [}\n]')
    with pytest.raises(UserInputError, match=r"broken.json:3:\d+: not valid JSON"):
        read_manifest(broken)
    broken.write_text('{"transcript": "a"}')
    with pytest.raises(UserInputError, match="a JSON list of entries, got dict"):
        read_manifest(broken)


def test_load_audio_gives_16k_mono_float(tmp_path):
    """A stereo 8 kHz file: channels averaged, resampled; checked against the analytic sine."""
    rate, seconds, frequency = 8000, 0.5, 440.0
    time = np.arange(int(rate * seconds)) / rate
    left = 0.5 * np.sin(2 * np.pi * frequency * time)
    stereo = np.stack([left, 0.5 * left], axis=1)  # mean = 0.75 * left
    soundfile.write(tmp_path / "a.wav", stereo, rate, subtype="FLOAT")
    record = json.loads(json.dumps(MYRTLE_MANIFEST[1]))
    record["files"][0].update(fname="a.wav", sample_rate=rate, channels=2)
    from speechbed.corpora.asr_manifest import entry_from_json

    audio = load_audio(entry_from_json(record), tmp_path)
    assert audio.dtype.is_floating_point and audio.ndim == 1 and audio.shape[0] == 8000
    expected = 0.375 * np.sin(2 * np.pi * frequency * np.arange(8000) / 16000)
    middle = slice(400, 7600)  # away from the resampling filter's edges
    assert np.max(np.abs(audio.numpy()[middle] - expected[middle])) < 2e-3
    record["files"][0]["fname"] = "missing.wav"
    with pytest.raises(UserInputError, match="missing.wav: cannot read audio"):
        load_audio(entry_from_json(record), tmp_path)


# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("HE HOPED THERE WOULD BE STEW", "he hoped there would be stew"),
        ("Hello, world! How are you?", "hello world how are you"),
        ("Don’t stop ’til the 21st of May, 1984.", "don't stop til the twenty first of may nineteen eighty four"),
        ("It cost $5 — 3.14% & 1,000,000 more", "it cost five dollars three point one four percent and one million more"),
        ("Café naïve Ærø, U.S.A.", "cafe naive aero u s a"),
        ("a well-known 2nd-hand car", "a well known second hand car"),
        ("the boys' toys 'em", "the boys toys em"),
        ("In 1900, 1905 and 2024: 100th, 12th, 40th, 13", "in nineteen hundred nineteen oh five and two thousand twenty four one hundredth twelfth fortieth thirteen"),
        ("Straße Москва", "strasse"),
        ("£1 or €2", "one pound or two euros"),
        ("  ...  ", ""),
    ],
)  # fmt: skip
def test_normalisation_by_hand(raw, normalized):
    assert normalize_transcript(raw) == normalized


def test_number_words_by_hand():
    cases = {0: "zero", 7: "seven", 15: "fifteen", 40: "forty", 99: "ninety nine",
             100: "one hundred", 101: "one hundred one", 999: "nine hundred ninety nine",
             1000: "one thousand", 2024: "two thousand twenty four",
             1_000_001: "one million one", 3_200_000_015: "three billion two hundred million fifteen"}  # fmt: skip
    for number, words in cases.items():
        assert number_to_words(number) == words


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_normalised_text_is_in_the_set_and_stable(text):
    normalized = normalize_transcript(text)
    assert set(normalized) <= set(CHARACTERS)
    assert normalized == normalized.strip() and "  " not in normalized
    assert normalize_transcript(normalized) == normalized


# --------------------------------------------------------------------------- tokenizer step


def test_the_tokenizer_step_is_deterministic_resumable_and_round_trips(tmp_path, capsys):
    sentences = SentenceGenerator(3).unique_sentences(80)
    entries = [dict(MYRTLE_MANIFEST[1], transcript=text) for text in sentences]  # raw text
    (tmp_path / "train.json").write_text(json.dumps(entries))
    job = {"manifests": [str(tmp_path / "train.json")], "spm_size": 96}
    for name in ("a", "b"):
        assert run_step("scripts/train_tokenizer.py", dict(job, output_path=str(tmp_path / name)), tmp_path) == 0  # fmt: skip
    assert "wrote" in capsys.readouterr().out
    model_a = (tmp_path / "a" / MODEL_FILE).read_bytes()
    assert model_a == (tmp_path / "b" / MODEL_FILE).read_bytes()
    assert run_step("scripts/train_tokenizer.py", dict(job, output_path=str(tmp_path / "a")), tmp_path) == 0  # fmt: skip
    assert "up to date; skipped" in capsys.readouterr().out
    tokenizer = load_tokenizer(tmp_path / "a")
    assert tokenizer.vocab_size == 96 and tokenizer.pieces[0] == "<unk>"
    for text in sentences:
        ids = tokenizer.encode(normalize_transcript(text))
        assert all(0 <= index < 96 for index in ids)
        assert tokenizer.decode(ids) == normalize_transcript(text)
    # another size is another model; too large a size is a clear error and writes nothing
    assert run_step("scripts/train_tokenizer.py", dict(job, spm_size=64, output_path=str(tmp_path / "c")), tmp_path) == 0  # fmt: skip
    assert load_tokenizer(tmp_path / "c").vocab_size == 64
    assert run_step("scripts/train_tokenizer.py", dict(job, spm_size=5000, output_path=str(tmp_path / "d")), tmp_path) == 1  # fmt: skip
    assert "spm_size 5000 is too large" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    assert run_step("scripts/train_tokenizer.py", dict(job, spm_size=12, output_path=str(tmp_path / "d")), tmp_path) == 1  # fmt: skip
    assert "spm_size 12 is too small" in capsys.readouterr().err
    with pytest.raises(UserInputError, match="no tokenizer model"):
        load_tokenizer(tmp_path / "d")
