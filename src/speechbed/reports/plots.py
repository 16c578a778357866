"""Figures of an experiment: its score per condition (points over boxes), learning curves per run.

Called by ``scripts/analyze.py`` (PNG files) and the analysis notebook (inline figures).

Every panel has a legend; a condition has one colour in every panel and figure given the same
``conditions``; score axes take in 0, so small differences look small; epochs are whole numbers.
The score (``speechbed.reports.score``) names the axes: "PER (%)", "accuracy (%)", "SI-SDRi (dB)".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from speechbed.outputs import atomic_output
from speechbed.reports.score import PER, Score

PER_LABEL = PER.label
#: Scores whose per-epoch dev value comes from greedy decoding (the evaluation's may use a beam).
_GREEDY_DEV_SCORES = ("per", "wer")
#: The training loss of the tasks scored by these keys (the loss panel's label).
_LOSS_NAMES = {"per": "CTC", "wer": "RNN-T", "accuracy": "cross-entropy"}


def dev_curve_title(score: Score = PER) -> str:
    """ "dev PER (%) per epoch, greedy decoding"."""
    greedy = ", greedy decoding" if score.key in _GREEDY_DEV_SCORES else ""
    return f"dev {score.label} per epoch{greedy}"


DEV_CURVE_TITLE = dev_curve_title(PER)


def by_condition_file(score: Score = PER) -> str:
    """The analysis folder's figure of the score per condition: ``per_by_condition.png``."""
    return f"{score.key}_by_condition.png"


def condition_colours(conditions: Iterable[str]) -> dict[str, tuple[float, ...]]:
    """One colour per condition (tab10, then tab20 past ten), in sorted order."""
    ordered = sorted(set(conditions))
    palette = plt.get_cmap("tab10" if len(ordered) <= 10 else "tab20")
    return {condition: palette(index % palette.N) for index, condition in enumerate(ordered)}


def _score_axis(axis: Axes, values: Iterable[float], score: Score) -> None:
    """From 0 (or a little below the lowest value, when some are negative: a dB score) to a
    little above the highest value: differences are seen at their true size."""
    finite = [float(v) for v in values if np.isfinite(v)]
    lowest, highest = min(finite, default=0.0), max(finite, default=0.0)
    low = lowest - 0.1 * (highest - lowest) if lowest < 0 else 0.0
    axis.set_ylim(low, max(low + 1.0, 1.1 * highest, 0.0))
    axis.set_ylabel(score.label)


def score_by_condition(
    runs: pd.DataFrame,
    partitions: tuple[str, ...] = ("dev", "test"),
    conditions: Sequence[str] | None = None,
    score: Score = PER,
) -> Figure:
    """One panel per partition: each run's score as a point (jittered sideways) over a light
    box per condition, each condition in its colour, with a legend (and n) on every panel."""
    figure, axes = plt.subplots(1, len(partitions), figsize=(5 * len(partitions), 4), squeeze=False)
    present = sorted(runs["condition"].unique()) if len(runs) else []
    colours = condition_colours(conditions or present)
    jitter = np.random.default_rng(0)  # fixed, so the figure is reproducible
    for axis, partition in zip(axes[0], partitions, strict=True):
        column = score.column(partition)
        values = [
            pd.to_numeric(runs.loc[runs["condition"] == c, column], errors="coerce")
            .dropna()
            .to_numpy(dtype=float)
            for c in present
        ]
        handles = []
        for position, (condition, points) in enumerate(zip(present, values, strict=True), 1):
            colour = colours[condition]
            if points.size:
                axis.boxplot(
                    [points], positions=[position], widths=0.5, showfliers=False,
                    patch_artist=True, zorder=1,
                    boxprops={"facecolor": (*colour[:3], 0.2), "edgecolor": colour},
                    medianprops={"color": colour}, whiskerprops={"color": colour},
                    capprops={"color": colour},
                )  # fmt: skip
                offsets = jitter.uniform(-0.15, 0.15, size=points.size)
                axis.scatter(
                    position + offsets, points, s=28, color=colour, edgecolors="black",
                    linewidths=0.5, zorder=3,
                )  # fmt: skip
            handles.append(
                Line2D([], [], marker="o", linestyle="", color=colour, markeredgecolor="black",
                       label=f"{condition} (n={points.size})")
            )  # fmt: skip
        if present:
            axis.set_xticks(
                range(1, len(present) + 1), present, rotation=20, ha="right", fontsize=8
            )
            axis.set_xlim(0.4, len(present) + 0.6)
            axis.legend(handles=handles, fontsize=7, loc="lower right")
        _score_axis(axis, np.concatenate(values) if values else [], score)
        axis.set_title(f"{partition}: {score.label} per condition, one point per run")
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


#: The PER experiments' name of ``score_by_condition`` (and of their figure's file).
per_by_condition = score_by_condition


def learning_curves(
    histories: pd.DataFrame, conditions: Sequence[str] | None = None, score: Score = PER
) -> Figure:
    """The dev score (``dev_<key>``; PER greedy) and the training loss per epoch, one line per
    run, coloured by condition, a legend on each panel."""
    dev = score.column("dev")
    figure, (score_axis, loss_axis) = plt.subplots(1, 2, figsize=(11, 4))
    present = sorted(histories["condition"].unique()) if len(histories) else []
    colours = condition_colours(conditions or present)
    for (condition, _run_id), history in (
        histories.groupby(["condition", "run_id"], sort=True) if present else []
    ):
        history = history.sort_values("epoch")
        style = {"color": colours[condition], "alpha": 0.8, "marker": "."}
        if dev in history:
            score_axis.plot(history["epoch"], history[dev], **style)
        if "loss" in history:
            loss_axis.plot(history["epoch"], history["loss"], **style)
    for axis in (score_axis, loss_axis):
        if present:
            handles = [Line2D([], [], color=colours[c], marker=".", label=c) for c in present]
            axis.legend(handles=handles, fontsize=7)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    _score_axis(score_axis, histories[dev] if dev in histories else [], score)
    score_axis.set_title(dev_curve_title(score))
    loss = _LOSS_NAMES.get(score.key)
    loss_axis.set(
        title=f"training loss per epoch ({loss + ', ' if loss else ''}mean per "
        f"{'utterance' if score.key == 'per' else 'item'})",
        ylabel=f"{loss} loss" if loss else "loss",
    )
    losses = pd.to_numeric(histories.get("loss", pd.Series(dtype=float)), errors="coerce")
    if not (losses < 0).any():  # (a loss such as negative SI-SDR goes below 0)
        loss_axis.set_ylim(bottom=0)
    figure.tight_layout()
    return figure


def save_figure(figure: Figure, path: Path) -> Path:
    """Write a PNG under a per-process temporary name and rename it into place."""
    try:
        with atomic_output(path) as temporary:  # a failed write becomes an OutputError
            figure.savefig(temporary, dpi=110, format="png")
    finally:
        plt.close(figure)
    return path
