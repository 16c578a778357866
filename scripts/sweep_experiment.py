"""Expand an experiment YAML (its sweep) into run configs and pipelines; optionally run them.

Reads experiments/<name>.yml; writes ${ARTIFACTS_DIRECTORY}/<name>/<run_id>/config.yml per run
and experiments/out/<name>/{cache,train,evaluate,analyze,pipeline}.yml, then prints (or, with
--run, runs) the `make pipeline` command. Missing inputs or too few GPUs stop it before anything runs.
With --run the pipeline runs in this very process, so killing it (even with SIGKILL) is
killing the runner, whose jobs then go with it.
"""

import argparse
import os
import sys
from pathlib import Path

from speechbed.errors import UserInputError
from speechbed.pipeline.cli import main as run_pipeline
from speechbed.storage import repository_root, storage_directory
from speechbed.sweep.experiment import (
    check_gpus,
    check_inputs,
    load_experiment,
    write_experiment,
)

ROOT = repository_root()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-y", "--yml", required=True, type=Path, help="the experiment YAML")
    parser.add_argument("--num_gpus", type=int, default=0, help="GPUs per train/evaluate job")
    parser.add_argument("--num_jobs", type=int, default=1, help="jobs running at once per step")
    parser.add_argument("--run_in", choices=("host", "container"), default="host")
    parser.add_argument("--gpus", default=None, help="GPU ids for the inner pipelines (e.g. 0,1)")
    parser.add_argument("--run", action="store_true", help="run the pipeline right away")
    arguments = parser.parse_args(argv)
    try:
        if arguments.num_jobs < 1 or arguments.num_gpus < 0:
            raise UserInputError("num_jobs must be >= 1 and num_gpus >= 0")
        experiment = load_experiment(arguments.yml)
        check_gpus(arguments.num_gpus, arguments.gpus, os.environ, experiment)
        missing = check_inputs(experiment, os.environ, experiment.expansion.populate_cache)
        if missing:
            listed = "\n  ".join(missing)
            raise UserInputError(
                f"{arguments.yml}: the runs need inputs that are missing:\n  {listed}\n"
                "prepare the corpus first (make pipeline yml=data_prep/<corpus>/pipeline.yml)"
            )
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
    print(
        f"{experiment.name}: {len(experiment.runs)} run(s); pipelines in {written.out_folder.relative_to(ROOT)}/"
    )
    for run in experiment.runs:
        print(f"  {run.run_id}  {run.condition()}  seed={run.seed()}")
    if not arguments.run:
        print(f"next: make pipeline yml={pipeline}")
        return 0
    print(f"running: scripts/pipeline.py -y {pipeline}", flush=True)
    # In this process, not a child: a child would outlive a SIGKILL of this one.
    return run_pipeline(["-y", str(written.pipeline)])


if __name__ == "__main__":
    raise SystemExit(main())
