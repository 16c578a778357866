"""Statistics of run results: per condition and partition, and tests between pairs of conditions.

Called by ``speechbed.reports.results`` (analysis, notebook), the analysis summary and the
Google Sheet summary. The values are the experiment's score (``speechbed.reports.score``) in its
columns ``dev_<key>`` and ``test_<key>``.

Per condition and partition: n, mean, sample sd, median, min, max and a 95% percentile-bootstrap
interval of the mean (seeded, so the same runs always give the same interval). Between two
conditions that differ in exactly one setting (its factor): two-sided Welch's t test with
Cohen's d, and two-sided Mann-Whitney U with the rank-biserial correlation; no correction for
multiple comparisons is applied.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from speechbed.reports.score import PER, Score

STATISTIC_COLUMNS = ("n", "mean", "sd", "median", "min", "max", "ci95_low", "ci95_high")
COMPARISON_COLUMNS = (
    "setting", "condition_a", "condition_b", "partition", "n_a", "n_b", "mean_a", "mean_b",
    "difference", "welch_t", "welch_df", "welch_p", "cohens_d", "mann_whitney_u",
    "mann_whitney_p", "rank_biserial",
)  # fmt: skip
#: Resamples of the bootstrap interval and its seed.
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
#: The pseudo-setting that tells the experiments apart when several are analysed together.
EXPERIMENT_SETTING = "experiment"
_NAN = float("nan")


def bootstrap_mean_interval(
    values: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean: ``resamples`` draws of n values with
    replacement (``numpy.random.default_rng(seed).integers(0, n, (resamples, n))``), the
    (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of their means (linear
    interpolation), in float64. NaN, NaN below two values (no spread to resample)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size < 2:
        return _NAN, _NAN
    picks = np.random.default_rng(seed).integers(0, data.size, size=(resamples, data.size))
    means = data[picks].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def _values(group: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(group[column], errors="coerce").dropna().to_numpy(dtype=np.float64)


def _score_columns(value_columns: Sequence[str] | None, score: Score) -> Sequence[str]:
    return (score.column("dev"), score.column("test")) if value_columns is None else value_columns


def describe_by_condition(
    runs: pd.DataFrame,
    value_columns: Sequence[str] | None = None,
    condition_column: str = "condition",
    seed: int = BOOTSTRAP_SEED,
    score: Score = PER,
) -> pd.DataFrame:
    """One row per (condition, partition): n, mean, sample sd (n - 1), median, min, max and the
    95% bootstrap interval of the mean (``ci95_low``, ``ci95_high``; see
    ``bootstrap_mean_interval``: each group resampled with the same ``seed``).

    ``value_columns`` default to the ``score``'s dev and test columns (``dev_per``,
    ``test_per``); ``partition`` is a column's name without the score's suffix. Missing values
    (an unfinished run) are left out of n; a condition with one value has sd and interval NaN.
    """
    rows = []
    for condition, group in runs.groupby(condition_column, sort=True):
        for column in _score_columns(value_columns, score):
            if column not in group:
                continue
            values = _values(group, column)
            some = values.size > 0
            low, high = bootstrap_mean_interval(values, seed=seed)
            rows.append(
                {
                    condition_column: condition,
                    "partition": score.partition_of(column),
                    "n": int(values.size),
                    "mean": float(values.mean()) if some else _NAN,
                    "sd": float(values.std(ddof=1)) if values.size > 1 else _NAN,
                    "median": float(np.median(values)) if some else _NAN,
                    "min": float(values.min()) if some else _NAN,
                    "max": float(values.max()) if some else _NAN,
                    "ci95_low": low,
                    "ci95_high": high,
                }
            )
    return pd.DataFrame(rows, columns=[condition_column, "partition", *STATISTIC_COLUMNS])


def _is_seed(key: str) -> bool:
    return key.split(".")[-1] == "seed"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def condition_factors(settings: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """Each condition's factors: the settings without seeds that vary between the conditions
    of its experiment, settings that vary together (a sweep bundle) counted once, under the
    first one's name; a setting the same in all of them belongs to the experiment, as its base
    settings do.

    ``settings`` maps a condition to its runs' settings (``runs.json``), with the key
    ``experiment`` when several experiments are analysed together (then it is a factor too).
    Values are compared as canonical JSON text.
    """
    by_experiment: dict[str, list[str]] = {}
    for condition, values in settings.items():
        by_experiment.setdefault(_canonical(values.get(EXPERIMENT_SETTING)), []).append(condition)
    factors: dict[str, dict[str, str]] = {}
    for conditions in by_experiment.values():
        conditions = sorted(conditions)
        keys: list[str] = []
        for condition in conditions:
            keys += [k for k in settings[condition] if not _is_seed(k) and k not in keys]
        kept, seen_patterns = [EXPERIMENT_SETTING], set()
        for key in keys:
            column = [_canonical(settings[c].get(key, "<unset>")) for c in conditions]
            pattern = tuple(column.index(value) for value in column)  # which conditions agree
            if len(set(column)) > 1 and pattern not in seen_patterns:
                seen_patterns.add(pattern)
                kept.append(key)
        for condition in conditions:
            values = settings[condition]
            factors[condition] = {
                k: _canonical(values.get(k, "<unset>")) for k in dict.fromkeys(kept)
            }
    return factors


def differing_pairs(factors: Mapping[str, Mapping[str, str]]) -> list[tuple[str, str, str]]:
    """(setting, condition a, condition b) for each pair of conditions (a < b) whose factors
    differ in exactly one setting."""
    pairs = []
    for a, b in itertools.combinations(sorted(factors), 2):
        keys = list(dict.fromkeys([*factors[a], *factors[b]]))
        differing = [k for k in keys if factors[a].get(k) != factors[b].get(k)]
        if len(differing) == 1:
            pairs.append((differing[0], a, b))
    return pairs


def compare_samples(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Two-sided Welch's t test (t, df, p) with Cohen's d (pooled sd), and two-sided
    Mann-Whitney U (U of ``a``, p; scipy's method "auto": exact for small samples without
    ties) with the rank-biserial correlation 2U / (n_a n_b) - 1. Positive d and r: ``a`` is
    higher. NaN where a test needs more values (t: two per sample and some spread)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    result = {
        "welch_t": _NAN, "welch_df": _NAN, "welch_p": _NAN, "cohens_d": _NAN,
        "mann_whitney_u": _NAN, "mann_whitney_p": _NAN, "rank_biserial": _NAN,
    }  # fmt: skip
    if a.size >= 2 and b.size >= 2:
        pooled = ((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (
            a.size + b.size - 2
        )
        if a.var(ddof=1) + b.var(ddof=1) > 0:
            welch = scipy_stats.ttest_ind(a, b, equal_var=False)
            result.update(welch_t=welch.statistic, welch_df=welch.df, welch_p=welch.pvalue)
        if pooled > 0:
            result["cohens_d"] = (a.mean() - b.mean()) / np.sqrt(pooled)
    if a.size and b.size:
        mann_whitney = scipy_stats.mannwhitneyu(a, b, alternative="two-sided")
        result.update(
            mann_whitney_u=mann_whitney.statistic,
            mann_whitney_p=mann_whitney.pvalue,
            rank_biserial=2.0 * mann_whitney.statistic / (a.size * b.size) - 1.0,
        )
    return {key: float(value) for key, value in result.items()}


def compare_conditions(
    runs: pd.DataFrame,
    settings: Mapping[str, Mapping[str, Any]],
    value_columns: Sequence[str] | None = None,
    condition_column: str = "condition",
    score: Score = PER,
) -> pd.DataFrame:
    """For each pair of conditions that differ in one setting (``condition_factors``) and each
    partition: the samples' sizes and means, ``difference`` (mean a - mean b, whichever way
    the score is better: ``comparisons_title`` says) and the tests of ``compare_samples``.
    ``settings`` maps each condition to its runs' settings; ``value_columns`` default to the
    ``score``'s dev and test columns."""
    present = set(runs[condition_column]) if condition_column in runs else set()
    factors = condition_factors({c: s for c, s in settings.items() if c in present})
    rows = []
    for setting, first, second in differing_pairs(factors):
        for column in _score_columns(value_columns, score):
            if column not in runs:
                continue
            a = _values(runs[runs[condition_column] == first], column)
            b = _values(runs[runs[condition_column] == second], column)
            means = [float(x.mean()) if x.size else _NAN for x in (a, b)]
            rows.append(
                {
                    "setting": setting,
                    "condition_a": first,
                    "condition_b": second,
                    "partition": score.partition_of(column),
                    "n_a": int(a.size),
                    "n_b": int(b.size),
                    "mean_a": means[0],
                    "mean_b": means[1],
                    "difference": means[0] - means[1],
                    **compare_samples(a, b),
                }
            )
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def _format(column: str, value: Any, digits: int) -> str:
    if isinstance(value, float | np.floating):
        if pd.isna(value):
            return ""
        # p-values span orders of magnitude: significant digits, not fixed decimals
        return f"{value:.3g}" if column.endswith("_p") else f"{value:.{digits}f}"
    return str(value)


def statistics_markdown(statistics: pd.DataFrame, digits: int = 2) -> str:
    """A statistics or comparisons table as GitHub Markdown (no extra dependency)."""
    columns = list(statistics.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in statistics.iterrows():
        cells = [_format(column, row[column], digits) for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def comparisons_title(score: Score = PER) -> str:
    """The pairwise tests' heading: what the difference's sign means for this score."""
    sign = "negative" if score.lower_is_better else "positive"
    return (
        f"Pairs of conditions that differ in one setting: difference = mean a - mean b of "
        f"{score.label}, {score.better} is better (a is better when it is {sign}); two-sided "
        "Welch's t (Cohen's d) and Mann-Whitney U (rank-biserial r); d, r > 0: a is higher; "
        "no correction for multiple comparisons."
    )


COMPARISONS_TITLE = comparisons_title(PER)


def report_markdown(
    statistics: pd.DataFrame, comparisons: pd.DataFrame | None = None, score: Score = PER
) -> str:
    """``statistics.md``: the per-condition table, then the pairwise tests when there are any."""
    text = statistics_markdown(statistics)
    if comparisons is not None and len(comparisons):
        text += f"\n{comparisons_title(score)}\n\n{statistics_markdown(comparisons)}"
    return text
