"""Figures: a colour and a legend per condition on every panel, points over boxes, honest axes."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import to_rgba

from speechbed.reports import plots

RUNS = pd.DataFrame(
    {
        "condition": ["lcorr", "lcorr", "mcorr", "mcorr", "mcorr"],
        "dev_per": [21.0, 21.4, 20.8, 21.1, 20.9],
        "test_per": [22.0, 22.3, 21.5, 21.9, 21.7],
    }
)


def _histories() -> pd.DataFrame:
    frames = []
    for run_id, condition, epochs in (("r1", "lcorr", 3), ("r2", "mcorr", 4), ("r3", "mcorr", 2)):
        epoch = np.arange(1, epochs + 1)
        frames.append(
            pd.DataFrame({"epoch": epoch, "loss": 3.0 / epoch, "dev_per": 90.0 / epoch}).assign(
                run_id=run_id, condition=condition
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_per_panels_name_partition_and_metric_with_a_legend_and_points_over_boxes():
    figure = plots.per_by_condition(RUNS)
    colours = plots.condition_colours(["lcorr", "mcorr"])
    for axis, partition in zip(figure.axes, ("dev", "test"), strict=True):
        title = axis.get_title()
        assert title.startswith(f"{partition}:") and "PER (%)" in title
        assert axis.get_ylabel() == "PER (%)"
        legend = [text.get_text() for text in axis.get_legend().get_texts()]
        assert legend == ["lcorr (n=2)", "mcorr (n=3)"]
        # the axis starts at 0: a 0.6-point spread is not blown up to fill the panel
        bottom, top = axis.get_ylim()
        assert bottom == 0 and top >= RUNS[f"{partition}_per"].max()
        points = axis.collections  # one scatter per condition, each in its colour
        assert [to_rgba(c.get_facecolor()[0]) for c in points] == [
            colours["lcorr"],
            colours["mcorr"],
        ]
        assert [len(c.get_offsets()) for c in points] == [2, 3]
        boxes = [patch for patch in axis.patches]
        assert boxes and all(c.get_zorder() > b.get_zorder() for c in points for b in boxes)
    plt.close(figure)


def test_learning_curves_have_integer_epochs_a_legend_on_each_panel_and_say_greedy():
    histories = _histories()
    figure = plots.learning_curves(histories, conditions=["lcorr", "mcorr", "other"])
    per_axis, loss_axis = figure.axes
    assert "greedy" in per_axis.get_title() and "PER (%)" in per_axis.get_title()
    colours = plots.condition_colours(["lcorr", "mcorr", "other"])
    for axis in (per_axis, loss_axis):
        figure.canvas.draw()
        ticks = [t for t in axis.get_xticks() if axis.get_xlim()[0] <= t <= axis.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
        assert [t.get_text() for t in axis.get_legend().get_texts()] == ["lcorr", "mcorr"]
        lines = [line for line in axis.get_lines() if len(line.get_xdata())]
        assert len(lines) == 3  # one per run
        assert {to_rgba(line.get_color()) for line in lines} == {
            colours["lcorr"],
            colours["mcorr"],
        }
        assert axis.get_ylim()[0] == 0
    plt.close(figure)


def test_the_same_conditions_get_the_same_colours_in_both_figures():
    conditions = ["lcorr", "mcorr"]
    per = plots.per_by_condition(RUNS[RUNS["condition"] == "mcorr"], conditions=conditions)
    (points,) = per.axes[0].collections
    assert to_rgba(points.get_facecolor()[0]) == plots.condition_colours(conditions)["mcorr"]
    plt.close(per)


def test_empty_tables_still_give_figures():
    plt.close(plots.per_by_condition(RUNS.iloc[:0]))
    plt.close(plots.learning_curves(pd.DataFrame()))
