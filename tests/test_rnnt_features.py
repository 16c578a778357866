"""The RNN-T front end (speechbed.features.log_mel) against librosa and hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch

from speechbed.features.log_mel import (
    LOG_GUARD,
    LogMelFrontEnd,
    LogMelSettings,
    SpecAugmentSettings,
    apply_spec_augment,
    draw_spec_augment,
    speed_perturb,
    speed_rates,
    stack_frames,
)

librosa = pytest.importorskip("librosa")


def reference_features(samples: np.ndarray, settings: LogMelSettings) -> np.ndarray:
    """librosa's mel spectrogram of the pre-emphasised signal, logged and normalised per bin."""
    emphasised = np.append(samples[:1], samples[1:] - settings.preemphasis * samples[:-1])
    window = scipy.signal.get_window("hann", settings.window_length, fftbins=False)
    mel = librosa.feature.melspectrogram(
        y=emphasised.astype(np.float64), sr=settings.sample_rate, n_fft=settings.fft_size,
        hop_length=settings.hop_length, win_length=settings.window_length, window=window,
        center=True, pad_mode="constant", power=2.0, n_mels=settings.num_mels, fmin=0.0,
        fmax=settings.sample_rate / 2, htk=False, norm="slaney",
    )  # fmt: skip
    logged = np.log(mel + LOG_GUARD).T
    return (logged - logged.mean(0)) / (logged.std(0, ddof=1) + 1e-5)


def test_log_mel_matches_librosa_and_padding_changes_nothing():
    rng = np.random.default_rng(0)
    lengths = [16000, 9123, 4000]
    signals = [
        0.3 * np.sin(2 * np.pi * rng.uniform(100, 3000) * np.arange(n) / 16000)
        + 0.05 * rng.standard_normal(n)
        for n in lengths
    ]
    audio = torch.zeros(3, max(lengths))
    for row, signal in enumerate(signals):
        audio[row, : lengths[row]] = torch.tensor(signal, dtype=torch.float32)
    audio[2, lengths[2] :] = 0.7  # padding holding garbage must not matter
    settings = LogMelSettings()
    front_end = LogMelFrontEnd(settings)
    features, frames = front_end(audio, torch.tensor(lengths))
    assert frames.tolist() == [1 + n // 160 for n in lengths]
    assert features.shape == (3, 101, 80)
    for row, signal in enumerate(signals):
        expected = reference_features(signal.astype(np.float32), settings)
        assert expected.shape[0] == frames[row]
        np.testing.assert_allclose(features[row, : frames[row]].numpy(), expected, atol=2e-3)
        assert not features[row, frames[row] :].any()
        alone, _ = front_end(audio[row : row + 1, : lengths[row]], torch.tensor([lengths[row]]))
        torch.testing.assert_close(alone[0], features[row, : frames[row]], atol=1e-4, rtol=1e-4)


def test_dither_draws_from_the_generator_only_when_given():
    audio = torch.zeros(2, 3200)
    front_end = LogMelFrontEnd()
    plain, _ = front_end(audio, torch.tensor([3200, 1600]))
    again, _ = front_end(audio, torch.tensor([3200, 1600]))
    assert torch.equal(plain, again)
    first, _ = front_end(audio, torch.tensor([3200, 1600]), torch.Generator().manual_seed(1))
    second, _ = front_end(audio, torch.tensor([3200, 1600]), torch.Generator().manual_seed(1))
    assert torch.equal(first, second) and not torch.equal(first, plain)


def test_stack_frames_joins_neighbours_and_subsamples():
    features = torch.arange(1, 8, dtype=torch.float32).view(1, 7, 1).repeat(2, 1, 1)
    stacked, frames = stack_frames(features, torch.tensor([7, 5]), stacking=3, subsampling=3)
    assert frames.tolist() == [3, 2]
    assert stacked[0, :, :].tolist() == [[1, 2, 3], [4, 5, 6], [7, 0, 0]]
    same, _ = stack_frames(features, torch.tensor([7, 7]), stacking=1, subsampling=1)
    assert torch.equal(same, features)


def test_spec_augment_masks_within_the_limits_drawn():
    features = torch.ones(4, 200, 80)
    frames = torch.tensor([200, 150, 100, 10])
    settings = SpecAugmentSettings(freq_masks=2, max_freq=20, time_masks=10, max_time=0.03)
    draws = draw_spec_augment(4, settings, torch.Generator().manual_seed(0))
    masked = apply_spec_augment(features, frames, draws, settings)
    for row in range(4):
        zero_bins = (masked[row, : frames[row]] == 0).all(0)
        zero_frames = (masked[row] == 0).all(1)[: frames[row]]
        assert zero_bins.sum() <= 2 * 20
        assert zero_frames.sum() <= 10 * int(0.03 * frames[row])
    assert not (masked[3] == 0).all(1).any()  # 10 frames: 3 % of them is no frame at all
    widest = torch.tensor([[[0.999, 0.0], [0.999, 0.999]]])
    one_row = apply_spec_augment(
        torch.ones(1, 50, 30), torch.tensor([50]), draws._replace(freq=widest, time=widest),
        SpecAugmentSettings(freq_masks=2, max_freq=5, time_masks=2, max_time=4),
    )  # fmt: skip
    assert (one_row[0] == 0).all(0).nonzero().flatten().tolist() == [
        0,
        1,
        2,
        3,
        4,
        25,
        26,
        27,
        28,
        29,
    ]
    assert (one_row[0] == 0).all(1).nonzero().flatten().tolist() == [0, 1, 2, 3, 46, 47, 48, 49]


def test_speed_perturbation_changes_length_and_pitch():
    tone = torch.sin(2 * torch.pi * 440 * torch.arange(16000) / 16000)
    audio = torch.stack([tone, tone])
    faster, counts = speed_perturb(audio, torch.tensor([16000, 8000]), torch.tensor([1.25, 0.8]))
    assert counts.tolist() == [12800, 10000]
    spectrum = torch.fft.rfft(faster[0, :12800]).abs()
    assert abs(int(spectrum.argmax()) * 16000 / 12800 - 550) <= 2  # 440 Hz played 1.25 x fast
    rates = speed_rates(1000, 0.85, 1.15, torch.Generator().manual_seed(0))
    assert 0.85 <= rates.min() and rates.max() <= 1.15 and rates.std() > 0.05
