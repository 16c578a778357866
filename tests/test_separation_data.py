"""Separation data: the wsj0-2mix and Libri2Mix layout readers on tiny trees written here, the
synthetic mixer (levels, offsets, speakers per split, determinism) and the separation cache
(verified store, round trip of spectra and samples, skip and rebuild).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from speechbed.corpora.libri2mix import prepare_libri2mix
from speechbed.corpora.manifest import Utterance, manifest_path, write_manifest
from speechbed.corpora.mixtures import read_mixtures
from speechbed.corpora.sphere import write_sphere
from speechbed.corpora.synthetic_mixtures import MixingSettings, make_mixtures, mix_pair
from speechbed.corpora.wsj0_2mix import prepare_wsj0_2mix
from speechbed.errors import UserInputError
from speechbed.features.integrity import DamagedFeatureStore
from speechbed.features.separation_job import SeparationFeatureSettings
from speechbed.features.separation_store import (
    SeparationStore,
    build_separation_store,
    stft,
)
from speechbed.lineage import fingerprint


def write_tree(root: Path, names: dict[str, list[str]], folders: list[str], rate: int) -> None:
    """A layout tree: ``root/<split>/<folder>/<name>.wav``, noise-like audio of 400-900 samples."""
    rng = np.random.default_rng(0)
    for split, files in names.items():
        for name in files:
            length = int(rng.integers(400, 900))
            for folder in folders:
                path = root / split / folder / f"{name}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                soundfile.write(path, 0.1 * rng.standard_normal(length), rate, subtype="PCM_16")


def test_wsj0_2mix_layout_gives_manifests_of_mixture_and_sources(tmp_path: Path) -> None:
    names = {
        "tr": ["011a0101_1.2_401c020r_-1.2", "011a0102_0.3_402c0201_-0.3"],
        "cv": ["012c0201_2.0_403c0205_-2.0"],
        "tt": ["050a0501_0.1_440c020x_-0.1"],
    }
    write_tree(tmp_path / "wav8k" / "min", names, ["mix", "s1", "s2"], 8000)
    counts = prepare_wsj0_2mix(tmp_path, tmp_path / "manifests", 8000, "min")
    assert counts == {"train": 2, "dev": 1, "test": 1}
    train = read_mixtures(manifest_path(tmp_path / "manifests", "train"))
    first = train[0]
    assert first.id == "011a0101_1.2_401c020r_-1.2" and first.speakers == ["011", "401"]
    assert first.mixture_path.endswith("tr/mix/011a0101_1.2_401c020r_-1.2.wav")
    assert [Path(p).parent.name for p in first.source_paths] == ["s1", "s2"]
    assert first.num_samples == soundfile.info(first.mixture_path).frames
    assert first.sample_rate == 8000 and first.noise_path is None


def test_wsj0_2mix_layout_errors_name_the_file(tmp_path: Path) -> None:
    names = {"tr": ["a_0_b_0"], "cv": ["c_0_d_0"], "tt": ["e_0_f_0"]}
    write_tree(tmp_path / "wav8k" / "min", names, ["mix", "s1", "s2"], 8000)
    (tmp_path / "wav8k/min/cv/s2/c_0_d_0.wav").unlink()
    with pytest.raises(UserInputError, match="cv/s2/c_0_d_0.wav: missing"):
        prepare_wsj0_2mix(tmp_path, tmp_path / "manifests")
    with pytest.raises(UserInputError, match="wav16k/min/tr/mix: folder not found"):
        prepare_wsj0_2mix(tmp_path, tmp_path / "manifests", 16000)


def test_libri2mix_layout_with_noise_and_two_training_splits(tmp_path: Path) -> None:
    names = {
        "train-100": ["19-198-0001_26-495-0002"],
        "train-360": ["100-121669-0001_1001-134707-0003"],
        "dev": ["1272-128104-0000_2035-147961-0014"],
        "test": ["1089-134686-0000_121-121726-0000"],
    }
    folders = ["mix_clean", "mix_both", "s1", "s2", "noise"]
    write_tree(tmp_path / "wav16k" / "min", names, folders, 16000)
    counts = prepare_libri2mix(
        tmp_path, tmp_path / "m", 16000, "min", "mix_both", ["train-100", "train-360"]
    )
    assert counts == {"train": 2, "dev": 1, "test": 1}
    train = read_mixtures(manifest_path(tmp_path / "m", "train"))
    assert [m.speakers for m in train] == [["19", "26"], ["100", "1001"]]
    assert all(Path(m.mixture_path).parent.name == "mix_both" for m in train)
    assert all(Path(m.noise_path).parent.name == "noise" for m in train)
    clean = prepare_libri2mix(tmp_path, tmp_path / "c", 16000, "min", "mix_clean")
    assert clean["train"] == 1
    assert read_mixtures(manifest_path(tmp_path / "c", "dev"))[0].noise_path is None
    with pytest.raises(UserInputError, match="Libri2Mix is wav8k or wav16k"):
        prepare_libri2mix(tmp_path, tmp_path / "m", 11025)


def test_mix_pair_sets_level_offset_noise_and_sums_exactly() -> None:
    rng = np.random.default_rng(1)
    first, second = rng.standard_normal(1000), rng.standard_normal(800)
    first, second = first / first.std(), second / second.std()
    parts = mix_pair(
        first, second, level_db=-4.0, offset=300, noise=rng.standard_normal(1100), noise_snr_db=10.0
    )
    s1, s2, noise = (parts[k].astype(np.float64) for k in ("s1", "s2", "noise"))
    assert len(parts["mix"]) == 1100  # the later source ends at 300 + 800
    assert np.all(s2[:300] == 0) and np.any(s2[300:310] != 0)
    level = 20 * np.log10(s2[300:].std() / s1[:1000].std())
    assert level == pytest.approx(-4.0, abs=0.05)
    snr = 10 * np.log10(np.mean((s1 + s2) ** 2) / np.mean(noise**2))
    assert snr == pytest.approx(10.0, abs=0.05)
    assert np.array_equal(parts["mix"].astype(np.int64), (s1 + s2 + noise).astype(np.int64))
    assert np.abs(parts["mix"]).max() <= 0.9 * 32767 + 2


def fake_corpus(root: Path) -> Path:
    """Manifests of a tiny corpus: 3 speakers per partition, 2 utterances each, SPHERE audio."""
    rng = np.random.default_rng(2)
    folder = root / "manifests"
    for partition in ("train", "dev", "test"):
        utterances = []
        for speaker in range(3):
            for prompt in range(2):
                name = f"{partition[:2]}{speaker}-sx{prompt}"
                path = root / "audio" / f"{name}.sph"
                path.parent.mkdir(parents=True, exist_ok=True)
                samples = (3000 * rng.standard_normal(int(rng.integers(3000, 6000)))).astype(
                    np.int16
                )
                write_sphere(path, samples, 16000)
                utterances.append(
                    Utterance(name, name.split("-")[0], "dr1", "m", str(path), len(samples), "")
                )
        write_manifest(manifest_path(folder, partition), utterances)
    return folder


def test_mixer_keeps_speakers_in_their_partition_levels_and_offsets_in_range(
    tmp_path: Path,
) -> None:
    manifests = fake_corpus(tmp_path)
    settings = MixingSettings(
        scale="tiny", seed=3, relative_level_db=(-2.0, 3.0), max_offset_seconds=0.25
    )
    assert make_mixtures(manifests, tmp_path / "mix", settings, progress=False) is not None
    counts = prepare_wsj0_2mix(tmp_path / "mix", tmp_path / "m", 8000, "max")
    assert counts == {"train": 48, "dev": 12, "test": 12}
    speakers = {}
    for partition, split in (("train", "tr"), ("dev", "cv"), ("test", "tt")):
        mixtures = read_mixtures(manifest_path(tmp_path / "m", partition))
        speakers[partition] = {s for m in mixtures for s in m.speakers}
        assert all(m.speakers[0] != m.speakers[1] for m in mixtures)
        assert all(s.startswith(partition[:2]) for s in speakers[partition])
        records = [
            json.loads(line)
            for line in (tmp_path / "mix/wav8k/max" / split / "mixtures.jsonl")
            .read_text()
            .splitlines()
        ]
        assert all(-2.0 <= r["relative_level_db"] <= 3.0 for r in records)
        assert all(0 <= r["offset_samples"] <= 2000 for r in records)
        assert max(r["offset_samples"] for r in records) > 500
    assert not (speakers["train"] & speakers["dev"]) and not (speakers["dev"] & speakers["test"])
    # deterministic per seed, and skipped when made as asked
    again = tmp_path / "again"
    make_mixtures(manifests, again, settings, progress=False)
    assert fingerprint(again) == fingerprint(tmp_path / "mix")
    one = "wav8k/max/cv/mix"
    assert sorted(p.read_bytes() for p in (again / one).iterdir()) == sorted(
        p.read_bytes() for p in (tmp_path / "mix" / one).iterdir()
    )
    assert make_mixtures(manifests, again, settings, progress=False) is None
    other = MixingSettings(scale="tiny", seed=4)
    make_mixtures(manifests, again, other, progress=False)
    assert fingerprint(again) != fingerprint(tmp_path / "mix")


def test_mixer_refuses_a_speaker_in_two_partitions(tmp_path: Path) -> None:
    manifests = fake_corpus(tmp_path)
    dev = manifests / "dev.jsonl"
    dev.write_text(dev.read_text() + (manifests / "test.jsonl").read_text().splitlines()[0] + "\n")
    with pytest.raises(UserInputError, match="speaker te0 is in both dev and test"):
        make_mixtures(manifests, tmp_path / "mix", MixingSettings(), progress=False)


def test_separation_cache_round_trip_skip_and_damage(tmp_path: Path) -> None:
    names = {"tr": ["a_0_b_0", "c_0_d_0"], "cv": ["e_0_f_0"], "tt": ["g_0_h_0"]}
    write_tree(tmp_path / "wav8k" / "min", names, ["mix", "s1", "s2"], 8000)
    prepare_wsj0_2mix(tmp_path, tmp_path / "m")
    settings = SeparationFeatureSettings()
    result = build_separation_store(
        tmp_path / "m", "train", settings, tmp_path / "cache", progress=False
    )
    assert not result.skipped and result.num_features == 3 * (129 + 64)
    store = SeparationStore(result.path)
    mixture = read_mixtures(tmp_path / "m/train.jsonl")[1]
    example = store.example(1)
    samples = soundfile.read(mixture.source_paths[1], dtype="float32")[0]
    np.testing.assert_array_equal(example.source_samples[1], samples)
    expected = stft(torch.from_numpy(samples), settings).abs().numpy()
    np.testing.assert_allclose(example.source_magnitudes[1], expected, rtol=1e-6, atol=1e-6)
    assert example.mixture_magnitude.shape == (1 + mixture.num_samples // 64, 129)
    assert build_separation_store(
        tmp_path / "m", "train", settings, tmp_path / "cache", progress=False
    ).skipped
    chunk = next((result.path / "feats" / "c").rglob("*"))
    while chunk.is_dir():
        chunk = next(chunk.iterdir())
    chunk.write_bytes(chunk.read_bytes()[:-1])
    with pytest.raises(DamagedFeatureStore, match="feats"):
        SeparationStore(result.path)
    rebuilt = build_separation_store(
        tmp_path / "m", "train", settings, tmp_path / "cache", progress=False
    )
    assert not rebuilt.skipped and rebuilt.damage is not None
    SeparationStore(rebuilt.path)
