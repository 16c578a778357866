"""Analyse experiments: a table of every run, statistics per condition, plots and reports.

Reads ${ARTIFACTS_DIRECTORY}/<experiment>/<run_id>/{results.json,hist.csv} for each experiment;
writes runs.csv, unfinished.csv, stale.csv, statistics.{csv,md}, score.json,
<score>_by_condition.png (per_by_condition.png for PER) and learning_curves.png into output_path
(default ${ARTIFACTS_DIRECTORY}/<names joined by +>/analysis/), sends the reports the `report`
section switches on, and prints the statistics table. Everything is in the experiments' own
score (PER, accuracy, WER, SI-SDRi: results.json says which and whether lower is better);
experiments scored differently are refused together. Runs whose data changed since they ran
are listed as stale, never in the statistics. A report that cannot be sent (no network, bad
credentials) says so in one line and the others carry on; a folder that cannot be written is
one line and exit code 2. `--dry-run` sends nothing and prints the Google Sheet rows it would
write. The job schema is speechbed.reports.analyze_job.AnalyzeJob.
"""

import sys
from functools import partial

from speechbed.errors import UserInputError
from speechbed.reports.analysis import send_reports, summary_text, write_tables_and_plots
from speechbed.reports.analyze_job import AnalyzeJob
from speechbed.reports.results import load_results
from speechbed.step_runner import JobContext, run_jobs_cli


def run(job: AnalyzeJob, context: JobContext, dry_run: bool = False) -> None:
    try:
        results = load_results(job.experiments, job.artifacts_directory, job.runs)
    except FileNotFoundError as error:
        raise UserInputError(str(error)) from None
    outputs = write_tables_and_plots(results, job.output_folder())
    outputs.reports = send_reports(results, job.experiments, job.report, dry_run=dry_run)
    print(summary_text(results, outputs))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    dry_run = "--dry-run" in argv
    arguments = [argument for argument in argv if argument != "--dry-run"]
    return run_jobs_cli(AnalyzeJob, partial(run, dry_run=dry_run), __doc__, arguments)


if __name__ == "__main__":
    raise SystemExit(main())
