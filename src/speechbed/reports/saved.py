"""Print what an analysis already wrote: the statistics table, stale and unfinished runs, plots.

Called by ``scripts/report.py`` and by ``scripts/sweep_experiment.py --run`` once its pipeline is
done, so a rerun of a finished experiment ends with its results; reads files, computes nothing.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import TextIO

from speechbed.reports.score import PER, Score, read_score_record
from speechbed.run_folder import ExperimentFolder


def heading(score: Score = PER) -> str:
    """The statistics' heading: "PER (%) per condition and partition"."""
    return f"{score.label} per condition and partition"


HEADING = heading(PER)


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def analysis_folder(artifacts: Path, names: list[str]) -> Path:
    """The default analysis folder of these experiments (as ``AnalyzeJob`` places it)."""
    return ExperimentFolder(artifacts / "+".join(names)).analysis


def print_saved_results(folder: Path, stream: TextIO | None = None) -> bool:
    """Print the analysis in ``folder``; False (and nothing printed) when it has none yet."""
    stream = sys.stdout if stream is None else stream
    table = folder / "statistics.md"
    if not table.is_file():
        return False
    score = read_score_record(folder)  # (PER for an analysis written before it was recorded)
    lines = [f"{heading(score)} ({folder.parent.name}):", table.read_text(encoding="utf-8")]
    for name, what in (
        ("stale", "stale (trained or evaluated on data that has changed since)"),
        ("unfinished", "not finished"),
    ):
        listed = _read_rows(folder / f"{name}.csv")
        if listed:
            lines.append(f"{len(listed)} run(s) {what}:")
            lines += [
                f"  {row['experiment']}/{row['run_id']}  {row['condition']}  "
                f"seed={row['seed']}: {row['status']}"
                for row in listed
            ]
    lines.append("plots:")
    lines += [f"  {plot}" for plot in sorted(folder.glob("*.png"))]
    lines.append(f"every run: {folder / 'runs.csv'}")
    print("\n".join(lines), file=stream, flush=True)
    return True
