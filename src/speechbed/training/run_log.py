"""A run's per-epoch record: ``hist.csv`` (rewritten whole, atomically) and TensorBoard scalars.

Used by the training loop; the experiments' reports read ``hist.csv``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from speechbed.outputs import write_text_atomic

#: Columns of hist.csv, one row per completed epoch.
HISTORY_COLUMNS = ("epoch", "loss", "dev_per", "learning_rate", "seconds")


def write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write every row to ``path`` atomically (a killed run never leaves half a row)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({column: row[column] for column in HISTORY_COLUMNS})
    write_text_atomic(path, buffer.getvalue())


class RunLog:
    """hist.csv plus TensorBoard events under ``<run_dir>/tensorboard``."""

    def __init__(self, run_dir: Path, history: list[dict[str, Any]]) -> None:
        from torch.utils.tensorboard import SummaryWriter  # slow import, only when training

        self.history_path = run_dir / "hist.csv"
        self.history = list(history)
        write_history(self.history_path, self.history)  # drops rows of an epoch cut short
        # events from an epoch after the last checkpoint are purged, so curves have no repeats
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=len(history) + 1)

    def add(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        write_history(self.history_path, self.history)
        for column in HISTORY_COLUMNS[1:]:
            self.writer.add_scalar(column, row[column], row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
