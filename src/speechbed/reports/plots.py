"""Figures of an experiment: PER per condition (box + points) and learning curves per run.

Called by ``scripts/analyze.py`` (PNG files) and the analysis notebook (inline figures).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from speechbed.outputs import atomic_output


def per_by_condition(runs: pd.DataFrame, partitions: tuple[str, ...] = ("dev", "test")) -> Figure:
    """One panel per partition: a box per condition with every run's PER as a point."""
    figure, axes = plt.subplots(1, len(partitions), figsize=(5 * len(partitions), 4), squeeze=False)
    conditions = sorted(runs["condition"].unique()) if len(runs) else []
    jitter = np.random.default_rng(0)  # fixed, so the figure is reproducible
    for axis, partition in zip(axes[0], partitions, strict=True):
        column = f"{partition}_per"
        values = [
            runs.loc[runs["condition"] == c, column].astype(float).to_numpy() for c in conditions
        ]
        if conditions:
            axis.boxplot(values, showfliers=False)
            for position, points in enumerate(values, start=1):
                offsets = jitter.uniform(-0.12, 0.12, size=points.size)
                axis.scatter(position + offsets, points, s=14, alpha=0.8, zorder=3)
            axis.set_xticks(
                range(1, len(conditions) + 1), conditions, rotation=20, ha="right", fontsize=8
            )
        axis.set_title(f"{partition} PER per condition")
        axis.set_ylabel("PER (%)")
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def learning_curves(histories: pd.DataFrame) -> Figure:
    """Dev PER and training loss per epoch, one line per run, coloured by condition."""
    figure, (per_axis, loss_axis) = plt.subplots(1, 2, figsize=(11, 4))
    if len(histories):
        conditions = sorted(histories["condition"].unique())
        colours = {c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(conditions)}
        for (condition, _run_id), history in histories.groupby(["condition", "run_id"], sort=True):
            history = history.sort_values("epoch")
            style = {"color": colours[condition], "alpha": 0.8, "marker": "."}
            if "dev_per" in history:
                per_axis.plot(history["epoch"], history["dev_per"], **style)
            if "loss" in history:
                loss_axis.plot(history["epoch"], history["loss"], **style)
        for condition in conditions:
            per_axis.plot([], [], color=colours[condition], label=condition)
        per_axis.legend(fontsize=7)
    per_axis.set(title="dev PER per epoch", xlabel="epoch", ylabel="PER (%)")
    loss_axis.set(title="training loss per epoch", xlabel="epoch", ylabel="CTC loss")
    for axis in (per_axis, loss_axis):
        axis.grid(alpha=0.3)
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
