"""Scores of separated speech: SI-SDR and its improvement, and BSS Eval's SDR, SIR and SAR.

Called by the separation task (speechbed.tasks.separation.task) per mixture; BSS Eval comes
from fast_bss_eval (checked against mir_eval in tests/test_separation_metrics.py).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), both signals made zero-mean, in float64.

    The reference scaled to best fit the estimate is the target; the rest is the error.
    """
    estimate = np.asarray(estimate, dtype=np.float64) - np.mean(estimate)
    reference = np.asarray(reference, dtype=np.float64) - np.mean(reference)
    energy = np.dot(reference, reference)
    if energy == 0:
        raise ValueError("the reference is silent: SI-SDR is undefined")
    target = np.dot(estimate, reference) / energy * reference
    error = estimate - target
    return float(10 * np.log10(np.dot(target, target) / max(np.dot(error, error), 1e-20)))


def best_permutation(estimates: np.ndarray, references: np.ndarray) -> tuple[int, ...]:
    """The order of ``estimates`` (C, n) that maximises the mean SI-SDR against ``references``."""
    count = len(references)
    table = np.array([[si_sdr(e, r) for r in references] for e in estimates])
    return max(
        itertools.permutations(range(count)),
        key=lambda order: sum(table[order[c], c] for c in range(count)),
    )


@dataclass(frozen=True)
class MixtureScores:
    """Per source (in the references' order), dB."""

    si_sdr: np.ndarray
    mixture_si_sdr: np.ndarray
    sdr: np.ndarray | None = None
    sir: np.ndarray | None = None
    sar: np.ndarray | None = None

    @property
    def si_sdri(self) -> np.ndarray:
        """SI-SDR improvement over the unprocessed mixture."""
        return self.si_sdr - self.mixture_si_sdr


def score_mixture(
    estimates: np.ndarray, references: np.ndarray, mixture: np.ndarray, bss_eval: bool = True
) -> MixtureScores:
    """Scores of separated ``estimates`` (C, n) of ``mixture`` (n,) against ``references`` (C, n).

    The estimates are matched to the references by the permutation of best mean SI-SDR;
    with ``bss_eval`` SDR, SIR and SAR (BSS Eval v3 sources, 512-tap distortion filters)
    are computed for that same matching.
    """
    order = best_permutation(estimates, references)
    matched = np.asarray(estimates, dtype=np.float64)[list(order)]
    references = np.asarray(references, dtype=np.float64)
    scores = {
        "si_sdr": np.array([si_sdr(e, r) for e, r in zip(matched, references, strict=True)]),
        "mixture_si_sdr": np.array([si_sdr(mixture, r) for r in references]),
    }
    if bss_eval:
        import fast_bss_eval  # only evaluation needs it
        import torch  # fast_bss_eval's numpy back end fails under numpy 2; its torch one works

        sdr, sir, sar = fast_bss_eval.bss_eval_sources(
            torch.from_numpy(references), torch.from_numpy(matched), compute_permutation=False
        )
        scores.update(sdr=sdr.numpy(), sir=sir.numpy(), sar=sar.numpy())
    return MixtureScores(**scores)
