"""The synthetic LibriSpeech at tiny scale: layout, determinism per seed, resume, its pipeline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from speechbed.corpora.asr_manifest import read_manifest
from speechbed.corpora.librispeech import read_librispeech_subset
from speechbed.corpora.synthetic_librispeech import (
    SCALES,
    STAMP_FILE,
    make_synthetic_librispeech,
    plan_chapters,
)
from speechbed.corpora.tokenizer import load_tokenizer
from speechbed.lineage import FINGERPRINT_FILE

REPOSITORY = Path(__file__).resolve().parents[1]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.name.startswith(".")
    }


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "synthetic_librispeech"
    summary = make_synthetic_librispeech(root, "tiny", seed=0, workers=2, progress=False)
    assert summary is not None and summary["complete"]
    return root


def test_the_tiny_corpus_has_librispeech_layout(tiny_corpus):
    speakers_by_subset, sentences = {}, set()
    for subset, sizes in SCALES["tiny"].items():
        utterances = read_librispeech_subset(tiny_corpus / subset)  # the real corpus's reader
        assert len(utterances) == sizes.utterances
        speakers_by_subset[subset] = {u.id.split("-")[0] for u in utterances}
        assert len(speakers_by_subset[subset]) == sizes.speakers
        for utterance in utterances:
            assert utterance.transcript == utterance.transcript.upper()
            assert set(utterance.transcript) <= set(" ABCDEFGHIJKLMNOPQRSTUVWXYZ'")
            assert 4 <= len(utterance.transcript.split()) <= 14
            audio, rate = soundfile.read(utterance.audio, dtype="int16")
            info = soundfile.info(utterance.audio)
            assert rate == 16000 and info.format == "FLAC" and info.channels == 1
            assert 0.5 < len(audio) / rate < 12 and np.abs(audio).max() > 1000
            sentences.add(utterance.transcript)
    assert sum(len(s) for s in speakers_by_subset.values()) == len(
        set().union(*speakers_by_subset.values())
    )  # no speaker in two subsets
    assert len(sentences) == sum(s.utterances for s in SCALES["tiny"].values())  # none repeated
    stamp = json.loads((tiny_corpus / STAMP_FILE).read_text())
    assert stamp["vocabulary"] > 150 and len(stamp["voices"]) == 12
    assert len({json.dumps(voice) for voice in stamp["voices"].values()}) == 12
    assert (tiny_corpus / "SPEAKERS.TXT").read_text().count("\n") == 13


def test_the_same_seed_gives_the_same_bytes_and_a_killed_run_resumes(tiny_corpus, tmp_path):
    again = tmp_path / "again"
    make_synthetic_librispeech(again, "tiny", seed=0, workers=1, progress=False)
    reference = tree_bytes(tiny_corpus)
    assert tree_bytes(again) == reference  # one process or two, byte for byte
    assert make_synthetic_librispeech(again, "tiny", seed=0, progress=False) is None  # complete

    # As if killed: a FLAC and a transcript file missing, the stamp not yet complete.
    flacs = sorted(again.rglob("*.flac"))
    flacs[5].unlink()
    next(again.rglob("*.trans.txt")).unlink()
    (again / FINGERPRINT_FILE).unlink()
    stamp = json.loads((again / STAMP_FILE).read_text())
    (again / STAMP_FILE).write_text(json.dumps({"settings": stamp["settings"], "complete": False}))
    kept = flacs[0].stat().st_mtime_ns
    assert make_synthetic_librispeech(again, "tiny", seed=0, workers=1, progress=False)
    assert flacs[0].stat().st_mtime_ns == kept  # not spoken again
    assert tree_bytes(again) == reference
    assert (again / FINGERPRINT_FILE).read_text() == (tiny_corpus / FINGERPRINT_FILE).read_text()

    # Another seed: other speakers, voices and sentences.
    other = plan_chapters("tiny", seed=1)
    ours = plan_chapters("tiny", seed=0)
    assert {c.speaker for c in other} != {c.speaker for c in ours}
    assert {u[1] for c in other for u in c.utterances} != {u[1] for c in ours for u in c.utterances}


def test_a_folder_that_is_not_ours_is_left_alone(tmp_path):
    from speechbed.errors import UserInputError

    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "mine.txt").write_text("precious")
    with pytest.raises(UserInputError, match="not a synthetic corpus made by speechbed"):
        make_synthetic_librispeech(tmp_path / "corpus", "tiny", seed=0, progress=False)
    assert (tmp_path / "corpus" / "mine.txt").read_text() == "precious"


def test_the_pipeline_makes_manifests_and_tokenizer(tiny_corpus, tmp_path, testbed_env):
    """make_corpus (skipped: the corpus is there), prep, tokenizer; then everything skipped."""
    data, cache = tmp_path / "data", tmp_path / "cache"
    shutil.copytree(tiny_corpus, data / "synthetic_librispeech")
    environ = dict(
        testbed_env,
        DATA_DIRECTORY=str(data),
        CACHE_DIRECTORY=str(cache),
        SYNTHETIC_LIBRISPEECH_SCALE="tiny",
        SPM_SIZE="100",
        SPEECHBED_ROOT=str(REPOSITORY),  # where the scripts are
    )
    command = [
        sys.executable,
        str(REPOSITORY / "scripts" / "pipeline.py"),
        "-y",
        str(REPOSITORY / "data_prep" / "synthetic_librispeech" / "pipeline.yml"),
    ]
    done = subprocess.run(command, env=environ, cwd=REPOSITORY, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    wav = cache / "synthetic_librispeech" / "wav"
    for subset, sizes in SCALES["tiny"].items():
        entries = read_manifest(wav / f"{subset}.json")
        assert len(entries) == sizes.utterances
        flac = next((data / "synthetic_librispeech" / subset).rglob(
            f"{Path(entries[0].files[0].fname).stem}.flac"
        ))  # fmt: skip
        converted, _ = soundfile.read(wav / entries[0].files[0].fname, dtype="int16")
        assert np.array_equal(converted, soundfile.read(flac, dtype="int16")[0])
        assert entries[0].transcript == entries[0].transcript.lower()
    tokenizer = load_tokenizer(cache / "synthetic_librispeech" / "spm-100")
    assert tokenizer.vocab_size == 100
    for entry in read_manifest(wav / "test-clean.json"):  # unseen sentences, same vocabulary
        assert tokenizer.decode(tokenizer.encode(entry.transcript)) == entry.transcript
    again = subprocess.run(command, env=environ, cwd=REPOSITORY, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    assert os.listdir(wav)  # the second run skipped every step
    assert "skip" in (again.stdout + again.stderr).lower()
