"""Parity of speechbed's feature computers with pydrobert-speech's FrameComputer (the reference).

The named features are checked against the exact JSON settings of the issue; a few explicit
settings against ``to_pydrobert()``. Tolerance: max |ours - ref| <= 1e-4 x max |ref|.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from speechbed.features import NAMED_FEATURES, FbankSettings, SigbankSettings
from speechbed.features.computers import make_computer

pydrobert_compute = pytest.importorskip("pydrobert.speech.compute")
pydrobert_alias = pytest.importorskip("pydrobert.speech.alias")

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


def assert_parity(ours: np.ndarray, reference: np.ndarray) -> None:
    assert ours.shape == reference.shape
    if reference.size:
        tolerance = 1e-4 * np.abs(reference).max()
        assert np.abs(ours - reference).max() <= tolerance


@pytest.mark.parametrize(
    ("name", "reference_json"),
    [("fbank-81-10ms", FBANK_JSON), ("sigbank-41-2ms", SIGBANK_JSON)],
)
def test_named_feature_equals_pydrobert(name, reference_json):
    signals = [
        speech_like(n, seed).astype(np.float64) / 32768 for seed, n in enumerate(UTTERANCE_LENGTHS)
    ]
    reference = reference_computer(json.loads(reference_json))
    computer = make_computer(NAMED_FEATURES[name])
    ours = computer(signals)  # one batch: the padding must not leak between utterances
    assert reference.num_coeffs == computer.num_features
    for signal, features in zip(signals, ours, strict=True):
        expected = reference.compute_full(signal)
        assert features.shape[0] == computer.num_frames(len(signal))
        assert_parity(features, expected)
    assert ours[0].shape[0] > 10 and np.abs(ours[0]).max() > 0


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
def test_explicit_settings_equal_pydrobert(settings):
    signals = [
        speech_like(n, seed + 10).astype(np.float64) / 32768 for seed, n in enumerate([4000, 2333])
    ]
    reference = reference_computer(settings.to_pydrobert())
    for signal, features in zip(signals, make_computer(settings)(signals), strict=True):
        assert_parity(features, reference.compute_full(signal))


def test_raw_is_the_signal_in_one_column():
    signal = speech_like(777, 3).astype(np.float32) / 32768
    (features,) = make_computer(NAMED_FEATURES["raw"])([signal])
    assert features.shape == (777, 1)
    np.testing.assert_array_equal(features[:, 0], signal)


def test_parity_check_can_fail():
    """A one-sample shift of the input must break parity (the tolerance is not too loose)."""
    signal = speech_like(6000, 1).astype(np.float64) / 32768
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
def test_named_feature_on_cuda_equals_pydrobert(name, reference_json):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    signals = [
        speech_like(n, seed).astype(np.float64) / 32768 for seed, n in enumerate([9000, 4321])
    ]
    reference = reference_computer(json.loads(reference_json))
    ours = make_computer(NAMED_FEATURES[name], device="cuda")(signals)
    for signal, features in zip(signals, ours, strict=True):
        assert_parity(features, reference.compute_full(signal))
