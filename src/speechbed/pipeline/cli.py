"""The pipeline command line: ``python scripts/pipeline.py -y PIPELINE.yml [options]``.

``scripts/pipeline.py`` and ``make pipeline`` call ``main``; tests call it in-process too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from speechbed.errors import UserInputError
from speechbed.jobs import describe_schema
from speechbed.outputs import write_text_atomic
from speechbed.pipeline import stages
from speechbed.pipeline.display import PipelineDisplay
from speechbed.pipeline.executors import EXECUTOR_FACTORIES
from speechbed.pipeline.inventory import discover_gpus
from speechbed.pipeline.leases import GpuLeases, default_lease_dir
from speechbed.pipeline.loader import RUN_IN_VARIABLE, artifacts_directory, load_pipeline
from speechbed.pipeline.records import JobStatus, exit_code
from speechbed.pipeline.scheduler import FORCE_VARIABLE, Scheduler
from speechbed.pipeline.schema import PipelineFile, PipelineStep
from speechbed.pipeline.state import NESTED_PIPELINE, JobState
from speechbed.step_runner import LINEAGE_FILE_VARIABLE
from speechbed.storage import fill_storage_defaults, repository_root

DESCRIPTION = """Run a pipeline: a YAML list of `python SCRIPT -y CONFIG ARGS...` steps, scheduled
onto GPUs with exclusive leases, with logs, resume and a summary."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline.py",
        description=DESCRIPTION,
        epilog="pipeline file keys:\n"
        + describe_schema(PipelineFile).split("\n  jobs:")[0]
        + "\n  jobs: list of steps, each with:\n"
        + describe_schema(PipelineStep, indent="    "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-y", "--yml", required=True, type=Path, help="the pipeline YAML file")
    parser.add_argument(
        "--gpus",
        help="GPU ids to lease, e.g. 0,1 (default: SPEECHBED_GPUS, CUDA_VISIBLE_DEVICES, nvidia-smi -L)",
    )
    parser.add_argument(
        "--num_jobs", "--num-jobs", type=int, help="jobs at once (default: the file's num_jobs)"
    )
    parser.add_argument("--force", action="store_true", help="rerun jobs already done")
    parser.add_argument(
        "--dry-run", "--dry_run", action="store_true", help="print the plan; start nothing"
    )
    parser.add_argument(
        "--keep-going",
        "--keep_going",
        action="store_true",
        help="after a failure, still run every job not behind a failed barrier",
    )
    parser.add_argument(
        "--run_in",
        "--run-in",
        choices=sorted(EXECUTOR_FACTORIES),
        help="run every job (and the jobs of nested pipelines) with this executor; "
        "default: SPEECHBED_RUN_IN, else each job's run_in",
    )
    parser.add_argument(
        "--from",
        dest="first",
        metavar="NAME",
        help="start at this job (a name or path at any depth of nested pipelines; see stages)",
    )
    parser.add_argument("--to", dest="last", metavar="NAME", help="stop after this job")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME[,NAME...]",
        help="run only these jobs (a nested pipeline: all of its jobs)",
    )
    parser.add_argument(
        "--kill-grace",
        type=float,
        default=10.0,
        help="seconds between SIGTERM and SIGKILL when interrupted (default 10)",
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
) -> int:
    """Plan and run one pipeline; returns the exit code (0 done, 1 failed, 2 bad input, 128+N)."""
    arguments = _parser().parse_args(argv)
    if arguments.kill_grace < 0:
        print("error: --kill-grace must be 0 or more seconds", file=sys.stderr)
        return 2
    environ = dict(os.environ if environ is None else environ)
    if arguments.run_in:  # in the jobs' environment too, so nested pipelines follow
        environ[RUN_IN_VARIABLE] = arguments.run_in
    # As make's default.sh does: job files name ${ARTIFACTS_DIRECTORY} and the like.
    fill_storage_defaults(environ)
    display = PipelineDisplay(stream)
    try:
        gpus, gpu_source = discover_gpus(arguments.gpus, environ)
        root = repository_root(environ)
        artifacts = artifacts_directory(environ, root)
        pipeline = load_pipeline(
            arguments.yml, environ, gpus, root, artifacts, num_jobs=arguments.num_jobs
        )
        state = JobState(artifacts / "pipelines" / "state", environ, root)
        force = arguments.force or environ.get(FORCE_VARIABLE) == "1"
        slicing = bool(arguments.first or arguments.last or arguments.only)
        tree = (
            stages.pipeline_tree(pipeline, environ, gpus, root, artifacts)
            if slicing or arguments.dry_run
            else []
        )
        picked = (
            stages.select_stages(tree, arguments.first, arguments.last, arguments.only)
            if tree
            else set()
        )
        if arguments.dry_run:
            nodes = [node for top in tree for node in top.walk()]
            reasons = {
                node.job.key: "--force" if force else state.why_run(node.job.key) for node in nodes
            }
            display.plan(
                pipeline.name, [node.job for node in nodes], reasons, gpus, gpu_source,
                state.state_dir,
                depths={node.job: node.depth for node in nodes},
                left_out={node.job for node in nodes if not any(
                    leaf.path in picked for leaf in node.leaves())},
            )  # fmt: skip
            return 0
        if slicing:
            pipeline = stages.restrict(pipeline, tree, picked)
            display.message(
                f"stages: {len(picked)} of {sum(len(top.leaves()) for top in tree)} job(s) "
                f"picked; {len(pipeline.jobs)} of this pipeline's run"
            )
        leases = GpuLeases(default_lease_dir(environ))
        if gpus:
            leases.prepare()
        scheduler = Scheduler(
            pipeline,
            gpus,
            leases,
            state,
            display,
            base_env=environ,
            force=force,
            keep_going=arguments.keep_going,
            kill_grace=arguments.kill_grace,
        )
        display.message(
            f"pipeline {pipeline.name}: {len(pipeline.jobs)} job(s), num_jobs={pipeline.num_jobs}, "
            f"GPUs {','.join(map(str, gpus)) or 'none'} (from {gpu_source}), "
            f"logs {artifacts / 'logs' / pipeline.name}"
        )
        already_done = sum(record.status == JobStatus.SKIPPED for record in scheduler.records)
        if already_done:
            display.message(
                f"{already_done} job(s) already done by an earlier run: skipped (--force reruns them)"
            )
        records = scheduler.run()
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C while planning, before any job started
        print("interrupted before any job started", file=sys.stderr)
        return 130
    display.summary(pipeline.name, records)
    code = exit_code(records, scheduler.interrupted_by)
    if code:
        display.message(f"pipeline {pipeline.name} did not complete (exit {code})")
    elif environ.get(LINEAGE_FILE_VARIABLE):  # run as a job of an outer pipeline
        write_text_atomic(environ[LINEAGE_FILE_VARIABLE], json.dumps({NESTED_PIPELINE: True}))
    return code
