"""TensorBoard: read a run's event files back, write hist.csv as scalars where none exist, and
write a run's settings and final scores (``final/dev_<key>``, ``final/test_<key>``, as the
analysis tables show them) for TensorBoard's hparams view.

Called by ``scripts/analyze.py`` (runs without event files still show in `make tensorboard`)
and by tests and notebooks that read what training logged. Runs are named in TensorBoard by
``speechbed.reports.tensorboard_view``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from speechbed.reports.tensorboard_view import link_run
from speechbed.run_folder import ExperimentFolder, RunFolder

EVENT_PATTERN = "events.out.tfevents.*"
HPARAMS_SUFFIX = ".hparams"  # the analysis's own event file in a run's tensorboard/ folder


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


def _hparam_value(value: Any) -> bool | int | float | str:
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


def write_hparams(logdir: Path, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
    """The run's settings and final metrics for the hparams view, in the run's own folder
    (so TensorBoard shows them on the run's curves); an earlier analysis's file is replaced."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    logdir = Path(logdir)
    for old in logdir.glob(EVENT_PATTERN):
        if old.name.endswith(HPARAMS_SUFFIX):
            old.unlink(missing_ok=True)
    values = {str(key): _hparam_value(value) for key, value in hparams.items()}
    finals = {f"final/{key}": float(value) for key, value in metrics.items() if pd.notna(value)}
    writer = SummaryWriter(log_dir=str(logdir), filename_suffix=HPARAMS_SUFFIX)
    try:
        for summary in hparams_summary(values, finals):
            writer.file_writer.add_summary(summary)
        for tag, value in finals.items():
            writer.add_scalar(tag, value, 0)
    finally:
        writer.close()


def describe_run(run_dir: Path, metrics: Mapping[str, float]) -> Path:
    """Name a run in TensorBoard's view and write its hparams: its experiment, condition, seed
    and swept settings (from the experiment's runs.json), with ``metrics`` as final values.
    Returns the run's link in the view."""
    run_dir = Path(run_dir)
    experiment = ExperimentFolder(run_dir.parent)
    entry = experiment.read_index().get(run_dir.name, {})
    condition, seed = entry.get("condition", "base"), entry.get("seed")
    settings = {
        "experiment": experiment.path.name,
        "condition": condition,
        "seed": seed,
        **(entry.get("settings") or {}),
    }
    write_hparams(RunFolder(run_dir).tensorboard, settings, metrics)
    return link_run(experiment.path.parent, experiment.path.name, condition, seed, run_dir)
