"""Hyperparameter search with optuna: run a worker, start N workers as a pipeline, or read a study.

Input: a search YAML (experiments/search/*.yml; keys below). Without options this process is
one worker: it trains trials (each a run folder under ${ARTIFACTS_DIRECTORY}/search/<study>/
trials/) until the study has num_trials finished trials, counted across all workers; rerun, it
continues the study. --num_workers N writes <study folder>/pipeline.yml with N worker jobs and
runs it (make search). --best writes the best settings as an experiment YAML with a sweep over
seeds; --important writes the top-k parameters by importance as an include list; --report
(also done by each worker when it stops) writes trials.csv, best_trials.csv and figures.
As a pipeline job it hands the runner its lineage: the previous stage's files it read
(include_from, base_from, and for --best/--important the study's journal) and the file it
wrote, so a staged search (experiments/search/*-stages.yml) runs a stage again when they change.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from speechbed.errors import UserInputError
from speechbed.jobs import describe_schema
from speechbed.storage import fill_storage_defaults, repository_root


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    from speechbed.search import space
    from speechbed.search.search_file import SearchFile

    grammar = "\n\n".join((space.__doc__ or "").split("\n\n")[2:5])
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="search file keys:\n" + describe_schema(SearchFile) + "\n\nspace:\n" + grammar,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-y", "--yml", required=True, type=Path, help="the search YAML")
    parser.add_argument("--num_workers", type=int, help="run N workers as a pipeline")
    parser.add_argument("--num_gpus", type=int, default=0, help="GPUs per worker")
    parser.add_argument("--run_in", choices=("host", "container", "slurm"), default="host")
    parser.add_argument("--gpus", help="GPU ids the workers' pipeline leases (e.g. 0,1)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # the pipeline's job index
    parser.add_argument("--best", action="store_true", help="write the best settings (-o)")
    parser.add_argument(
        "--independent", action="store_true", help="--best: each parameter's lowest-median value"
    )
    parser.add_argument("--seeds", default="1,2,3", help="--best: seeds of the sweep (1,2,3)")
    parser.add_argument("--important", action="store_true", help="write an include list (-o)")
    parser.add_argument("--top-k", "--top_k", type=int, default=5, help="--important: how many")
    parser.add_argument(
        "--evaluator", choices=("fanova", "ped-anova"), default="fanova", help="--important"
    )
    parser.add_argument(
        "--report", action="store_true", help="write the trials table, best trials and figures"
    )
    parser.add_argument("-o", "--output", type=Path, help="file --best/--important write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = _arguments(argv)
    fill_storage_defaults()
    from speechbed.search.search_file import load_search

    try:
        search = load_search(arguments.yml)
        if arguments.num_workers is not None:
            return _launch(arguments, search)
        if arguments.report:
            return _report(search)
        if arguments.best or arguments.important:
            _read_study(arguments, search)
        else:
            from speechbed.search.worker import run_worker

            run_worker(search, worker=arguments.worker or 0)
        _report_lineage(arguments, search)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _report_lineage(arguments: argparse.Namespace, search) -> None:
    """Tell the pipeline runner that started this job what it read and wrote."""
    from speechbed.lineage import Lineage
    from speechbed.outputs import write_text_atomic
    from speechbed.search.search_file import JOURNAL
    from speechbed.search.worker import study_folder
    from speechbed.step_runner import LINEAGE_FILE_VARIABLE

    target = os.environ.get(LINEAGE_FILE_VARIABLE, "").strip()
    if not target:
        return
    inputs, outputs = list(search.stage_inputs), []
    if arguments.best or arguments.important:
        if search.settings.storage == JOURNAL:
            inputs.append(study_folder(search).journal)
        outputs.append(arguments.output)
    lineage = Lineage.measure(inputs, outputs, {}, os.environ, repository_root())
    write_text_atomic(target, json.dumps(lineage.to_json(), indent=1) + "\n")


def _launch(arguments: argparse.Namespace, search) -> int:
    from speechbed.pipeline.cli import main as run_pipeline
    from speechbed.run_folder import StudyFolder
    from speechbed.search.storage import check_parallel_storage, describe_storage
    from speechbed.search.workers_pipeline import write_workers_pipeline
    from speechbed.storage import storage_directory

    if arguments.num_workers < 1 or arguments.num_gpus < 0:
        raise UserInputError("num_workers must be >= 1 and num_gpus >= 0")
    check_parallel_storage(search.settings.storage, arguments.num_workers)
    root = repository_root()
    folder = StudyFolder.of(storage_directory("ARTIFACTS_DIRECTORY", root), search.study)
    pipeline = write_workers_pipeline(
        arguments.yml,
        search.study,
        folder.pipeline,
        root,
        arguments.num_workers,
        arguments.num_gpus,
        arguments.run_in,
    )
    print(f"study {search.study} in {describe_storage(search.settings.storage, folder.journal)}")
    print(
        f"running {arguments.num_workers} worker(s): scripts/pipeline.py -y {pipeline}", flush=True
    )
    # In this process, not a child: killing this command kills the runner and its workers.
    return run_pipeline(
        ["-y", str(pipeline)] + (["--gpus", arguments.gpus] if arguments.gpus else [])
    )


def _report(search) -> int:
    from speechbed.search.report import write_report
    from speechbed.search.worker import open_study, study_folder

    study = open_study(search, create=False)
    report = write_report(study, study_folder(search))
    best = "" if report.best_value is None else f"; best trial {report.best_number}: "
    best += "" if report.best_value is None else f"dev PER {report.best_value:.4f}"
    print(f"study {search.study}: {report.complete} complete trial(s){best}")
    for path in report.files:
        print(f"written: {path}")
    return 0


def _read_study(arguments: argparse.Namespace, search) -> None:
    from speechbed.outputs import write_text_atomic
    from speechbed.search import results
    from speechbed.search.worker import open_study

    if arguments.output is None:
        raise UserInputError("--best and --important write a file: give -o FILE.yml")
    study = open_study(search, create=False)
    if arguments.best:
        seeds = [int(seed) for seed in arguments.seeds.split(",") if seed.strip()]
        text = results.best_experiment(search, study, arguments.independent, seeds)
    else:
        text = results.include_list(search, study, arguments.top_k, arguments.evaluator)
    write_text_atomic(arguments.output, text)
    print(text, end="")
    print(f"written: {arguments.output}")


if __name__ == "__main__":
    raise SystemExit(main())
