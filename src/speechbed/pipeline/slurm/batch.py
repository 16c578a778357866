"""What a Slurm job runs on its compute node: the job's own command, with SIGUSR1 made a requeue.

The batch script (``commands.BATCH_SCRIPT``) execs ``python -m speechbed.pipeline.slurm.batch
--cwd ROOT --max-requeues N -- ARGV``, built by the Slurm executor.

Slurm sends SIGUSR1 to this process (``--signal=B:USR1@seconds``) before the job's time
limit, and a preempting cluster does the same before it takes the node. It is passed to the
job, which checkpoints and exits (the training script does; any other script just ends),
and the job is then requeued (``scontrol requeue``) to start again, from its newest
checkpoint, up to ``--max-requeues`` times (``SLURM_RESTART_COUNT`` counts them).

An element of a job array (``--array-file SIDECAR``) takes its argv and its own variables
(its job name, its lineage file) from the array's sidecar file, at ``SLURM_ARRAY_TASK_ID``.

When the job ends (not when it is requeued) its exit status is recorded beside its output
file (``commands.exit_record``: ``--exit-record`` for a single job, the element's output for
an element), for a watcher that asks after Slurm has forgotten the job.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from speechbed.pipeline.slurm.arrays import ArraySidecar
from speechbed.pipeline.slurm.commands import write_exit_record

REQUEUE_WAIT_SECONDS = 120  # Slurm kills a requeued job's batch step long before this


def _say(text: str) -> None:
    print(f"[slurm batch] {text}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m speechbed.pipeline.slurm.batch")
    parser.add_argument("--cwd", required=True, type=Path, help="the repository root")
    parser.add_argument("--max-requeues", type=int, default=3)
    parser.add_argument("--array-file", type=Path, help="a job array's sidecar file")
    parser.add_argument("--output", type=Path, help="Slurm's output file of a single job")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the job's argv")
    arguments = parser.parse_args(argv)
    command = arguments.command[1:] if arguments.command[:1] == ["--"] else arguments.command
    environ = dict(os.environ)
    output, job_id = arguments.output, os.environ.get("SLURM_JOB_ID", "")
    if arguments.array_file is not None:
        task = os.environ.get("SLURM_ARRAY_TASK_ID", "")
        try:
            sidecar = ArraySidecar.read(arguments.array_file)
            element = sidecar.elements[int(task)]
        except (ValueError, IndexError) as error:
            _say(f"error: no job for array task {task!r} in {arguments.array_file}: {error}")
            return 2
        command = element.argv
        environ.update(element.env)
        output = sidecar.output(task)
        job_id = f"{os.environ.get('SLURM_ARRAY_JOB_ID')}_{task}"
    code, requeued = _run_job(arguments, command, environ, job_id)
    if not requeued and output is not None:
        write_exit_record(output, job_id, code)
    return code


def _run_job(
    arguments: argparse.Namespace, command: list[str], environ: dict[str, str], job_id: str
) -> tuple[int, bool]:
    """Run the job's command: its exit status, and whether the job was requeued (then it
    runs again, and Slurm ends this run itself)."""
    if not command:
        _say("error: no command after --")
        return 2, False
    if not arguments.cwd.is_dir() or Path.cwd().resolve() != arguments.cwd.resolve():
        _say(
            f"error: the repository {arguments.cwd} is not visible on {os.uname().nodename}: "
            "the repository and the storage folders must lie on a filesystem the compute nodes share"
        )
        return 2, False
    warned = False
    started: list[subprocess.Popen[bytes]] = []

    def on_usr1(number: int, frame: object) -> None:
        nonlocal warned
        warned = True
        _say("SIGUSR1 (time limit or preemption near): passing it to the job")
        for child in started:
            child.send_signal(number)

    def on_term(number: int, frame: object) -> None:
        for child in started:
            child.send_signal(number)

    signal.signal(signal.SIGUSR1, on_usr1)  # before the start: no signal may find no handler
    signal.signal(signal.SIGTERM, on_term)
    started.append(subprocess.Popen(command, env=environ))
    child = started[0]
    returncode = child.wait()
    code = returncode if returncode >= 0 else 128 - returncode
    if not warned or returncode == 0:
        return code, False
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    if restarts >= arguments.max_requeues:
        _say(
            f"error: requeued {restarts} time(s) already (SPEECHBED_SLURM_MAX_REQUEUES="
            f"{arguments.max_requeues}); the job fails instead"
        )
        return code or 1, False
    # (an element's job id is ARRAY_TASK: its own id may be the array's)
    requeue = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
    if requeue.returncode != 0:
        _say(f"error: scontrol requeue {job_id} failed: {requeue.stderr.strip()}")
        return code or 1, False
    _say(f"requeued job {job_id} (restart {restarts + 1}); it resumes from its newest checkpoint")
    # Slurm ends this run itself; exiting first would record the job as failed, not requeued.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    time.sleep(REQUEUE_WAIT_SECONDS)
    return code, True


if __name__ == "__main__":
    sys.exit(main())
