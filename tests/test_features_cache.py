"""Tests of the cache builder and scripts/compute_features.py: layout, round trip, skip rule, errors.

Manifests and SPHERE audio are written here; the expected frames come from the computers,
whose parity with pydrobert-speech is tested in test_features_parity.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from speechbed.corpora.manifest import (
    TOKENS_FILE,
    Utterance,
    manifest_path,
    write_manifest,
    write_tokens,
)
from speechbed.corpora.phones import PHONES_48
from speechbed.corpora.sphere import write_sphere
from speechbed.errors import UserInputError
from speechbed.features import NAMED_FEATURES, FeatureCache, settings_hash
from speechbed.features.build import build_feature_cache
from speechbed.features.computers import make_computer
from speechbed.step_runner import run_jobs_cli

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY / "scripts"))
import compute_features  # noqa: E402

PHONES = [["sil", "aa", "b", "sil"], ["sil", "iy", "sil"], ["sil", "z", "sh", "ah", "sil"]]


def make_corpus(folder: Path, lengths=(4000, 6100, 3333), rate=16000) -> list[Utterance]:
    """Manifests ``train`` (three utterances) and ``dev`` (one) with SPHERE audio."""
    rng = np.random.default_rng(len(lengths))
    audio = folder / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    utterances = []
    for index, length in enumerate(lengths):
        samples = (rng.standard_normal(length) * 2000).astype(np.int16)
        path = audio / f"u{index}.wav"
        write_sphere(path, samples, rate)
        utterances.append(
            Utterance(
                id=f"spk{index}-sx{index}",
                speaker=f"spk{index}",
                dialect="dr1",
                gender="f",
                audio_path=str(path),
                num_samples=length,
                text="words",
                phones_48=PHONES[index % len(PHONES)],
            )
        )
    write_manifest(manifest_path(folder, "train"), utterances)
    write_manifest(manifest_path(folder, "dev"), utterances[:1])
    write_tokens(folder / TOKENS_FILE, PHONES_48)
    return utterances


def write_job(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_store_layout_and_round_trip(tmp_path):
    utterances = make_corpus(tmp_path / "manifests")
    result = build_feature_cache(
        tmp_path / "manifests", "train", "fbank-81-10ms", tmp_path / "cache", progress=False
    )
    assert not result.skipped and result.path == tmp_path / "cache" / "train.zarr"
    group = zarr.open_group(result.path, mode="r")
    assert group["feats"].dtype == np.float32 and group["feats"].shape[1] == 81
    assert group["feats"].compressors, "frames must be compressed"
    assert group["offsets"].dtype == np.int64 and group["offsets"].shape == (4,)
    assert group["tokens"].dtype == np.int32 and group["token_offsets"].shape == (4,)
    assert [str(i) for i in group["utt_ids"][:]] == [u.id for u in utterances]
    settings = NAMED_FEATURES["fbank-81-10ms"]
    assert group.attrs["feature_settings"] == settings.model_dump()
    assert group.attrs["settings_hash"] == settings_hash(settings)
    assert len(group.attrs["manifest_hash"]) == 64

    cache = FeatureCache(result.path)
    computer = make_computer(settings)
    for index, utterance in enumerate(utterances):
        samples = np.fromfile(utterance.audio_path, dtype="<i2", offset=1024)
        (expected,) = computer([samples])  # the int16 samples, as the builder hands them
        np.testing.assert_allclose(cache.feats(index), expected, rtol=1e-6, atol=1e-7)
        ids = [PHONES_48.index(phone) for phone in utterance.phones_48]
        assert cache.tokens(index).tolist() == ids
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]


def test_raw_and_sigbank_stores(tmp_path):
    utterances = make_corpus(tmp_path / "m", lengths=(1000, 1700))
    raw = FeatureCache(
        build_feature_cache(tmp_path / "m", "train", "raw", tmp_path, progress=False).path
    )
    samples = np.fromfile(utterances[1].audio_path, dtype="<i2", offset=1024)
    np.testing.assert_array_equal(raw.feats(1)[:, 0], samples / 32768)
    sigbank = FeatureCache(
        build_feature_cache(
            tmp_path / "m", "dev", "sigbank-41-2ms", tmp_path / "s", progress=False
        ).path
    )
    assert sigbank.feats(0).shape == (31, 41)  # (1000 + 32 // 2) // 32 frames of 2 ms


def test_skip_when_unchanged_and_redo_when_anything_changes(tmp_path):
    make_corpus(tmp_path / "m")
    arguments = (tmp_path / "m", "train")
    first = build_feature_cache(*arguments, "fbank-81-10ms", tmp_path / "c", progress=False)
    stamp = (first.path / "zarr.json").stat().st_mtime_ns
    again = build_feature_cache(*arguments, "fbank-81-10ms", tmp_path / "c", progress=False)
    assert again.skipped and (first.path / "zarr.json").stat().st_mtime_ns == stamp
    forced = build_feature_cache(
        *arguments, "fbank-81-10ms", tmp_path / "c", force=True, progress=False
    )
    assert not forced.skipped
    explicit = {"kind": "fbank", "num_filters": 40}
    other = build_feature_cache(*arguments, explicit, tmp_path / "c", progress=False)
    assert not other.skipped and FeatureCache(other.path).num_features == 41
    # a changed manifest (one utterance fewer) makes the store stale
    manifest = manifest_path(tmp_path / "m", "train")
    manifest.write_text("".join(manifest.read_text().splitlines(keepends=True)[:2]))
    rebuilt = build_feature_cache(*arguments, explicit, tmp_path / "c", progress=False)
    assert not rebuilt.skipped and len(FeatureCache(rebuilt.path)) == 2


def test_script_runs_all_partitions_and_reports_skips(tmp_path, capsys):
    make_corpus(tmp_path / "m")
    job = write_job(
        tmp_path / "job.yml",
        f"input_path: {tmp_path / 'm'}\noutput_path: {tmp_path / 'out'}\nfeature: fbank-81-10ms\n"
        "batch_size: 2\n",
    )
    command = [sys.executable, str(REPOSITORY / "scripts" / "compute_features.py"), "-y", str(job)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "train.zarr").is_dir() and (tmp_path / "out" / "dev.zarr").is_dir()
    code, _ = run_script(job, capsys)  # the second run, in this process
    assert code == 0 and capsys.readouterr().out.count("up to date") == 2


def run_script(job: Path, capsys) -> tuple[int, str]:
    code = run_jobs_cli(
        compute_features.ComputeFeaturesJob, compute_features.run, "", ["-y", str(job)]
    )
    captured = capsys.readouterr()
    print(captured.out, end="")  # left for the caller to read
    return code, captured.err


def test_unknown_feature_name_names_the_key_and_line(tmp_path, capsys):
    job = write_job(tmp_path / "j.yml", "input_path: m\noutput_path: o\nfeature: fbank-80\n")
    code, error = run_script(job, capsys)
    assert code == 2 and "j.yml:3" in error and "feature" in error and "fbank-81-10ms" in error


def test_bad_explicit_settings_name_the_field(tmp_path, capsys):
    job = write_job(
        tmp_path / "j.yml",
        "input_path: m\noutput_path: o\nfeature:\n  kind: fbank\n  high_hz: 9000\n",
    )
    code, error = run_script(job, capsys)
    assert code == 2 and "feature" in error and "high_hz" in error


def test_missing_manifests_are_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    job = write_job(
        tmp_path / "j.yml", f"input_path: {tmp_path / 'empty'}\noutput_path: o\nfeature: raw\n"
    )
    code, error = run_script(job, capsys)
    assert code == 1 and "no manifests" in error and str(tmp_path / "empty") in error


@pytest.mark.parametrize("problem", ["samples", "rate", "phone", "tokens_file"])
def test_bad_inputs_name_the_file_and_leave_nothing(tmp_path, problem):
    utterances = make_corpus(tmp_path / "m")
    if problem == "samples":
        write_sphere(utterances[1].audio_path, np.zeros(10, np.int16))
        expected = f"{utterances[1].audio_path}: 10 samples"
    elif problem == "rate":
        write_sphere(utterances[2].audio_path, np.zeros(3333, np.int16), 8000)
        expected = f"{utterances[2].audio_path}: sample rate 8000"
    elif problem == "phone":
        broken = [*utterances[:2], Utterance(**{**utterances[2].__dict__, "phones_48": ["xx"]})]
        write_manifest(manifest_path(tmp_path / "m", "train"), broken)
        expected = "phone 'xx' is not in the 48-phone set"
    else:
        write_tokens(tmp_path / "m" / TOKENS_FILE, list(reversed(PHONES_48)))
        expected = TOKENS_FILE
    with pytest.raises(UserInputError, match=re.escape(expected)):
        build_feature_cache(
            tmp_path / "m", "train", "fbank-81-10ms", tmp_path / "c", progress=False
        )
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())
