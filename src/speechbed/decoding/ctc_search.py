"""CTC decoding: greedy best path and prefix beam search over per-frame log probabilities.

Called by tasks (speechbed.tasks): greedy for the dev metric each epoch, beam search at evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int) -> list[list[int]]:
    """Best path per utterance of (N, T, V) scores: argmax per frame, merge repeats, drop blanks."""
    best = log_probs.argmax(dim=-1).cpu()
    hypotheses = []
    for path, length in zip(best, lengths.tolist(), strict=True):
        path = path[:length]
        if length == 0:
            hypotheses.append([])
            continue
        keep = torch.ones(length, dtype=torch.bool)
        keep[1:] = path[1:] != path[:-1]
        keep &= path != blank
        hypotheses.append(path[keep].tolist())
    return hypotheses


def prefix_beam_search(
    log_probs: np.ndarray, beam_width: int, blank: int
) -> tuple[list[int], float]:
    """The most probable labelling found by CTC prefix beam search over (T, V) log probabilities.

    Every prefix keeps the log probability of its paths ending in blank and in its last label;
    after each frame the ``beam_width`` most probable prefixes (summing both) survive. Pruning
    loses paths, so the surviving prefixes and the greedy labelling are rescored exactly (CTC
    forward) and the most probable wins: the answer is never less probable than greedy's.
    Returns the labelling and its exact log probability.
    """
    if beam_width < 1:
        raise ValueError(f"beam_width must be at least 1, got {beam_width}")
    log_probs = np.asarray(log_probs, dtype=np.float64)
    num_labels = log_probs.shape[1]
    prefixes: list[tuple[int, ...]] = [()]
    ends_blank = np.array([0.0])
    ends_label = np.array([-np.inf])
    for frame in log_probs:
        total = np.logaddexp(ends_blank, ends_label)
        last = np.array([prefix[-1] if prefix else -1 for prefix in prefixes])
        # Staying on the prefix: a blank, or a repeat of its last label merged into it.
        stay_blank = total + frame[blank]
        stay_label = np.full(len(prefixes), -np.inf)
        has_last = last >= 0
        stay_label[has_last] = ends_label[has_last] + frame[last[has_last]]
        # Extending by label c: after a blank always; after the same label only via a blank.
        extend = total[:, None] + frame[None, :]
        extend[has_last, last[has_last]] = ends_blank[has_last] + frame[last[has_last]]
        extend[:, blank] = -np.inf
        # An extension that is already a kept prefix merges into that prefix's label paths.
        position = {prefix: index for index, prefix in enumerate(prefixes)}
        for index, prefix in enumerate(prefixes):
            parent = position.get(prefix[:-1]) if prefix else None
            if parent is not None:
                stay_label[index] = np.logaddexp(stay_label[index], extend[parent, prefix[-1]])
                extend[parent, prefix[-1]] = -np.inf
        candidates = np.concatenate([np.logaddexp(stay_blank, stay_label), extend.ravel()])
        keep = min(beam_width, int(np.isfinite(candidates).sum()) or 1)
        chosen = np.argpartition(-candidates, keep - 1)[:keep]
        chosen = chosen[np.argsort(-candidates[chosen], kind="stable")]
        new_prefixes, new_blank, new_label = [], [], []
        for candidate in chosen:
            if candidate < len(prefixes):
                new_prefixes.append(prefixes[candidate])
                new_blank.append(stay_blank[candidate])
                new_label.append(stay_label[candidate])
            else:
                parent, label = divmod(int(candidate) - len(prefixes), num_labels)
                new_prefixes.append(prefixes[parent] + (label,))
                new_blank.append(-np.inf)
                new_label.append(extend[parent, label])
        prefixes = new_prefixes
        ends_blank, ends_label = np.array(new_blank), np.array(new_label)
    best_path = np.argmax(log_probs, axis=1)
    greedy = tuple(
        int(label)
        for position, label in enumerate(best_path)
        if label != blank and (position == 0 or label != best_path[position - 1])
    )
    finalists = list(dict.fromkeys([*prefixes, greedy]))
    scores = [labelling_log_probability(log_probs, finalist, blank) for finalist in finalists]
    best = int(np.argmax(scores))
    return list(finalists[best]), float(scores[best])


def labelling_log_probability(log_probs: np.ndarray, labels: Sequence[int], blank: int) -> float:
    """log P(labels | frames): the CTC forward algorithm over (T, V) log probabilities."""
    log_probs = np.asarray(log_probs, dtype=np.float64)
    extended = np.full(2 * len(labels) + 1, blank)
    extended[1::2] = labels
    # a state may skip the blank before it when it is a label different from two states back
    can_skip = np.zeros(len(extended), dtype=bool)
    can_skip[3::2] = extended[3::2] != extended[1:-2:2]
    forward = np.full(len(extended), -np.inf)
    if len(log_probs) == 0:
        return 0.0 if not labels else -np.inf
    forward[0] = log_probs[0, blank]
    if labels:
        forward[1] = log_probs[0, extended[1]]
    for frame in log_probs[1:]:
        previous = forward
        forward = previous.copy()
        forward[1:] = np.logaddexp(forward[1:], previous[:-1])
        forward[2:] = np.where(can_skip[2:], np.logaddexp(forward[2:], previous[:-2]), forward[2:])
        forward = forward + frame[extended]
    return float(np.logaddexp.reduce(forward[-2:]) if labels else forward[-1])


def beam_decode(
    log_probs: torch.Tensor, lengths: torch.Tensor, beam_width: int, blank: int
) -> list[list[int]]:
    """Prefix beam search for each utterance of a (N, T, V) batch of log probabilities."""
    scores = log_probs.detach().float().cpu().numpy()
    return [
        prefix_beam_search(scores[index, :length], beam_width, blank)[0]
        for index, length in enumerate(lengths.tolist())
    ]
