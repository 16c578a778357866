"""The RNN-T loss (speechbed.losses.rnnt) against brute force, a per-cell loop and gradcheck.

The references here are written independently of the module: every alignment enumerated on
tiny lattices, and a plain per-cell float64 recursion in numpy.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from speechbed.losses import rnnt_loss


def random_batch(
    frames: list[int],
    tokens: list[int],
    num_classes: int,
    blank: int,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shape = (len(frames), max(frames), max(tokens) + 1, num_classes)
    logits = scale * torch.randn(shape, generator=generator, dtype=dtype)
    labels = [c for c in range(num_classes) if c != blank % num_classes]
    choice = torch.randint(len(labels), (len(frames), max(tokens)), generator=generator)
    targets = torch.tensor(labels)[choice].int()
    return (
        logits,
        targets,
        torch.tensor(frames, dtype=torch.int32),
        torch.tensor(tokens, dtype=torch.int32),
    )


def log_softmax_np(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def brute_force_loss(logits: np.ndarray, targets: list[int], blank: int) -> float:
    """-log of the summed probability of every alignment of T blanks and U tokens (T x U+1 x V).

    An alignment is an order of T + U moves ending with the blank out of the last cell.
    """
    log_probs = log_softmax_np(np.asarray(logits, dtype=np.float64))
    frames, tokens = log_probs.shape[0], len(targets)
    total = -math.inf
    for blank_steps in itertools.combinations(range(frames - 1 + tokens), frames - 1):
        t = u = 0
        score = 0.0
        for step in range(frames - 1 + tokens):
            if step in blank_steps:
                score += log_probs[t, u, blank]
                t += 1
            else:
                score += log_probs[t, u, targets[u]]
                u += 1
        score += log_probs[t, u, blank]
        total = np.logaddexp(total, score)
    return -float(total)


def per_cell_loss(logits: np.ndarray, targets: list[int], blank: int) -> float:
    """The forward recursion cell by cell, in float64."""
    log_probs = log_softmax_np(np.asarray(logits, dtype=np.float64))
    frames, tokens = log_probs.shape[0], len(targets)
    alpha = np.full((frames, tokens + 1), -np.inf)
    for t in range(frames):
        for u in range(tokens + 1):
            if t == 0 and u == 0:
                alpha[t, u] = 0.0
                continue
            came = []
            if t > 0:
                came.append(alpha[t - 1, u] + log_probs[t - 1, u, blank])
            if u > 0:
                came.append(alpha[t, u - 1] + log_probs[t, u - 1, targets[u - 1]])
            alpha[t, u] = np.logaddexp.reduce(came)
    return -float(alpha[frames - 1, tokens] + log_probs[frames - 1, tokens, blank])


def utterance(logits, targets, frames, tokens, row):
    t, u = int(frames[row]), int(tokens[row])
    return logits[row, :t, : u + 1].numpy(), targets[row, :u].tolist()


@pytest.mark.parametrize("blank", [0, 4])
def test_loss_equals_the_sum_over_all_alignments(blank):
    frames, tokens = [4, 3, 1, 5], [3, 2, 2, 0]
    logits, targets, logit_lengths, target_lengths = random_batch(frames, tokens, 5, blank)
    losses = rnnt_loss(logits, targets, logit_lengths, target_lengths, blank, reduction="none")
    for row in range(len(frames)):
        expected = brute_force_loss(*utterance(logits, targets, frames, tokens, row), blank)
        assert losses[row].item() == pytest.approx(expected, rel=1e-10)


def test_loss_matches_a_per_cell_recursion_on_larger_lattices():
    frames, tokens = [17, 30, 9], [11, 4, 9]
    logits, targets, logit_lengths, target_lengths = random_batch(frames, tokens, 7, -1, seed=3)
    losses = rnnt_loss(logits, targets, logit_lengths, target_lengths, reduction="none")
    for row in range(len(frames)):
        expected = per_cell_loss(*utterance(logits, targets, frames, tokens, row), 6)
        assert losses[row].item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("fused", [True, False])
def test_gradient_passes_gradcheck(fused):
    frames, tokens = [4, 2, 3], [2, 3, 0]
    logits, targets, logit_lengths, target_lengths = random_batch(frames, tokens, 4, 1, seed=5)
    if not fused:  # log-probabilities already normalised, as log_softmax outside the loss gives
        logits = torch.log_softmax(logits, dim=-1)
    logits.requires_grad_(True)

    def loss(values):
        return rnnt_loss(
            values, targets, logit_lengths, target_lengths, 1, reduction="none",
            fused_log_softmax=fused,
        )  # fmt: skip

    assert torch.autograd.gradcheck(loss, (logits,), eps=1e-6, atol=1e-7)


def test_padding_changes_neither_loss_nor_gradient():
    frames, tokens = [6, 3, 5], [2, 4, 1]
    logits, targets, logit_lengths, target_lengths = random_batch(frames, tokens, 6, -1, seed=7)
    noisy = logits.clone()
    for row, (t, u) in enumerate(zip(frames, tokens, strict=True)):
        noisy[row, t:] = 50 * torch.randn_like(noisy[row, t:])
        noisy[row, :, u + 1 :] = -30 * torch.rand_like(noisy[row, :, u + 1 :])
        targets[row, u:] = row  # anything: padded targets are never read
    noisy.requires_grad_(True)
    batch_losses = rnnt_loss(noisy, targets, logit_lengths, target_lengths, reduction="none")
    batch_losses.sum().backward()
    for row, (t, u) in enumerate(zip(frames, tokens, strict=True)):
        alone = logits[row : row + 1, :t, : u + 1].clone().requires_grad_(True)
        loss = rnnt_loss(
            alone, targets[row : row + 1, :u], logit_lengths[row : row + 1],
            target_lengths[row : row + 1], reduction="sum",
        )  # fmt: skip
        loss.backward()
        assert batch_losses[row].item() == pytest.approx(loss.item(), rel=1e-12)
        torch.testing.assert_close(noisy.grad[row, :t, : u + 1], alone.grad[0])
        assert not noisy.grad[row, t:].any() and not noisy.grad[row, :, u + 1 :].any()


def test_float32_stays_finite_and_close_to_float64_with_large_logits():
    frames, tokens = [120, 80], [40, 25]
    logits, targets, logit_lengths, target_lengths = random_batch(
        frames, tokens, 16, -1, seed=11, scale=40.0
    )
    reference = rnnt_loss(logits, targets, logit_lengths, target_lengths, reduction="none")
    single = logits.float().requires_grad_(True)
    losses = rnnt_loss(single, targets, logit_lengths, target_lengths, reduction="none")
    losses.sum().backward()
    assert single.grad is not None and torch.isfinite(single.grad).all()
    torch.testing.assert_close(losses.double(), reference, rtol=1e-5, atol=0)
    expected = per_cell_loss(*utterance(logits, targets, frames, tokens, 1), 15)
    assert reference[1].item() == pytest.approx(expected, rel=1e-10)


def test_reductions_blank_from_the_end_and_clamp():
    frames, tokens = [5, 4], [3, 1]
    logits, targets, logit_lengths, target_lengths = random_batch(frames, tokens, 5, 4, seed=2)
    arguments = (logits, targets, logit_lengths, target_lengths)
    per_utterance = rnnt_loss(*arguments, blank=4, reduction="none")
    assert rnnt_loss(*arguments).item() == pytest.approx(per_utterance.mean().item())
    assert rnnt_loss(*arguments, reduction="sum").item() == pytest.approx(per_utterance.sum())
    clamped = logits.clone().requires_grad_(True)
    rnnt_loss(clamped, *arguments[1:], clamp=0.05, reduction="sum").backward()
    free = logits.clone().requires_grad_(True)
    rnnt_loss(free, *arguments[1:], reduction="sum").backward()
    assert free.grad.abs().max() > 0.05
    torch.testing.assert_close(clamped.grad, free.grad.clamp(-0.05, 0.05))


def test_int64_lengths_and_half_precision_logits_are_accepted():
    frames, tokens = [5, 3], [2, 2]
    logits, targets, logit_lengths, target_lengths = random_batch(frames, tokens, 5, -1)
    expected = rnnt_loss(logits, targets, logit_lengths, target_lengths, reduction="none")
    half = logits.to(torch.bfloat16).requires_grad_(True)
    losses = rnnt_loss(half, targets.long(), logit_lengths.long(), target_lengths.long(), -1,
                       reduction="none")  # fmt: skip
    losses.sum().backward()
    assert losses.dtype == torch.float32 and half.grad.dtype == torch.bfloat16
    torch.testing.assert_close(losses.double(), expected, rtol=0.02, atol=0.05)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"targets": torch.zeros(2, 3, dtype=torch.int32)}, r"targets must have shape \(2, 2\)"),
        ({"logit_lengths": torch.tensor([5.0, 3.0])}, "logit_lengths must be int32"),
        ({"logit_lengths": torch.tensor([6, 3], dtype=torch.int32)}, r"lie in \[1, 5\]"),
        ({"target_lengths": torch.tensor([3, 1], dtype=torch.int32)}, r"lie in \[0, 2\]"),
        ({"targets": torch.tensor([[1, 4], [0, 0]], dtype=torch.int32)}, r"targets\[0, 1\] is 4"),
        ({"blank": 5}, "blank 5 is not a class index for 5 classes"),
        ({"reduction": "avg"}, "reduction must be one of"),
    ],
)
def test_bad_arguments_are_named(change, message):
    arguments = dict(
        zip(
            ("logits", "targets", "logit_lengths", "target_lengths"),
            random_batch([5, 3], [2, 1], 5, -1),
            strict=True,
        )
    )
    arguments.update(change)
    with pytest.raises((ValueError, TypeError), match=message):
        rnnt_loss(**arguments)


def test_agrees_with_warprnnt_numba_when_installed():
    """NVIDIA's numba RNN-T loss (from NeMo), when the test environment has it."""
    numba_loss = pytest.importorskip("warprnnt_numba.rnnt_loss.rnnt_pytorch").rnnt_loss
    frames, tokens = [20, 14, 7], [6, 9, 3]
    logits, targets, logit_lengths, target_lengths = random_batch(
        frames, tokens, 9, 0, seed=13, dtype=torch.float32
    )
    ours = logits.clone().requires_grad_(True)
    theirs = logits.clone().requires_grad_(True)
    expected = numba_loss(theirs, targets, logit_lengths, target_lengths, 0, "none")
    losses = rnnt_loss(ours, targets, logit_lengths, target_lengths, 0, reduction="none")
    (losses * torch.arange(1.0, 4.0)).sum().backward()
    (expected * torch.arange(1.0, 4.0)).sum().backward()
    torch.testing.assert_close(losses, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-4, atol=1e-6)
