"""The analysis step: tables, plots and reports for one or more experiments' runs.

Called by ``scripts/analyze.py``; everything it writes goes to one ``analysis/`` folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from speechbed.outputs import make_folder, write_text_atomic
from speechbed.reports import comet, plots, sheets, tensorboard
from speechbed.reports.results import ExperimentResults, read_history
from speechbed.reports.score import PER, SCORE_FILE, Score, score_record
from speechbed.reports.settings import ReportSettings
from speechbed.reports.statistics import comparisons_title, report_markdown, statistics_markdown
from speechbed.run_folder import RunFolder


def sheet_columns(score: Score = PER) -> list[str]:
    """The sheet's run columns (run id first: it is the upsert key), the score's after the seed."""
    return [
        "run_id", "experiment", "condition", "seed", score.column("dev"), score.column("test"),
        "epochs", "best_epoch", "training_seconds", "decoding_seconds", "beam_width", "run_dir",
    ]  # fmt: skip


SHEET_COLUMNS = sheet_columns(PER)


@dataclass
class AnalysisOutputs:
    """The files one analysis wrote, and the reports' one-line statuses."""

    folder: Path
    files: dict[str, Path] = field(default_factory=dict)
    reports: dict[str, str] = field(default_factory=dict)


def _write_text(path: Path, text: str) -> Path:
    write_text_atomic(path, text)
    return path


def write_tables_and_plots(results: ExperimentResults, folder: Path) -> AnalysisOutputs:
    """CSV files, ``statistics.md`` (the statistics, then the tests between conditions that
    differ in one setting), ``score.json`` (the score the tables hold) and the two PNG figures
    (``<key>_by_condition.png``: ``per_by_condition.png`` for PER; ``learning_curves.png``).

    Each file is written under a per-process temporary name and renamed into place; a folder
    that cannot be written is an ``OutputError`` naming it.
    """
    make_folder(folder)
    outputs = AnalysisOutputs(folder)
    for name, table in (
        ("runs", results.runs),
        ("unfinished", results.unfinished),
        ("stale", results.stale),
        ("statistics", results.statistics),
        ("comparisons", results.comparisons),
        ("histories", results.histories),
    ):
        outputs.files[f"{name}.csv"] = _write_text(
            folder / f"{name}.csv", table.to_csv(index=False)
        )
    score = results.score
    outputs.files["statistics.md"] = _write_text(
        folder / "statistics.md",
        report_markdown(results.statistics, results.comparisons, score),
    )
    outputs.files[SCORE_FILE] = _write_text(folder / SCORE_FILE, score_record(score))
    conditions = sorted(  # one colour per condition in both figures
        {*results.runs["condition"], *results.histories.get("condition", ())}
    )
    by_condition = plots.by_condition_file(score)
    outputs.files[by_condition] = plots.save_figure(
        plots.score_by_condition(results.runs, conditions=conditions, score=score),
        folder / by_condition,
    )
    outputs.files["learning_curves.png"] = plots.save_figure(
        plots.learning_curves(results.histories, conditions=conditions, score=score),
        folder / "learning_curves.png",
    )
    return outputs


def sheet_rows(runs: pd.DataFrame, score: Score = PER) -> tuple[list[str], list[list[object]]]:
    """The run table as the sheet's header and rows (run id first: it is the upsert key)."""
    columns = sheet_columns(score)
    table = runs.reindex(columns=columns)
    return columns, table.astype(object).where(table.notna(), None).values.tolist()


def send_reports(
    results: ExperimentResults,
    names: Sequence[str],
    settings: ReportSettings,
    dry_run: bool = False,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """TensorBoard fallback, comet.ml and Google Sheet, as the settings switch them on."""
    environ = os.environ if environ is None else environ
    score = results.score
    finals = [score.column("dev"), score.column("test")]  # each run's final metrics
    statuses: dict[str, str] = {}
    if settings.tensorboard:
        written = 0
        for row in results.runs.to_dict("records"):
            run = RunFolder(Path(row["run_dir"]))
            history = read_history(run.path, score)
            if history is not None and not tensorboard.has_event_files(run.path) and not dry_run:
                tensorboard.write_history_scalars(run.tensorboard, history)
                written += 1
            if not dry_run:  # named by experiment, condition and seed, with hparams
                final = {name: row[name] for name in finals}
                view = tensorboard.describe_run(run.path, final).parents[2]
        statuses["tensorboard"] = (
            f"event files under the run folders ({written} written from hist.csv)"
            + (f"; runs named in {view}" if len(results.runs) and not dry_run else "")
        )
    if settings.comet:
        counts: dict[str, int] = {}
        try_online = True  # after one failed connection, the other runs go straight offline
        for row in results.runs.to_dict("records"):
            run_dir = Path(row["run_dir"])
            if dry_run:
                outcome = "dry run"
            else:
                import yaml

                config = yaml.safe_load(RunFolder(run_dir).config.read_text(encoding="utf-8"))
                history = read_history(run_dir, score)
                final = {name: row[name] for name in finals}
                outcome = comet.log_run(
                    run_dir, row["run_id"], row["experiment"], config, history, final,
                    settings.comet_project, settings.comet_workspace, environ, try_online,
                )  # fmt: skip
                try_online = try_online and not outcome.startswith(comet.ONLINE_FAILED)
            kind = outcome.split(":")[0]
            counts[kind] = counts.get(kind, 0) + 1
        statuses["comet"] = (
            ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items()))
            or "no finished runs"
        )
    if settings.google_sheet:
        header, rows = sheet_rows(results.runs, score)
        credentials = Path(
            environ.get("PATH_TO_GOOGLE_CREDENTIALS") or "private/google_credentials.json"
        )
        statuses["google_sheet"] = sheets.report_to_sheet(
            credentials,
            settings.spreadsheet,
            settings.worksheet or "+".join(names),
            header,
            rows,
            results.statistics,
            dry_run=dry_run,
            comparisons=results.comparisons,
            score=score,
        )
    return statuses


def summary_text(results: ExperimentResults, outputs: AnalysisOutputs) -> str:
    """The one-screen summary printed at the end of the analysis."""
    lines = [f"{len(results.runs)} finished run(s)"]
    if len(results.statistics):
        lines += [
            "",
            f"{results.score.label} per condition and partition:",
            statistics_markdown(results.statistics),
        ]
    if len(results.comparisons):
        lines += [comparisons_title(results.score), "", statistics_markdown(results.comparisons)]
    for table, what in (
        (results.stale, "stale (trained or evaluated on data that has changed since)"),
        (results.unfinished, "not finished"),
    ):
        if len(table):
            lines.append(f"{len(table)} run(s) {what}:")
            for row in table.itertuples():
                lines.append(
                    f"  {row.experiment}/{row.run_id}  {row.condition}  seed={row.seed}: "
                    f"{row.status}"
                )
    lines.append(f"tables and plots in {outputs.folder}:")
    lines += [f"  {path}" for name, path in outputs.files.items() if name.endswith((".png", ".md"))]
    for report, status in outputs.reports.items():
        lines.append(f"{report}: {status}")
    return "\n".join(lines)
