"""A run's record: ``hist.csv`` per epoch (rewritten whole, atomically), TensorBoard scalars per
epoch and per optimiser step.

Used by the trainer (the history goes into every checkpoint); the experiments' reports read
``hist.csv``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from speechbed.outputs import write_text_atomic
from speechbed.run_folder import RunFolder

#: TensorBoard's folder, under the run's ``tensorboard/``, of the per-step scalars (their
#: steps count optimiser steps, not epochs, so they cannot share the epochs' event files).
STEPS_FOLDER = "steps"


def history_columns(metric: str) -> tuple[str, ...]:
    """Columns of hist.csv, one row per completed epoch: ``dev_per`` is the ctc_phones metric.

    ``max_grad_norm`` is the largest finite total gradient norm of the epoch's steps (empty
    in rows of runs trained before it was recorded).
    """
    return ("epoch", "loss", metric, "learning_rate", "seconds", "max_grad_norm")


def write_history(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    """Write every row to ``path`` atomically (a killed run never leaves half a row)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({column: row.get(column, "") for column in columns})
    write_text_atomic(path, buffer.getvalue())


def best_epoch(history: list[dict[str, Any]], metric: str, lower_is_better: bool = True) -> int:
    """The earliest epoch with the best value of ``metric`` (NaN never wins)."""
    sign = 1.0 if lower_is_better else -1.0
    scores = [math.inf if math.isnan(row[metric]) else sign * row[metric] for row in history]
    return history[scores.index(min(scores))]["epoch"]


class RunLog:
    """The epochs' rows, kept in hist.csv and as TensorBoard events under ``tensorboard/``.

    Its state (the rows) is checkpointed; ``open`` rewrites hist.csv from the rows it holds
    (dropping those of an epoch cut short) and starts the event writer. With ``writes``
    False (a data-parallel rank but the first) it keeps the rows and writes nothing.
    """

    def __init__(self, run: RunFolder, metric: str, writes: bool = True) -> None:
        self.run = run
        self.writes = writes
        self.columns = history_columns(metric)
        self.history: list[dict[str, Any]] = []
        self.writer: Any = None
        self.step_writer: Any = None

    def state_dict(self) -> list[dict[str, Any]]:
        return self.history

    def load_state_dict(self, rows: list[dict[str, Any]]) -> None:
        self.history = list(rows)

    def open(self, steps_done: int = 0) -> None:
        """Start writing; ``steps_done``: the optimiser steps of the epochs in the history."""
        if not self.writes:
            return
        from torch.utils.tensorboard import SummaryWriter  # slow import, only when training

        write_history(self.run.history, self.history, self.columns)
        # events from an epoch after the last checkpoint are purged, so curves have no repeats
        self.writer = SummaryWriter(str(self.run.tensorboard), purge_step=len(self.history) + 1)
        self.step_writer = SummaryWriter(
            str(self.run.tensorboard / STEPS_FOLDER), purge_step=steps_done + 1
        )

    def add_step(self, step: int, scalars: dict[str, float]) -> None:
        """Scalars of optimiser step ``step`` (from 1): loss, learning rate, gradient norm."""
        if not self.writes:
            return
        for name, value in scalars.items():
            self.step_writer.add_scalar(name, value, step)

    def add(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if not self.writes:
            return
        write_history(self.run.history, self.history, self.columns)
        for column in self.columns[1:]:
            # error rates as percentages, as every table and plot shows them (hist.csv: fractions)
            scale = 100.0 if column.endswith("_per") else 1.0
            if row.get(column) is not None:
                self.writer.add_scalar(column, row[column] * scale, row["epoch"])
        self.writer.flush()
        self.step_writer.flush()

    def close(self) -> None:
        for writer in (self.writer, self.step_writer):
            if writer is not None:
                writer.close()
