"""Expand an experiment YAML (its sweep) into run configs and pipelines; optionally run them.

Reads experiments/<name>.yml; writes ${ARTIFACTS_DIRECTORY}/<name>/<run_id>/config.yml per run
and experiments/out/<name>/{cache,train,evaluate,analyze,pipeline}.yml, then prints (or, with
--run, runs) the `make pipeline` command, then prints the results table. Missing inputs stop it
before anything is written; with --run, so do too few GPUs (without it, a machine with no GPU can
expand an experiment whose runs need some: the pipeline checks when it runs).
With --run the pipeline runs in this very process, so killing it (even with SIGKILL) is
killing the runner, whose jobs then go with it.
"""

import argparse
import os
import sys
import textwrap
from pathlib import Path

from speechbed.errors import UserInputError
from speechbed.jobs import describe_schema
from speechbed.pipeline.cli import main as run_pipeline
from speechbed.reports.saved import analysis_folder, print_saved_results
from speechbed.storage import fill_storage_defaults, repository_root, storage_directory
from speechbed.sweep import expansion, selection
from speechbed.sweep.experiment import (
    check_gpus,
    check_inputs,
    load_experiment,
    write_experiment,
)
from speechbed.sweep.experiment_file import ExperimentFile

ROOT = repository_root()


def _epilog() -> str:
    # The modules' own docstrings, past their title and caller: the grammar is written once.
    grammar = "\n\n".join((expansion.__doc__ or "").split("\n\n")[2:]).replace("``", "")
    picks = "\n\n".join((selection.__doc__ or "").split("\n\n")[2:]).replace("``", "")
    return (
        "experiment file sections:\n"
        + describe_schema(ExperimentFile)
        + "\n\nthe sweep (speechbed.sweep.expansion):\n"
        + textwrap.indent(grammar.strip(), "  ")
        + "\n\n--only and --set (make experiment ... only=... set=...):\n"
        + textwrap.indent(picks.strip(), "  ")
        + "\n\nexample:\n  make experiment yml=experiments/mcorr.yml num_gpus=1 "
        'only="feature=fbank-81-10ms seed=1-5" set="training.num_epochs=2"\n'
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-y", "--yml", required=True, type=Path, help="the experiment YAML")
    parser.add_argument(
        "--num_gpus",
        type=int,
        default=0,
        help="GPUs per train/evaluate job; with N > 1 a run trains as N data-parallel processes",
    )
    parser.add_argument("--num_jobs", type=int, default=1, help="jobs running at once per step")
    parser.add_argument("--run_in", choices=("host", "container", "slurm"), default="host")
    parser.add_argument("--gpus", default=None, help="GPU ids for the inner pipelines (e.g. 0,1)")
    parser.add_argument("--run", action="store_true", help="run the pipeline right away")
    parser.add_argument(
        "--only",
        action="append",
        metavar="KEY=VALUES",
        help="run only the runs that match, e.g. 'feature=fbank-81-10ms seed=1-5' (see below)",
    )
    parser.add_argument(
        "--set",
        action="append",
        dest="overrides",
        metavar="KEY=VALUE",
        help="set a run setting in every run, e.g. 'training.num_epochs=2 data.batch_size=4'",
    )
    parser.add_argument(
        "--dry-run",
        "--dry_run",
        action="store_true",
        help="expand and check, print the runs; write and run nothing",
    )
    arguments = parser.parse_args(argv)
    fill_storage_defaults()
    try:
        if arguments.num_jobs < 1 or arguments.num_gpus < 0:
            raise UserInputError("num_jobs must be >= 1 and num_gpus >= 0")
        experiment = load_experiment(arguments.yml, arguments.overrides, arguments.only)
        needed = check_gpus(
            arguments.num_gpus,
            arguments.gpus,
            os.environ,
            experiment,
            # on Slurm the cluster has the GPUs; the pipeline asks it when it runs
            inventory=arguments.run and arguments.run_in != "slurm",
        )
        missing = check_inputs(experiment, os.environ, experiment.expansion.populate_cache)
        if missing:
            listed = "\n  ".join(missing)
            raise UserInputError(
                f"{arguments.yml}: the runs need inputs that are missing:\n  {listed}\n"
                "prepare the corpus first (make pipeline yml=data_prep/<corpus>/pipeline.yml)"
            )
        if arguments.dry_run:
            _print_runs(experiment, needed)
            print("dry run: nothing written")
            return 0
        written = write_experiment(
            experiment,
            ROOT,
            storage_directory("ARTIFACTS_DIRECTORY", ROOT),
            num_gpus=arguments.num_gpus,
            num_jobs=arguments.num_jobs,
            run_in=arguments.run_in,
            gpus=arguments.gpus,
        )
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    pipeline = written.pipeline.relative_to(ROOT)
    _print_runs(experiment, needed)
    print(f"pipelines in {written.out_folder.relative_to(ROOT)}/")
    if not arguments.run:
        print(f"next: make pipeline yml={pipeline}")
        return 0
    print(f"running: scripts/pipeline.py -y {pipeline}", flush=True)
    # In this process, not a child: a child would outlive a SIGKILL of this one.
    code = run_pipeline(["-y", str(written.pipeline)])
    if code == 0:
        artifacts = storage_directory("ARTIFACTS_DIRECTORY", ROOT)
        print_saved_results(analysis_folder(artifacts, [experiment.name]))
    return code


def _print_runs(experiment, needed: int) -> None:
    total = len(experiment.expansion.runs)
    picked = f" of {total} (only=)" if len(experiment.runs) != total else ""
    gpus = f"; each needs {needed} GPU(s) when it runs" if needed else ""
    print(f"{experiment.name}: {len(experiment.runs)} run(s){picked}{gpus}")
    for run in experiment.runs:
        print(f"  {run.run_id}  {run.condition()}  seed={run.seed()}")


if __name__ == "__main__":
    raise SystemExit(main())
