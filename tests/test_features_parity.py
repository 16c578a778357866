"""Parity of speechbed's feature computers with pydrobert-speech's FrameComputer (the reference).

The named features are checked against the exact JSON settings of the issue; a few explicit
settings against ``to_pydrobert()``. The test writes SPHERE files; the reference reads each with
pydrobert-speech's own SPHERE reader as float64 (the int16 values, unscaled, as the original
study computed its features) and speechbed reads it with its reader, as the cache builder does,
so neither side is scaled by the test. Tolerance: max |ours - ref| <= 1e-4 x max |ref|.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from speechbed.corpora.manifest import Utterance, manifest_path, write_manifest
from speechbed.corpora.sphere import read_sphere, write_sphere
from speechbed.features import NAMED_FEATURES, FbankSettings, FeatureCache, SigbankSettings
from speechbed.features.build import build_feature_cache
from speechbed.features.computers import make_computer

pydrobert_compute = pytest.importorskip("pydrobert.speech.compute")
pydrobert_alias = pytest.importorskip("pydrobert.speech.alias")
pydrobert_util = pytest.importorskip("pydrobert.speech.util")

FBANK_JSON = (
    '{"name":"stft","bank":{"name":"fbank","num_filts":80,"low_hz":20,"high_hz":8000,'
    '"sampling_rate":16000,"analytic":false},"frame_length_ms":25,"frame_shift_ms":10,'
    '"frame_style":"centered","include_energy":true,"pad_to_nearest_power_of_two":true,'
    '"window_function":"hanning","use_log":false,"use_power":false}'
)
SIGBANK_JSON = (
    '{"name":"si","bank":{"name":"gabor","scaling_function":"mel","num_filts":40,"low_hz":20,'
    '"high_hz":8000,"sampling_rate":16000},"frame_shift_ms":2,"frame_style":"centered",'
    '"include_energy":true,"pad_to_nearest_power_of_two":true,"window_function":"hanning",'
    '"use_log":false,"use_power":false}'
)
RATE = 16000


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small FFTs on a shared 2-core machine run far faster on one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def reference_computer(settings: dict):
    return pydrobert_alias.alias_factory_subclass_from_arg(
        pydrobert_compute.FrameComputer, settings
    )


def speech_like(num_samples: int, seed: int) -> np.ndarray:
    """Voiced stretches (a gliding pitch with harmonics), noise bursts and silence, as int16."""
    rng = np.random.default_rng(seed)
    time = np.arange(num_samples) / RATE
    pitch = 110 + 60 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * time)
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 25))
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(1, 4) * time), 0, None)
    noise = rng.standard_normal(num_samples) * (np.sin(2 * np.pi * 3 * time) > 0.6)
    signal = 3000 * envelope * voiced + 800 * noise
    signal[: num_samples // 10] = rng.standard_normal(num_samples // 10) * 5  # near silence
    return np.clip(np.round(signal), -32768, 32767).astype(np.int16)


#: several utterances, including lengths at the edges of the frame counts
UTTERANCE_LENGTHS = [9000, 5123, 16000, 250, 201, 200, 40, 17, 5]


def sphere_files(folder, lengths, first_seed=0) -> list:
    """speech_like utterances written as TIMIT-style SPHERE files (``.WAV``)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed, length in enumerate(lengths, start=first_seed):
        path = folder / f"utt{seed}.WAV"
        write_sphere(path, speech_like(length, seed), RATE)
        paths.append(path)
    return paths


def reference_samples(path) -> np.ndarray:
    """What the original study computed on: pydrobert-speech reading the SPHERE file as float64."""
    samples = pydrobert_util.read_signal(str(path), dtype=np.float64, force_as="sph")
    assert samples.dtype == np.float64
    return samples


def our_samples(path) -> np.ndarray:
    """What the cache builder hands its computers: the project's reader's int16 samples."""
    samples, _ = read_sphere(path)
    assert samples.dtype == np.int16
    return samples


def assert_parity(ours: np.ndarray, reference: np.ndarray) -> None:
    assert ours.shape == reference.shape
    if reference.size:
        tolerance = 1e-4 * np.abs(reference).max()
        assert np.abs(ours - reference).max() <= tolerance


@pytest.mark.parametrize(
    ("name", "reference_json"),
    [("fbank-81-10ms", FBANK_JSON), ("sigbank-41-2ms", SIGBANK_JSON)],
)
def test_named_feature_equals_pydrobert(name, reference_json, tmp_path):
    paths = sphere_files(tmp_path, UTTERANCE_LENGTHS)
    reference = reference_computer(json.loads(reference_json))
    computer = make_computer(NAMED_FEATURES[name])
    # one batch: the padding must not leak between utterances
    ours = computer([our_samples(path) for path in paths])
    assert reference.num_coeffs == computer.num_features
    for path, features in zip(paths, ours, strict=True):
        signal = reference_samples(path)
        expected = reference.compute_full(signal)
        assert features.shape[0] == computer.num_frames(len(signal))
        assert_parity(features, expected)
    assert ours[0].shape[0] > 10 and np.abs(ours[0]).max() > 0


@pytest.mark.parametrize(
    ("name", "reference_json"),
    [("fbank-81-10ms", FBANK_JSON), ("sigbank-41-2ms", SIGBANK_JSON)],
)
def test_named_feature_store_equals_pydrobert_on_the_sphere_files(name, reference_json, tmp_path):
    """End to end: a store built from a manifest holds what pydrobert-speech computes on its files."""
    lengths = [7000, 3001, 250]
    paths = sphere_files(tmp_path / "audio", lengths, first_seed=20)
    utterances = [
        Utterance(
            id=f"spk{index}-sx{index}",
            speaker=f"spk{index}",
            dialect="dr1",
            gender="f",
            audio_path=str(path),
            num_samples=length,
            text="words",
            phones_48=["sil", "aa", "sil"],
        )
        for index, (path, length) in enumerate(zip(paths, lengths, strict=True))
    ]
    write_manifest(manifest_path(tmp_path, "train"), utterances)
    built = build_feature_cache(tmp_path, "train", name, tmp_path / "cache", progress=False)
    cache = FeatureCache(built.path)
    assert cache.settings["scale"] == "int16"
    reference = reference_computer(json.loads(reference_json))
    for index, path in enumerate(paths):
        expected = reference.compute_full(reference_samples(path))
        assert np.abs(expected).max() > 1.0, "the reference is on the int16 scale"
        assert_parity(cache.feats(index), expected)


@pytest.mark.parametrize(
    "settings",
    [
        FbankSettings(num_filters=23, low_hz=100, high_hz=7000, use_log=True, use_power=True),
        FbankSettings(frame_length_ms=20, frame_shift_ms=5, include_energy=False),
        FbankSettings(pad_to_nearest_power_of_two=False, sampling_rate=8000, high_hz=4000),
        SigbankSettings(num_filters=20, low_hz=60, high_hz=6000, frame_shift_ms=5, use_log=True),
        SigbankSettings(include_energy=False, use_power=True, frame_shift_ms=1),
    ],
    ids=["fbank-log-power", "fbank-short", "fbank-8k-nopad", "sigbank-log", "sigbank-power"],
)
def test_explicit_settings_equal_pydrobert(settings, tmp_path):
    paths = sphere_files(tmp_path, [4000, 2333], first_seed=10)
    reference = reference_computer(settings.to_pydrobert())
    ours = make_computer(settings)([our_samples(path) for path in paths])
    for path, features in zip(paths, ours, strict=True):
        assert_parity(features, reference.compute_full(reference_samples(path)))


@pytest.mark.parametrize(
    "settings",
    [
        FbankSettings(scale="unit"),
        FbankSettings(scale="unit", use_log=True, use_power=True),
        SigbankSettings(scale="unit", num_filters=20, use_log=True),
    ],
    ids=["fbank-unit", "fbank-unit-log-power", "sigbank-unit-log"],
)
def test_unit_scale_equals_pydrobert_on_samples_over_32768(settings, tmp_path):
    """The documented scaled variant: by definition, the reference on int16 / 32768."""
    paths = sphere_files(tmp_path, [4000, 2333], first_seed=30)
    reference = reference_computer(settings.to_pydrobert())
    ours = make_computer(settings)([our_samples(path) for path in paths])
    for path, features in zip(paths, ours, strict=True):
        assert_parity(features, reference.compute_full(reference_samples(path) / 32768))


def test_named_features_are_on_the_int16_scale():
    """A linear bank's unit-scale features are its int16-scale ones / 32768."""
    signal = speech_like(5000, 4)
    for name in ("fbank-81-10ms", "sigbank-41-2ms"):
        named = NAMED_FEATURES[name]
        assert named.scale == "int16" and named.scale_factor == 1.0
        (int16_scale,) = make_computer(named)([signal])
        (unit_scale,) = make_computer(named.model_copy(update={"scale": "unit"}))([signal])
        np.testing.assert_allclose(unit_scale * 32768, int16_scale, rtol=1e-4, atol=1e-3)
    assert NAMED_FEATURES["raw"].scale == "unit"


def test_raw_is_the_signal_in_one_column():
    samples = speech_like(777, 3)
    signal = samples.astype(np.float32) / 32768
    (features,) = make_computer(NAMED_FEATURES["raw"])([samples])
    assert features.shape == (777, 1)
    np.testing.assert_array_equal(features[:, 0], signal)


def test_parity_check_can_fail():
    """A one-sample shift of the input must break parity (the tolerance is not too loose)."""
    signal = speech_like(6000, 1).astype(np.float64)
    shifted = np.concatenate([[0.0], signal[:-1]])
    reference = reference_computer(json.loads(FBANK_JSON)).compute_full(signal)
    (ours,) = make_computer(NAMED_FEATURES["fbank-81-10ms"])([shifted])
    with pytest.raises(AssertionError):
        assert_parity(ours, reference)


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("name", "reference_json"),
    [("fbank-81-10ms", FBANK_JSON), ("sigbank-41-2ms", SIGBANK_JSON)],
)
def test_named_feature_on_cuda_equals_pydrobert(name, reference_json, tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    paths = sphere_files(tmp_path, [9000, 4321])
    reference = reference_computer(json.loads(reference_json))
    ours = make_computer(NAMED_FEATURES[name], device="cuda")([our_samples(p) for p in paths])
    for path, features in zip(paths, ours, strict=True):
        assert_parity(features, reference.compute_full(reference_samples(path)))
