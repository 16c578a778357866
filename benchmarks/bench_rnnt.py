"""The RNN-T loss (speechbed.losses.rnnt): time and peak memory of forward + backward.

Run by ``make bench`` (benchmarks/run_all.py). The baseline, measured in the same run, is the
straightforward implementation: the forward recursion cell by cell (a Python loop over the
T x (U + 1) cells, vectorised over the batch) with autograd for the gradient. Also measured:
the anti-diagonal recursion with autograd through it (the alternative to the package's
explicit alpha/beta gradient), and NVIDIA's numba loss (warprnnt-numba) when installed.
Each implementation runs in its own process, so its peak resident memory is its own
(warprnnt-numba, which takes about half a minute on this CPU, once).
"""

from __future__ import annotations

import multiprocessing
import resource
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from speechbed.losses import rnnt_loss
from speechbed.losses.rnnt import LOG_ZERO, lattice_masks, skew, transition_log_probs

BATCH, MAX_TIME, MAX_TOKENS, NUM_CLASSES = 8, 200, 50, 128
REPEATS = 3


def make_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits of (8, 200, 51, 128); lengths T in [150, 200], U in [35, 50], the longest present."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(BATCH, MAX_TIME, MAX_TOKENS + 1, NUM_CLASSES, generator=generator)
    targets = torch.randint(0, NUM_CLASSES - 1, (BATCH, MAX_TOKENS), generator=generator)
    frames = torch.randint(150, MAX_TIME + 1, (BATCH,), generator=generator)
    tokens = torch.randint(35, MAX_TOKENS + 1, (BATCH,), generator=generator)
    frames[0], tokens[0] = MAX_TIME, MAX_TOKENS
    return logits, targets.int(), frames.int(), tokens.int()


def per_cell_loss(logits, targets, logit_lengths, target_lengths) -> torch.Tensor:
    """Mean loss by the per-cell forward recursion (blank the last class), autograd gradient."""
    blank_lp, emit_lp, _ = transition_log_probs(logits, targets, NUM_CLASSES - 1)
    batch, max_time, width = blank_lp.shape
    alpha: list[list[torch.Tensor]] = [[None] * width for _ in range(max_time)]
    for t in range(max_time):
        for u in range(width):
            if t == 0 and u == 0:
                alpha[t][u] = blank_lp.new_zeros(batch)
            elif t == 0:
                alpha[t][u] = alpha[t][u - 1] + emit_lp[:, t, u - 1]
            elif u == 0:
                alpha[t][u] = alpha[t - 1][u] + blank_lp[:, t - 1, u]
            else:
                alpha[t][u] = torch.logaddexp(
                    alpha[t - 1][u] + blank_lp[:, t - 1, u], alpha[t][u - 1] + emit_lp[:, t, u - 1]
                )
    rows = range(batch)
    frames, tokens = (logit_lengths - 1).tolist(), target_lengths.tolist()
    final = torch.stack(
        [alpha[frames[b]][tokens[b]][b] + blank_lp[b, frames[b], tokens[b]] for b in rows]
    )
    return -final.mean()


def diagonal_autograd_loss(logits, targets, logit_lengths, target_lengths) -> torch.Tensor:
    """Mean loss by the anti-diagonal forward recursion, autograd through every step."""
    blank_lp, emit_lp, _ = transition_log_probs(logits, targets, NUM_CLASSES - 1)
    batch, max_time, width = blank_lp.shape
    blank_diagonals, emit_diagonals = skew(blank_lp, LOG_ZERO), skew(emit_lp, LOG_ZERO)
    inside, _ = lattice_masks(max_time, width, logit_lengths, target_lengths)
    alpha = [F.pad(blank_lp.new_zeros(batch, 1), (0, width - 1), value=LOG_ZERO)]
    for diagonal in range(1, len(blank_diagonals)):
        by_blank = alpha[-1] + blank_diagonals[diagonal - 1]
        by_token = F.pad((alpha[-1] + emit_diagonals[diagonal - 1])[:, :-1], (1, 0), value=LOG_ZERO)
        alpha.append(torch.where(inside[diagonal], torch.logaddexp(by_blank, by_token), LOG_ZERO))
    rows = torch.arange(batch)
    last_frame, tokens = logit_lengths.long() - 1, target_lengths.long()
    final = (
        torch.stack(alpha)[last_frame + tokens, rows, tokens] + blank_lp[rows, last_frame, tokens]
    )
    return -final.mean()


def numba_loss(logits, targets, logit_lengths, target_lengths) -> torch.Tensor:
    from warprnnt_numba.rnnt_loss.rnnt_pytorch import rnnt_loss as warprnnt

    return warprnnt(logits, targets, logit_lengths, target_lengths, NUM_CLASSES - 1, "mean")


IMPLEMENTATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "per-cell loop, autograd": per_cell_loss,
    "anti-diagonal, autograd": diagonal_autograd_loss,
    "anti-diagonal, alpha/beta": rnnt_loss,
    "warprnnt-numba": numba_loss,
}


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def measure(name: str, results) -> None:
    """Median seconds of fwd + bwd, peak extra memory (over the inputs), and the loss value."""
    torch.set_num_threads(1)
    logits, *rest = make_batch()
    loss_of = IMPLEMENTATIONS[name]
    tiny = (torch.tensor([4], dtype=torch.int32), torch.tensor([2], dtype=torch.int32))
    try:  # imports, and numba's compilation, before the clock starts
        loss_of(logits[:1, :4, :3].clone().requires_grad_(True), rest[0][:1, :2], *tiny).backward()
    except ImportError:
        results.put((name, None))
        return
    before = resident_bytes()
    times, value = [], 0.0
    for _ in range(1 if name == "warprnnt-numba" else REPEATS):  # it takes half a minute
        leaf = logits.clone().requires_grad_(True)
        started = time.perf_counter()
        loss = loss_of(leaf, *rest)
        loss.backward()
        times.append(time.perf_counter() - started)
        value = float(loss.detach())
        del leaf, loss
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    results.put((name, (sorted(times)[len(times) // 2], max(peak - before, 0), value)))


def main() -> None:
    context = multiprocessing.get_context("spawn")
    rows = {}
    for name in IMPLEMENTATIONS:
        results = context.Queue()
        process = context.Process(target=measure, args=(name, results))
        process.start()
        rows[name] = results.get()[1]
        process.join()
    logits_mib = BATCH * MAX_TIME * (MAX_TOKENS + 1) * NUM_CLASSES * 4 / 2**20
    print(
        f"CPU, torch {torch.__version__}, 1 thread; logits {BATCH} x {MAX_TIME} x "
        f"{MAX_TOKENS + 1} x {NUM_CLASSES} float32 ({logits_mib:.0f} MiB), padded lengths; "
        f"median of {REPEATS} fwd+bwd; memory: peak resident over the inputs"
    )
    baseline = rows["per-cell loop, autograd"]
    print(
        f"{'implementation':<28}{'s fwd+bwd':>11}{'peak MiB':>10}{'loss':>10}{'time / per-cell':>17}"
    )
    for name, row in rows.items():
        if row is None:
            print(f"{name:<28}{'(not installed)':>31}")
            continue
        seconds, peak, value = row
        print(
            f"{name:<28}{seconds:>11.3f}{peak / 2**20:>10.0f}{value:>10.3f}"
            f"{seconds / baseline[0]:>17.3f}"
        )


if __name__ == "__main__":
    main()
