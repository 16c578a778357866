"""Analyse experiments: a table of every run, statistics per condition, plots and reports.

Reads ${ARTIFACTS_DIRECTORY}/<experiment>/<run_id>/{results.json,hist.csv} for each experiment;
writes runs.csv, unfinished.csv, stale.csv, statistics.{csv,md}, per_by_condition.png and
learning_curves.png into output_path (default ${ARTIFACTS_DIRECTORY}/<names joined by +>/analysis/),
sends the reports the `report` section switches on, and prints the statistics table. Runs whose
data changed since they ran are listed as stale, never in the statistics. A report that cannot be
sent (no network, bad credentials) says so in one line and the others carry on; a folder that
cannot be written is one line and exit code 2. `--dry-run` sends nothing and prints the Google
Sheet rows it would write.
"""

import sys
from pathlib import Path

from pydantic import Field

from speechbed.errors import UserInputError
from speechbed.jobs import JobContext, JobSchema, run_jobs_cli
from speechbed.outputs import OutputError
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


def run(job: AnalyzeJob, context: JobContext, dry_run: bool = False) -> None:
    try:
        results = load_results(job.experiments, job.artifacts_directory, job.runs)
    except FileNotFoundError as error:
        raise UserInputError(str(error)) from None
    folder = job.output_path or job.artifacts_directory / "+".join(job.experiments) / "analysis"
    outputs = write_tables_and_plots(results, folder)
    outputs.reports = send_reports(results, job.experiments, job.report, dry_run=dry_run)
    print(summary_text(results, outputs))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    dry_run = "--dry-run" in argv
    arguments = [argument for argument in argv if argument != "--dry-run"]
    unwritable: list[OutputError] = []

    def run_job(job: AnalyzeJob, context: JobContext) -> None:
        try:
            run(job, context, dry_run=dry_run)
        except OutputError as error:
            unwritable.append(error)
            raise

    code = run_jobs_cli(AnalyzeJob, run_job, __doc__, arguments)
    # Storage that cannot be written is bad input (exit 2), not a failed analysis.
    return 2 if code == 1 and unwritable else code


if __name__ == "__main__":
    raise SystemExit(main())
