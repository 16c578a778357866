"""TensorBoard: read a run's event files back, and write hist.csv as scalars where none exist.

Called by ``scripts/analyze.py`` (runs without event files still show in `make tensorboard`)
and by tests and notebooks that read what training logged.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

EVENT_PATTERN = "events.out.tfevents.*"


def has_event_files(folder: Path) -> bool:
    return any(folder.rglob(EVENT_PATTERN))


def read_scalars(logdir: Path) -> pd.DataFrame:
    """Every scalar under ``logdir`` (each folder holding event files is one run), via
    tensorboard's own ``EventAccumulator``: columns run, tag, step, value."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = []
    folders = sorted({path.parent for path in Path(logdir).rglob(EVENT_PATTERN)})
    for folder in folders:
        accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            for event in accumulator.Scalars(tag):
                rows.append(
                    {
                        "run": str(folder.relative_to(logdir)),
                        "tag": tag,
                        "step": event.step,
                        "value": event.value,
                    }
                )
    return pd.DataFrame(rows, columns=["run", "tag", "step", "value"])


def write_history_scalars(logdir: Path, history: pd.DataFrame, prefix: str = "") -> None:
    """Write each hist.csv column (but the epoch) as a scalar per epoch."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(logdir))
    try:
        for record in history.to_dict("records"):
            for column, value in record.items():
                if column != "epoch" and pd.notna(value):
                    writer.add_scalar(f"{prefix}{column}", float(value), int(record["epoch"]))
    finally:
        writer.close()
