"""Running a step script's jobs: the command line every script shares, output locks, lineage.

Every script in ``scripts/`` that reads a job file ends with ``run_jobs_cli(Schema, run, __doc__)``.

Each job runs holding an ``OutputLock`` on each of its outputs (so a second process producing
the same output waits, then finds it done); its inputs are fingerprinted once the locks are
held and its outputs when it is done, and the merged lineage is handed to the pipeline runner
through the file ``SPEECHBED_LINEAGE_FILE`` names (``speechbed.pipeline.state`` keeps it).
Bad input is one line and exit 2 when every failure was storage that could not take an output,
exit 1 otherwise; a bug keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from speechbed.errors import UserInputError
from speechbed.jobs import JobSchema, Schema, describe_schema, load_jobs
from speechbed.lineage import Lineage
from speechbed.outputs import (
    STORAGE_ERRNOS,
    OutputError,
    OutputLock,
    describe_os_error,
    write_text_atomic,
)
from speechbed.storage import fill_storage_defaults, repository_root

LINEAGE_FILE_VARIABLE = "SPEECHBED_LINEAGE_FILE"


@dataclass(frozen=True)
class JobContext:
    """Where a job came from and how the script was asked to run it."""

    source: Path
    index: int
    force: bool = False


def run_jobs_cli(
    schema: type[Schema],
    run: Callable[[Schema, JobContext], None],
    description: str | None,
    argv: Sequence[str] | None = None,
) -> int:
    """The command line of every step script: ``SCRIPT -y FILE.yml [--force]``; returns the exit code."""
    parser = argparse.ArgumentParser(
        description=description,
        epilog="job file keys:\n" + describe_schema(schema),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-y", "--yml", required=True, type=Path, help="the YAML job file")
    parser.add_argument(
        "--force", action="store_true", help="redo jobs whose outputs are already up to date"
    )
    arguments = parser.parse_args(argv)
    fill_storage_defaults()  # run directly, a script sees the folders `make` would give it
    try:
        jobs = load_jobs(arguments.yml, schema)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    failed = storage_failures = 0
    lineage = Lineage()
    for index, job in enumerate(jobs):
        context = JobContext(source=arguments.yml, index=index, force=arguments.force)
        try:
            lineage.merge(run_with_lineage(job, context, run))
        except OutputError as error:  # storage that cannot be written: bad input, exit 2
            print(f"error: {arguments.yml}: job {index}: {error}", file=sys.stderr)
            failed += 1
            storage_failures += 1
        except UserInputError as error:
            print(f"error: {arguments.yml}: job {index}: {error}", file=sys.stderr)
            failed += 1
        except OSError as error:
            if error.errno not in STORAGE_ERRNOS:
                traceback.print_exc()
                print(
                    f"error: {arguments.yml}: job {index} failed (traceback above)", file=sys.stderr
                )
            else:  # a full disk or read-only folder deep inside a library call
                where = error.filename or "an output"
                print(
                    f"error: {arguments.yml}: job {index}: {describe_os_error(error, where)}",
                    file=sys.stderr,
                )
                storage_failures += 1
            failed += 1
        except Exception:  # a bug, not bad input: keep the traceback, go on with the next job
            traceback.print_exc()
            print(f"error: {arguments.yml}: job {index} failed (traceback above)", file=sys.stderr)
            failed += 1
    if failed:
        print(f"{failed} of {len(jobs)} job(s) failed", file=sys.stderr)
        return 2 if storage_failures == failed else 1
    return _report_lineage(lineage)


def run_with_lineage(
    job: Schema, context: JobContext, run: Callable[[Schema, JobContext], None]
) -> Lineage:
    """Run one job holding the locks of its outputs; measure what it read and wrote.

    Another process producing the same output is waited for; the job then runs and its own
    up-to-date check finds the output done. Inputs are fingerprinted once the locks are held.
    """
    if int(os.environ.get("RANK", "0")) > 0:
        # a data-parallel training rank but the first (torchrun, Slurm): rank 0 holds the
        # output locks and measures the lineage; this one only trains beside it
        run(job, context)
        return Lineage()
    inputs, outputs = job.lineage_paths() if isinstance(job, JobSchema) else ([], [])
    versions = job.code_versions if isinstance(job, JobSchema) else {}
    with contextlib.ExitStack() as locks:
        for path in sorted({Path(os.path.abspath(path)) for path in outputs}):
            locks.enter_context(OutputLock(path, who=f"{context.source}: job {context.index}"))
        root = repository_root()
        before = Lineage.measure(inputs, [], versions, os.environ, root)
        run(job, context)
        after = Lineage.measure([], outputs, versions, os.environ, root)
    before.outputs = after.outputs
    return before


def _report_lineage(lineage: Lineage) -> int:
    """Hand the lineage to the pipeline runner that started us (``SPEECHBED_LINEAGE_FILE``)."""
    if int(os.environ.get("RANK", "0")) > 0:
        return 0  # rank 0 reports the job's lineage
    target = os.environ.get(LINEAGE_FILE_VARIABLE, "").strip()
    if not target:
        return 0
    try:
        write_text_atomic(target, json.dumps(lineage.to_json(), indent=1) + "\n")
    except OutputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
