"""The separation objectives and scores against independent references.

Deep clustering against the explicit T.F x T.F affinity formula, PIT against brute force over
permutations, SI-SDR against a hand-worked case and fast_bss_eval, BSS Eval against mir_eval,
k-means masks on separable embeddings, and the STFT's exact inverse.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from speechbed.features.separation_job import SeparationFeatureSettings
from speechbed.features.separation_store import istft, stft
from speechbed.models.separation import cluster_masks
from speechbed.models.separation_losses import (
    deep_clustering_loss,
    ideal_binary_assignments,
    pit_mask_loss,
    silence_weights,
)
from speechbed.tasks.separation.scoring import score_mixture, si_sdr


def explicit_affinity_loss(v: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """sum_ij w_i w_j (v_i.v_j - y_i.y_j)^2 / (sum w)^2 with the N x N matrices formed."""
    a, b = v @ v.T, y @ y.T
    return float((np.outer(w, w) * (a - b) ** 2).sum() / w.sum() ** 2)


def test_deep_clustering_loss_matches_the_explicit_affinity_formula() -> None:
    generator = torch.Generator().manual_seed(0)
    batch, frames, bins, dimension, sources = 2, 5, 7, 4, 3
    embeddings = torch.nn.functional.normalize(
        torch.randn(batch, frames, bins, dimension, generator=generator, dtype=torch.float64),
        dim=-1,
    )
    magnitudes = torch.rand(batch, sources, frames, bins, generator=generator, dtype=torch.float64)
    assignments = ideal_binary_assignments(magnitudes).double()
    weights = (torch.rand(batch, frames, bins, generator=generator) > 0.3).double()
    weights[1, 3:] = 0  # padding frames
    loss = deep_clustering_loss(embeddings, assignments, weights)
    for item in range(batch):
        expected = explicit_affinity_loss(
            embeddings[item].reshape(-1, dimension).numpy(),
            assignments[item].reshape(-1, sources).numpy(),
            weights[item].reshape(-1).numpy(),
        )
        assert loss[item].item() == pytest.approx(expected, rel=1e-5)


def test_perfect_embeddings_have_zero_deep_clustering_loss() -> None:
    magnitudes = torch.rand(1, 2, 4, 6, generator=torch.Generator().manual_seed(1))
    assignments = ideal_binary_assignments(magnitudes)
    loss = deep_clustering_loss(assignments, assignments, torch.ones(1, 4, 6))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_pit_loss_is_the_least_over_every_permutation() -> None:
    generator = torch.Generator().manual_seed(2)
    batch, count, frames, bins = 3, 3, 6, 5
    masks = torch.rand(batch, count, frames, bins, generator=generator, dtype=torch.float64)
    mixture = torch.rand(batch, frames, bins, generator=generator, dtype=torch.float64)
    sources = torch.rand(batch, count, frames, bins, generator=generator, dtype=torch.float64)
    lengths = torch.tensor([6, 4, 2])
    loss, permutation = pit_mask_loss(masks, mixture, sources, lengths)
    for item in range(batch):
        valid = int(lengths[item])
        costs = {}
        for order in itertools.permutations(range(count)):
            error = sum(
                (
                    (
                        masks[item, c, :valid] * mixture[item, :valid]
                        - sources[item, order[c], :valid]
                    )
                    ** 2
                )
                .sum()
                .item()
                for c in range(count)
            )
            costs[order] = error / (valid * bins * count)
        best = min(costs, key=costs.get)
        assert loss[item].item() == pytest.approx(costs[best], rel=1e-9)
        assert tuple(permutation[item].tolist()) == best


def test_silence_weights_keep_bins_within_the_threshold_of_the_loudest() -> None:
    mixture = torch.tensor([[[1.0, 0.1, 0.001], [0.02, 5.0, 0.0]]])
    weights = silence_weights(mixture, torch.tensor([2]), threshold_db=40.0)
    # loudest 5.0 (14 dB); kept: > -26 dB, i.e. magnitude > 0.05
    assert weights.tolist() == [[[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]]]
    assert silence_weights(mixture, torch.tensor([1]), None)[0, 1].sum() == 0


def test_si_sdr_of_a_hand_worked_case_and_against_fast_bss_eval() -> None:
    reference = np.array([1.0, -1.0, 1.0, -1.0])
    error = np.array([1.0, 1.0, -1.0, -1.0])  # orthogonal to the reference, zero mean
    assert si_sdr(3 * reference + 0.5 * error, reference) == pytest.approx(10 * np.log10(36))
    fast_bss_eval = pytest.importorskip("fast_bss_eval")
    rng = np.random.default_rng(3)
    references = rng.standard_normal((2, 4000))
    estimates = references + 0.3 * rng.standard_normal((2, 4000))
    expected = fast_bss_eval.si_sdr(references, estimates, zero_mean=True, return_perm=False)
    ours = [si_sdr(e, r) for e, r in zip(estimates, references, strict=True)]
    np.testing.assert_allclose(ours, expected, atol=1e-6)


@pytest.mark.filterwarnings("ignore:mir_eval.separation.bss_eval_sources:FutureWarning")
def test_bss_eval_scores_match_mir_eval_and_follow_the_best_permutation() -> None:
    mir_eval = pytest.importorskip("mir_eval")
    rng = np.random.default_rng(4)
    references = rng.standard_normal((2, 3000))
    mixture = references.sum(axis=0)
    noise = 0.1 * rng.standard_normal((2, 3000))
    estimates = np.stack([references[1] + 0.2 * references[0], references[0]]) + noise
    scores = score_mixture(estimates, references, mixture)
    sdr, sir, sar, perm = mir_eval.separation.bss_eval_sources(references, estimates)
    assert list(perm) == [1, 0]  # mir_eval's matching is the SI-SDR one here
    np.testing.assert_allclose(scores.sdr, sdr, atol=1e-3)
    np.testing.assert_allclose(scores.sir, sir, atol=1e-3)
    np.testing.assert_allclose(scores.sar, sar, atol=1e-3)
    assert scores.si_sdr[0] > 19 and np.all(scores.si_sdri > 0)


def test_k_means_masks_split_separable_embeddings() -> None:
    labels = torch.tensor([[0, 1, 1], [0, 0, 1]])
    directions = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    embeddings = directions[labels] + 0.05 * torch.randn(
        2, 3, 2, generator=torch.Generator().manual_seed(5)
    )
    masks = cluster_masks(embeddings, torch.ones(2, 3), num_sources=2)
    found = masks.argmax(dim=0)
    assert torch.equal(found, labels) or torch.equal(found, 1 - labels)


def test_stft_inverts_exactly() -> None:
    settings = SeparationFeatureSettings()
    samples = torch.randn(2, 3001, generator=torch.Generator().manual_seed(6))
    spectrum = stft(samples, settings)
    assert spectrum.shape == (2, 1 + 3001 // 64, 129)
    torch.testing.assert_close(istft(spectrum, settings, 3001), samples, atol=1e-5, rtol=0)
