"""Descriptive statistics of run results per condition and partition.

Called by ``speechbed.reports.results`` (analysis, notebook) and the Google Sheet summary.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

STATISTIC_COLUMNS = ("n", "mean", "sd", "median", "min", "max")


def describe_by_condition(
    runs: pd.DataFrame,
    value_columns: Sequence[str] = ("dev_per", "test_per"),
    condition_column: str = "condition",
) -> pd.DataFrame:
    """One row per (condition, partition): n, mean, sample sd (n - 1), median, min, max.

    ``partition`` is the value column's name without its ``_per`` suffix. Missing values
    (an unfinished run) are left out of n; a condition with one value has sd NaN.
    """
    rows = []
    for condition, group in runs.groupby(condition_column, sort=True):
        for column in value_columns:
            if column not in group:
                continue
            values = pd.to_numeric(group[column], errors="coerce").dropna().astype("float64")
            rows.append(
                {
                    condition_column: condition,
                    "partition": column.removesuffix("_per"),
                    "n": int(values.size),
                    "mean": values.mean() if values.size else float("nan"),
                    "sd": values.std(ddof=1) if values.size > 1 else float("nan"),
                    "median": values.median() if values.size else float("nan"),
                    "min": values.min() if values.size else float("nan"),
                    "max": values.max() if values.size else float("nan"),
                }
            )
    return pd.DataFrame(rows, columns=[condition_column, "partition", *STATISTIC_COLUMNS])


def statistics_markdown(statistics: pd.DataFrame, digits: int = 2) -> str:
    """The statistics table as GitHub Markdown (no extra dependency)."""
    columns = list(statistics.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in statistics.iterrows():
        cells = []
        for column in columns:
            value = row[column]
            if isinstance(value, float):
                cells.append("" if pd.isna(value) else f"{value:.{digits}f}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
