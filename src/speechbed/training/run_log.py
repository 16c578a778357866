"""A run's per-epoch record: ``hist.csv`` (rewritten whole, atomically) and TensorBoard scalars.

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


def history_columns(metric: str) -> tuple[str, ...]:
    """Columns of hist.csv, one row per completed epoch: ``dev_per`` is the ctc_phones metric."""
    return ("epoch", "loss", metric, "learning_rate", "seconds")


def write_history(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    """Write every row to ``path`` atomically (a killed run never leaves half a row)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({column: row[column] for column in columns})
    write_text_atomic(path, buffer.getvalue())


def best_epoch(history: list[dict[str, Any]], metric: str, lower_is_better: bool = True) -> int:
    """The earliest epoch with the best value of ``metric`` (NaN never wins)."""
    sign = 1.0 if lower_is_better else -1.0
    scores = [math.inf if math.isnan(row[metric]) else sign * row[metric] for row in history]
    return history[scores.index(min(scores))]["epoch"]


class RunLog:
    """The epochs' rows, kept in hist.csv and as TensorBoard events under ``tensorboard/``.

    Its state (the rows) is checkpointed; ``open`` rewrites hist.csv from the rows it holds
    (dropping those of an epoch cut short) and starts the event writer.
    """

    def __init__(self, run: RunFolder, metric: str) -> None:
        self.run = run
        self.columns = history_columns(metric)
        self.history: list[dict[str, Any]] = []
        self.writer: Any = None

    def state_dict(self) -> list[dict[str, Any]]:
        return self.history

    def load_state_dict(self, rows: list[dict[str, Any]]) -> None:
        self.history = list(rows)

    def open(self) -> None:
        from torch.utils.tensorboard import SummaryWriter  # slow import, only when training

        write_history(self.run.history, self.history, self.columns)
        # events from an epoch after the last checkpoint are purged, so curves have no repeats
        self.writer = SummaryWriter(str(self.run.tensorboard), purge_step=len(self.history) + 1)

    def add(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        write_history(self.run.history, self.history, self.columns)
        for column in self.columns[1:]:
            # error rates as percentages, as every table and plot shows them (hist.csv: fractions)
            scale = 100.0 if column.endswith("_per") else 1.0
            self.writer.add_scalar(column, row[column] * scale, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
