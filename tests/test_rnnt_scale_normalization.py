"""Streaming normalisation (issue 17): dumped statistics and running statistics against float64
reference loops written out scalar by scalar."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechbed.features.log_mel import STD_GUARD
from speechbed.features.streaming_normalization import (
    MelStatistics,
    StreamingNormalizer,
    dump_mel_stats,
    load_mel_statistics,
    save_mel_statistics,
)


def _reference(frames_list, mean0, var0, alpha, reset):
    """Frame by frame in float64 NumPy, one bin at a time."""
    outputs = []
    mean, var = mean0.copy(), var0.copy()
    for frames in frames_list:
        if reset:
            mean, var = mean0.copy(), var0.copy()
        out = np.zeros_like(frames)
        for t in range(frames.shape[0]):
            for f in range(frames.shape[1]):
                x = frames[t, f]
                mean[f] = (1 - alpha) * mean[f] + alpha * x
                var[f] = (1 - alpha) * var[f] + alpha * (x - mean[f]) ** 2
                out[t, f] = (x - mean[f]) / (np.sqrt(var[f]) + STD_GUARD)
        outputs.append(out)
    return outputs


def _batch(lengths, bins, seed=0):
    rng = np.random.default_rng(seed)
    utterances = [rng.normal(3.0, 2.0, size=(n, bins)) + np.arange(bins) for n in lengths]
    padded = np.zeros((len(lengths), max(lengths), bins))
    for row, frames in enumerate(utterances):
        padded[row, : len(frames)] = frames
    return utterances, torch.tensor(padded, dtype=torch.float32), torch.tensor(lengths)


def test_dumped_statistics_match_numpy(tmp_path):
    utterances, features, frames = _batch([7, 3, 5], 4)
    batches = [(features[:2], frames[:2]), (features[2:], frames[2:])]
    statistics = dump_mel_stats(batches, lambda audio, counts: (audio, counts))
    every = np.concatenate([u.astype(np.float32).astype(np.float64) for u in utterances])
    np.testing.assert_allclose(statistics.mean.numpy(), every.mean(0), rtol=1e-12)
    np.testing.assert_allclose(statistics.variance.numpy(), every.var(0, ddof=1), rtol=1e-9)
    assert statistics.count == 15
    save_mel_statistics(statistics, tmp_path / "stats")
    for name in ("melmeans", "melvars", "meln"):
        assert (tmp_path / "stats" / f"{name}.npy").is_file()
    np.testing.assert_array_equal(np.load(tmp_path / "stats/melmeans.npy"), every.mean(0))
    loaded = load_mel_statistics(tmp_path / "stats")
    assert torch.equal(loaded.variance, statistics.variance) and loaded.count == 15


@pytest.mark.parametrize("reset", [False, True])
@pytest.mark.parametrize("alpha", [0.001, 0.3])
def test_running_statistics_match_a_direct_computation(reset, alpha):
    utterances, features, frames = _batch([6, 2, 9], 3, seed=1)
    mean0, var0 = np.array([1.0, 2.0, 3.5]), np.array([4.0, 0.5, 2.0])
    statistics = MelStatistics(torch.tensor(mean0), torch.tensor(var0), 100)
    normalizer = StreamingNormalizer(statistics, alpha, reset_per_utterance=reset)
    inputs = [u.astype(np.float32).astype(np.float64) for u in utterances]
    expected = _reference(inputs + inputs, mean0, var0, alpha, reset)  # two batches in a row
    for batch in range(2):
        output = normalizer(features, frames).double().numpy()
        for row, frames_here in enumerate(expected[3 * batch : 3 * batch + 3]):
            np.testing.assert_allclose(output[row, : len(frames_here)], frames_here, rtol=1e-5)
            assert not output[row, len(frames_here) :].any()  # padding stays 0
    if reset:  # the per-utterance stream ignores what came before: batches alike
        np.testing.assert_array_equal(normalizer(features, frames), normalizer(features, frames))


def test_alpha_zero_is_the_fixed_training_set_normalisation():
    _, features, frames = _batch([4, 4], 2)
    statistics = MelStatistics(torch.tensor([1.0, -1.0]), torch.tensor([4.0, 9.0]), 10)
    output = StreamingNormalizer(statistics, 0.0)(features, frames)
    expected = (features.double() - statistics.mean) / (statistics.variance.sqrt() + STD_GUARD)
    torch.testing.assert_close(output, expected.float())
