"""Phone error rate: Levenshtein alignment counts (substitutions, deletions, insertions) and totals.

Called by tasks (speechbed.tasks) for their error rates (PER on 39 phones with its counts; WER
on whitespace-separated words through ``word_error_counts``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorCounts:
    """Edit operations of a minimal alignment, and the reference length they are scored against."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_length: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def error_rate(self) -> float:
        """Errors per reference token (0 for an empty reference with no insertions)."""
        if self.reference_length == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.reference_length

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.reference_length + other.reference_length,
        )


def edit_counts(reference: Sequence, hypothesis: Sequence) -> ErrorCounts:
    """Counts of one minimal-cost alignment (each operation costs 1).

    Among alignments of equal cost, the backtrace prefers a match or substitution, then a
    deletion, then an insertion, so the split is deterministic.
    """
    rows, columns = len(reference) + 1, len(hypothesis) + 1
    cost = [[0] * columns for _ in range(rows)]
    for i in range(rows):
        cost[i][0] = i
    for j in range(columns):
        cost[0][j] = j
    for i in range(1, rows):
        for j in range(1, columns):
            mismatch = reference[i - 1] != hypothesis[j - 1]
            cost[i][j] = min(cost[i - 1][j - 1] + mismatch, cost[i - 1][j] + 1, cost[i][j - 1] + 1)
    substitutions = deletions = insertions = 0
    i, j = rows - 1, columns - 1
    while i > 0 or j > 0:
        if i > 0 and j > 0:
            mismatch = reference[i - 1] != hypothesis[j - 1]
            if cost[i][j] == cost[i - 1][j - 1] + mismatch:
                substitutions += mismatch
                i, j = i - 1, j - 1
                continue
        if i > 0 and cost[i][j] == cost[i - 1][j] + 1:
            deletions += 1
            i -= 1
        else:
            insertions += 1
            j -= 1
    return ErrorCounts(substitutions, deletions, insertions, len(reference))


def total_error_counts(pairs: Iterable[tuple[Sequence, Sequence]]) -> ErrorCounts:
    """Summed counts over (reference, hypothesis) pairs: the corpus-level error rate's parts."""
    total = ErrorCounts()
    for reference, hypothesis in pairs:
        total = total + edit_counts(reference, hypothesis)
    return total


def word_error_counts(pairs: Iterable[tuple[str, str]]) -> ErrorCounts:
    """WER counts over (reference, hypothesis) texts, each split into words at whitespace."""
    return total_error_counts(
        (reference.split(), hypothesis.split()) for reference, hypothesis in pairs
    )
