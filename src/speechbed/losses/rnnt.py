"""The RNN transducer loss (Graves, 2012) with torchaudio's arguments, vectorised on anti-diagonals.

Called by the rnnt task (speechbed.tasks.rnnt) and benchmarks/bench_rnnt.py. The lattice has a
cell (t, u) for each encoder frame t and number u of tokens emitted so far; from a cell, blank
moves to (t + 1, u) and token ``targets[u]`` to (t, u + 1). Every cell of an anti-diagonal
t + u = d depends only on diagonal d - 1, so the forward (alpha) and backward (beta)
log-probabilities take one vectorised step per diagonal: T + U steps instead of T * U cells.
The gradient is written out from alpha and beta (no autograd graph through the recursion), so
the lattice costs the logits, their log-normaliser and the gradient, nothing per step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

#: Log-probability of an impossible cell: finite, so that no gradient meets inf - inf.
LOG_ZERO = -1e30
REDUCTIONS = ("none", "mean", "sum")


def _check_inputs(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int,
) -> int:
    """The blank's index in [0, classes); ValueError or TypeError naming a bad argument."""
    if logits.dim() != 4 or not logits.is_floating_point():
        raise ValueError(
            "logits must be floating point of shape (batch, max time, max target length + 1, "
            f"classes), got {logits.dtype} of shape {tuple(logits.shape)}"
        )
    batch, max_time, max_targets_plus_one, num_classes = logits.shape
    expected = {
        "targets": (batch, max_targets_plus_one - 1),
        "logit_lengths": (batch,),
        "target_lengths": (batch,),
    }
    for name, tensor in zip(expected, (targets, logit_lengths, target_lengths), strict=True):
        if tensor.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"{name} must be int32 (or int64), got {tensor.dtype}")
        if tuple(tensor.shape) != expected[name]:
            raise ValueError(
                f"{name} must have shape {expected[name]} for logits of shape "
                f"{tuple(logits.shape)}, got {tuple(tensor.shape)}"
            )
    if not -num_classes <= blank < num_classes:
        raise ValueError(f"blank {blank} is not a class index for {num_classes} classes")
    blank %= num_classes
    if batch == 0:
        return blank
    if int(logit_lengths.min()) < 1 or int(logit_lengths.max()) > max_time:
        raise ValueError(
            f"logit_lengths must lie in [1, {max_time}] (logits' time axis), got "
            f"{logit_lengths.tolist()}"
        )
    if int(target_lengths.min()) < 0 or int(target_lengths.max()) > max_targets_plus_one - 1:
        raise ValueError(
            f"target_lengths must lie in [0, {max_targets_plus_one - 1}] (logits' target axis "
            f"minus 1), got {target_lengths.tolist()}"
        )
    positions = torch.arange(targets.shape[1], device=targets.device)
    used = positions[None, :] < target_lengths[:, None].to(targets.device)
    bad = used & ((targets < 0) | (targets >= num_classes) | (targets == blank))
    if bool(bad.any()):
        row, column = (int(index) for index in bad.nonzero()[0])
        raise ValueError(
            f"targets[{row}, {column}] is {int(targets[row, column])}: a target must be a class "
            f"in [0, {num_classes}) other than the blank ({blank})"
        )
    return blank


def skew(values: torch.Tensor, fill: float) -> torch.Tensor:
    """(B, T, U1) per-cell values as (T + U1 - 1, B, U1): ``out[d, b, u] = values[b, d - u, u]``.

    Row d is anti-diagonal d, indexed by u; positions off the lattice hold ``fill``.
    """
    batch, max_time, width = values.shape
    diagonal = torch.arange(max_time + width - 1, device=values.device)[:, None]
    column = torch.arange(width, device=values.device)[None, :]
    time = diagonal - column
    on_lattice = (time >= 0) & (time < max_time)
    gathered = values[:, time.clamp(0, max_time - 1), column.expand_as(time)]
    return torch.where(on_lattice, gathered, fill).transpose(0, 1)


def unskew(diagonals: torch.Tensor, max_time: int) -> torch.Tensor:
    """The inverse of ``skew``: (D, B, U1) diagonals back to (B, T, U1) cells."""
    width = diagonals.shape[2]
    time = torch.arange(max_time, device=diagonals.device)[:, None]
    column = torch.arange(width, device=diagonals.device)[None, :]
    return diagonals.transpose(0, 1)[:, time + column, column]


def lattice_masks(
    max_time: int, width: int, logit_lengths: torch.Tensor, target_lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(D, B, U1) masks: cells inside each utterance's T_b x (U_b + 1) lattice, and its last cell."""
    device = logit_lengths.device
    diagonal = torch.arange(max_time + width - 1, device=device)[:, None, None]
    column = torch.arange(width, device=device)[None, None, :]
    time = diagonal - column
    frames, tokens = logit_lengths[None, :, None], target_lengths[None, :, None]
    inside = (time >= 0) & (time < frames) & (column <= tokens)
    last = (time == frames - 1) & (column == tokens)
    return inside, last


def transition_log_probs(
    logits: torch.Tensor, targets: torch.Tensor, blank: int, fused_log_softmax: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-cell log-probabilities of blank (B, T, U1) and of the next target (B, T, U1; the last
    column LOG_ZERO), and the log-normaliser over classes (None when the logits are already
    log-probabilities), in float32 (float64 for float64 logits)."""
    compute = torch.float64 if logits.dtype == torch.float64 else torch.float32
    batch, max_time, width, num_classes = logits.shape
    index = targets.long().clamp(0, num_classes - 1)[:, None, :, None]
    emitted = logits[:, :, : width - 1].gather(-1, index.expand(batch, max_time, width - 1, 1))
    blank_scores = logits[..., blank].to(compute)
    emit_scores = F.pad(emitted.squeeze(-1).to(compute), (0, 1), value=LOG_ZERO)
    if not fused_log_softmax:
        return blank_scores, emit_scores, None
    normaliser = torch.logsumexp(logits.to(compute), dim=-1)
    return blank_scores - normaliser, emit_scores - normaliser, normaliser


def forward_variables(
    blank_diagonals: torch.Tensor, emit_diagonals: torch.Tensor, inside: torch.Tensor
) -> torch.Tensor:
    """alpha on the skewed lattice: log P(reaching cell (t, u)), LOG_ZERO off each lattice."""
    alpha = torch.full_like(blank_diagonals, LOG_ZERO)
    alpha[0, :, 0] = 0.0
    for diagonal in range(1, len(alpha)):
        previous = alpha[diagonal - 1]
        by_blank = previous + blank_diagonals[diagonal - 1]
        by_token = F.pad((previous + emit_diagonals[diagonal - 1])[:, :-1], (1, 0), value=LOG_ZERO)
        current = torch.logaddexp(by_blank, by_token)
        alpha[diagonal] = torch.where(inside[diagonal], current, LOG_ZERO)
    return alpha


def backward_variables(
    blank_diagonals: torch.Tensor,
    emit_diagonals: torch.Tensor,
    inside: torch.Tensor,
    last: torch.Tensor,
) -> torch.Tensor:
    """beta on the skewed lattice: log P(finishing from cell (t, u)); beta[0, b, 0] = log P(y_b)."""
    beta = torch.full_like(blank_diagonals, LOG_ZERO)
    beta[-1] = torch.where(last[-1], blank_diagonals[-1], LOG_ZERO)
    for diagonal in range(len(beta) - 2, -1, -1):
        following = beta[diagonal + 1]
        by_blank = following + blank_diagonals[diagonal]
        by_token = F.pad(following[:, 1:], (0, 1), value=LOG_ZERO) + emit_diagonals[diagonal]
        current = torch.where(
            last[diagonal], blank_diagonals[diagonal], torch.logaddexp(by_blank, by_token)
        )
        beta[diagonal] = torch.where(inside[diagonal], current, LOG_ZERO)
    return beta


class _TransducerLoss(torch.autograd.Function):
    """Per-utterance -log P(targets | logits), with the gradient from alpha and beta."""

    @staticmethod
    def forward(ctx, logits, targets, logit_lengths, target_lengths, blank, clamp, fused):
        max_time, width = logits.shape[1], logits.shape[2]
        blank_lp, emit_lp, normaliser = transition_log_probs(logits, targets, blank, fused)
        lengths = logit_lengths.to(logits.device), target_lengths.to(logits.device)
        inside, last = lattice_masks(max_time, width, *lengths)
        blank_diagonals, emit_diagonals = skew(blank_lp, LOG_ZERO), skew(emit_lp, LOG_ZERO)
        beta = backward_variables(blank_diagonals, emit_diagonals, inside, last)
        log_likelihood = beta[0, :, 0].clone()
        if ctx.needs_input_grad[0]:
            alpha = forward_variables(blank_diagonals, emit_diagonals, inside)
            ctx.save_for_backward(
                logits, targets, normaliser if fused else None, blank_lp, emit_lp,
                unskew(alpha, max_time), unskew(beta, max_time), unskew(last, max_time),
                log_likelihood,
            )  # fmt: skip
            ctx.blank, ctx.clamp, ctx.fused = blank, clamp, fused
        return -log_likelihood

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_losses):
        logits, targets, normaliser, blank_lp, emit_lp, alpha, beta, last, log_likelihood = (
            ctx.saved_tensors
        )
        scale = grad_losses.to(alpha.dtype)[:, None, None]
        base = alpha - log_likelihood[:, None, None]
        # the last cell's blank ends the utterance: beta after it is log 1
        after_blank = torch.where(last, 0.0, F.pad(beta[:, 1:], (0, 0, 0, 1), value=LOG_ZERO))
        after_token = F.pad(beta[:, :, 1:], (0, 1), value=LOG_ZERO)
        blank_flow = torch.exp(base + blank_lp + after_blank) * scale
        token_flow = torch.exp(base + emit_lp + after_token) * scale
        if ctx.fused:  # through the log-softmax: softmax times the cell's occupancy
            gradient = torch.exp(logits.to(alpha.dtype) - normaliser[..., None])
            gradient *= (blank_flow + token_flow)[..., None]
        else:
            gradient = torch.zeros(logits.shape, dtype=alpha.dtype, device=logits.device)
        gradient[..., ctx.blank] -= blank_flow
        width, num_classes = logits.shape[2], logits.shape[3]
        index = targets.long().clamp(0, num_classes - 1)[:, None, :, None]
        index = index.expand(logits.shape[0], logits.shape[1], width - 1, 1)
        gradient[:, :, : width - 1].scatter_add_(-1, index, -token_flow[:, :, :-1, None])
        if ctx.clamp > 0:
            gradient.clamp_(-ctx.clamp, ctx.clamp)
        return gradient.to(logits.dtype), None, None, None, None, None, None


def rnnt_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = -1,
    clamp: float = -1,
    reduction: str = "mean",
    fused_log_softmax: bool = True,
) -> torch.Tensor:
    """The RNN-T loss, -log P(targets | logits), with torchaudio's arguments and defaults.

    ``logits`` (batch, max time, max target length + 1, classes) are the joint network's
    outputs; ``targets`` (batch, max target length) the token ids, padded; ``logit_lengths``
    and ``target_lengths`` (batch) each utterance's frames and tokens (int32, or int64).
    ``blank`` is the blank's class (negative: counted from the end, -1 the last class);
    ``clamp`` > 0 clamps the gradient wrt the logits to [-clamp, clamp]; ``reduction`` is
    ``"none"`` (per utterance), ``"mean"`` (over the batch) or ``"sum"``;
    ``fused_log_softmax=False`` takes ``logits`` as log-probabilities already normalised.
    Computed in float32 (float64 for float64 logits); half-precision logits give a float32 loss.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    blank = _check_inputs(logits, targets, logit_lengths, target_lengths, blank)
    losses = _TransducerLoss.apply(
        logits, targets, logit_lengths, target_lengths, blank, float(clamp), fused_log_softmax
    )
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses
