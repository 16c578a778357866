"""Statistics: the bootstrap interval, the pairwise tests against scipy, and which pairs are tested."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from speechbed.reports import sheets
from speechbed.reports.statistics import (
    COMPARISON_COLUMNS,
    COMPARISONS_TITLE,
    bootstrap_mean_interval,
    compare_conditions,
    compare_samples,
    condition_factors,
    describe_by_condition,
    differing_pairs,
    report_markdown,
)

# hand-made PER (%) of two conditions, with a tie across them (21.0)
LINEAR = [22.5, 21.0, 24.0, 23.25, 25.5]
MELLIN = [19.0, 21.0, 18.5, 20.25]


# --------------------------------------------------------------------------- bootstrap


def _brute_force_interval(values, resamples, seed, confidence=0.95):
    """The same percentile bootstrap written out: one resample at a time, fsum means, and the
    quantiles by linear interpolation between order statistics."""
    draws = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    means = sorted(math.fsum(float(values[i]) for i in row) / len(values) for row in draws)

    def quantile(q):
        position = q * (len(means) - 1)
        below = math.floor(position)
        above = min(below + 1, len(means) - 1)
        return means[below] + (position - below) * (means[above] - means[below])

    tail = (1 - confidence) / 2
    return quantile(tail), quantile(1 - tail)


@pytest.mark.parametrize("seed", [0, 11])
def test_bootstrap_interval_equals_a_brute_force_float64_reimplementation(seed):
    low, high = bootstrap_mean_interval(LINEAR, resamples=2000, seed=seed)
    expected_low, expected_high = _brute_force_interval(LINEAR, 2000, seed)
    assert low == pytest.approx(expected_low, abs=1e-12)
    assert high == pytest.approx(expected_high, abs=1e-12)
    assert min(LINEAR) <= low < np.mean(LINEAR) < high <= max(LINEAR)


def test_bootstrap_interval_is_deterministic_and_undefined_below_two_values():
    assert bootstrap_mean_interval(MELLIN) == bootstrap_mean_interval(list(MELLIN))
    spread = np.random.default_rng(3).normal(20.0, 3.0, size=15)
    assert bootstrap_mean_interval(spread, seed=1) != bootstrap_mean_interval(spread, seed=2)
    assert all(math.isnan(v) for v in bootstrap_mean_interval([20.0]))
    assert all(math.isnan(v) for v in bootstrap_mean_interval([]))
    assert bootstrap_mean_interval([3.0, 3.0, 3.0]) == (3.0, 3.0)


def test_bootstrap_interval_covers_the_mean_about_95_percent_of_the_time():
    """Known coverage: normal samples of 20; a percentile bootstrap covers ~93-95%."""
    generator = np.random.default_rng(5)
    trials = 400
    covered = 0
    for trial in range(trials):
        sample = generator.normal(20.0, 3.0, size=20)
        low, high = bootstrap_mean_interval(sample, resamples=1000, seed=trial)
        covered += low <= 20.0 <= high
    assert 0.88 <= covered / trials <= 0.985


def test_statistics_table_carries_the_interval_of_each_condition():
    runs = pd.DataFrame(
        {"condition": ["a"] * 5 + ["b"] * 4, "dev_per": LINEAR + MELLIN, "test_per": 9 * [1.0]}
    )
    table = describe_by_condition(runs).set_index(["condition", "partition"])
    assert (table.loc[("a", "dev"), "ci95_low"], table.loc[("a", "dev"), "ci95_high"]) == (
        bootstrap_mean_interval(LINEAR)
    )
    assert table.loc[("b", "test"), "ci95_low"] == table.loc[("b", "test"), "ci95_high"] == 1.0
    # the same runs in another order give the same table
    shuffled = describe_by_condition(runs.iloc[::-1].reset_index(drop=True))
    pd.testing.assert_frame_equal(shuffled, describe_by_condition(runs))


# --------------------------------------------------------------------------- tests of a pair


def test_pairwise_tests_equal_scipy_and_hand_worked_values():
    result = compare_samples(np.array(LINEAR), np.array(MELLIN))
    a, b = np.array(LINEAR), np.array(MELLIN)
    welch = scipy_stats.ttest_ind(a, b, equal_var=False)
    assert result["welch_t"] == pytest.approx(welch.statistic, rel=1e-12)
    assert result["welch_p"] == pytest.approx(welch.pvalue, rel=1e-12)
    # Welch by hand: t = (ma - mb) / sqrt(va/na + vb/nb), Welch-Satterthwaite df
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    assert result["welch_t"] == pytest.approx((a.mean() - b.mean()) / math.sqrt(va + vb))
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    assert result["welch_df"] == pytest.approx(df, rel=1e-12)
    assert result["welch_p"] == pytest.approx(2 * scipy_stats.t.sf(abs(result["welch_t"]), df))
    # Cohen's d with the pooled sd
    pooled = ((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2)
    assert result["cohens_d"] == pytest.approx((a.mean() - b.mean()) / math.sqrt(pooled))
    # Mann-Whitney: U of a counts the pairs where a is higher, ties a half
    u = sum((x > y) + 0.5 * (x == y) for x in LINEAR for y in MELLIN)
    assert u == 19.5
    mann_whitney = scipy_stats.mannwhitneyu(a, b, alternative="two-sided")
    assert result["mann_whitney_u"] == u == mann_whitney.statistic
    assert result["mann_whitney_p"] == pytest.approx(mann_whitney.pvalue, rel=1e-12)
    assert result["rank_biserial"] == pytest.approx(2 * 19.5 / 20 - 1)  # 0.95: a higher
    assert result["cohens_d"] > 0 and result["welch_t"] > 0


def test_pairwise_tests_with_too_few_values_or_no_spread_are_nan_not_errors():
    one = compare_samples(np.array([20.0]), np.array(MELLIN))
    assert math.isnan(one["welch_t"]) and math.isnan(one["cohens_d"])
    assert one["mann_whitney_u"] == scipy_stats.mannwhitneyu([20.0], MELLIN).statistic
    flat = compare_samples(np.array([20.0, 20.0]), np.array([20.0, 20.0]))
    assert math.isnan(flat["welch_p"]) and math.isnan(flat["cohens_d"])
    empty = compare_samples(np.array([]), np.array(MELLIN))
    assert all(math.isnan(value) for value in empty.values())


# --------------------------------------------------------------------------- which pairs


def test_conditions_of_a_two_by_two_design_are_compared_along_each_setting_only():
    settings = {
        f"{feature}, {model}": {
            "feature": feature,
            "data.cache_directory": f"/cache/{feature}",  # bundled with the feature
            "model.window_size": 4 if feature == "fbank" else 3,  # bundled too
            "convolutional_mellin": model == "mcorr",
            "seed": 1,
        }
        for feature in ("fbank", "sigbank")
        for model in ("lcorr", "mcorr")
    }
    factors = condition_factors(settings)
    assert set(factors["fbank, lcorr"]) == {"experiment", "feature", "convolutional_mellin"}
    assert differing_pairs(factors) == [
        ("convolutional_mellin", "fbank, lcorr", "fbank, mcorr"),
        ("feature", "fbank, lcorr", "sigbank, lcorr"),
        ("feature", "fbank, mcorr", "sigbank, mcorr"),
        ("convolutional_mellin", "sigbank, lcorr", "sigbank, mcorr"),
    ]


def test_experiments_analysed_together_are_compared_on_the_experiment():
    """lcorr.yml and mcorr.yml: the same feature bundles with each arm's own tuned settings."""
    settings = {}
    for experiment, sizes in (("lcorr", (2, 3)), ("mcorr", (4, 5))):
        for feature, size in zip(("fbank", "sigbank"), sizes, strict=True):
            settings[f"{experiment}-{feature}"] = {
                "experiment": experiment,
                "feature": feature,
                "model.window_size": size,
                "training.noise_eps": 0.0,  # the same in both bundles
                "seed": 3,
            }
    assert differing_pairs(condition_factors(settings)) == [
        ("feature", "lcorr-fbank", "lcorr-sigbank"),
        ("experiment", "lcorr-fbank", "mcorr-fbank"),
        ("experiment", "lcorr-sigbank", "mcorr-sigbank"),
        ("feature", "mcorr-fbank", "mcorr-sigbank"),
    ]


def test_compare_conditions_table():
    runs = pd.DataFrame(
        {
            "condition": ["lcorr"] * 5 + ["mcorr"] * 4 + ["other"],
            "dev_per": LINEAR + MELLIN + [30.0],
            "test_per": [v + 1 for v in LINEAR + MELLIN] + [31.0],
        }
    )
    settings = {
        "lcorr": {"model.convolutional_mellin": False, "seed": 1},
        "mcorr": {"model.convolutional_mellin": True, "seed": 1},
        "other": {"model.convolutional_mellin": True, "model.recurrent_size": 9},
        "not run": {"model.convolutional_mellin": None},
    }
    table = compare_conditions(runs, settings)
    assert list(table.columns) == list(COMPARISON_COLUMNS)
    # lcorr and other differ in two settings: not compared
    pairs = table[["setting", "condition_a", "condition_b"]].drop_duplicates().values.tolist()
    assert pairs == [
        ["model.convolutional_mellin", "lcorr", "mcorr"],
        ["model.recurrent_size", "mcorr", "other"],
    ]
    dev = table[table["condition_b"] == "mcorr"].set_index("partition").loc["dev"]
    assert dev["setting"] == "model.convolutional_mellin"
    assert (dev["n_a"], dev["n_b"]) == (5, 4)
    assert dev["difference"] == pytest.approx(np.mean(LINEAR) - np.mean(MELLIN))
    assert dev["welch_p"] == pytest.approx(
        scipy_stats.ttest_ind(LINEAR, MELLIN, equal_var=False).pvalue
    )
    text = report_markdown(describe_by_condition(runs), table)
    assert COMPARISONS_TITLE in text
    assert f"| {dev['welch_p']:.3g} |" in text  # p-values with significant digits
    assert COMPARISONS_TITLE not in report_markdown(describe_by_condition(runs), table.iloc[:0])


def test_sheet_summary_holds_the_pairwise_tests():
    runs = pd.DataFrame(
        {
            "condition": ["a"] * 5 + ["b"] * 4,
            "dev_per": LINEAR + MELLIN,
            "test_per": LINEAR + MELLIN,
        }
    )
    comparisons = compare_conditions(runs, {"a": {"x": 1}, "b": {"x": 2}})
    grid = sheets.sheet_grid([], ["run_id"], [["r1"]], describe_by_condition(runs), comparisons)
    titles = [row[0] for row in grid if len(row) == 1 and str(row[0]).startswith(("summ", "pair"))]
    assert titles == [sheets.SUMMARY_TITLE, sheets.COMPARISONS_TITLE]
    start = grid.index([sheets.COMPARISONS_TITLE])
    assert grid[start + 1] == list(COMPARISON_COLUMNS)
    assert grid[start + 2][:4] == ["x", "a", "b", "dev"]
    # the run rows are still read back as before: the upsert stops at the first blank row
    header, merged = sheets.merge_rows([[str(c) for c in row] for row in grid], ["run_id"], [])
    assert merged == [["r1"]]
