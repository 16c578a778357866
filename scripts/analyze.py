"""Analyse experiments: a table of every run, statistics per condition, plots and reports.

Reads ${ARTIFACTS_DIRECTORY}/<experiment>/<run_id>/{results.json,hist.csv} for each experiment;
writes runs.csv, unfinished.csv, statistics.{csv,md}, per_by_condition.png and learning_curves.png
into output_path (default ${ARTIFACTS_DIRECTORY}/<names joined by +>/analysis/), sends the reports
the `report` section switches on, and prints the statistics table. `--dry-run` sends nothing and
prints the Google Sheet rows it would write.
"""

import sys
from pathlib import Path

from pydantic import Field

from speechbed.errors import UserInputError
from speechbed.jobs import JobContext, JobSchema, run_jobs_cli
from speechbed.reports.analysis import send_reports, summary_text, write_tables_and_plots
from speechbed.reports.results import load_results
from speechbed.reports.settings import ReportSettings


class AnalyzeJob(JobSchema):
    experiments: list[str] = Field(
        min_length=1, description="experiment names (folders under artifacts_directory)"
    )
    artifacts_directory: Path = Field(description="where the experiments' run folders are")
    runs: list[str] | None = Field(
        None, description="only these run ids (null: every run listed in runs.json)"
    )
    output_path: Path | None = Field(
        None, description="analysis folder (null: <artifacts>/<names joined by +>/analysis)"
    )
    report: ReportSettings = Field(default_factory=ReportSettings, description="reports to send")


DRY_RUN = "--dry-run" in sys.argv


def run(job: AnalyzeJob, context: JobContext) -> None:
    try:
        results = load_results(job.experiments, job.artifacts_directory, job.runs)
    except FileNotFoundError as error:
        raise UserInputError(str(error)) from None
    folder = job.output_path or job.artifacts_directory / "+".join(job.experiments) / "analysis"
    outputs = write_tables_and_plots(results, folder)
    outputs.reports = send_reports(results, job.experiments, job.report, dry_run=DRY_RUN)
    print(summary_text(results, outputs))


if __name__ == "__main__":
    arguments = [argument for argument in sys.argv[1:] if argument != "--dry-run"]
    raise SystemExit(run_jobs_cli(AnalyzeJob, run, __doc__, arguments))
