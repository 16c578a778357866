"""The local process of one Slurm job: submits it (or adopts it), streams its output, waits for it.

Started by the pipeline scheduler as the Slurm executor's ``Launch`` (``python -m
speechbed.pipeline.slurm.watcher ... -- SBATCH ARGV``), so the scheduler keeps owning a
process per job, its log, its signals and its watchdog, as for the host executor.

- A job still queued or running whose ``--comment`` holds this job's key, or an element of
  an earlier job array whose sidecar lists it (a runner that died left it), is adopted
  instead of submitted again.
- An element of a job array (``--array-file``) shares one submission with the other
  elements' watchers (``speechbed.pipeline.slurm.arrays.submit_once``) and watches its own
  element, ``ARRAY_INDEX``.
- Slurm's output file of the job is copied to stdout as it grows: the runner writes it to the
  job's log and the console, as on the host.
- The job's state is read with ``scontrol show job`` (no accounting needed), or, once
  Slurm has purged a finished job (``MinJobAge``), from the exit record its batch step
  left beside its output (``commands.exit_record``); the watcher exits with the job's exit
  code, and writes the Slurm job id and, for TIMEOUT, OUT_OF_MEMORY, NODE_FAIL and the
  like, the reason to ``--status`` for the summary.
- SIGTERM from the runner (Ctrl-C, ``--kill-grace``) cancels the job. SIGTERM because the
  runner died (its death signal; the watcher's parent has changed) leaves the job running, so
  the next run adopts it.
- A job that Slurm cancelled because a job it waited for (``afterok``) failed waits for the
  runner, which cancels it too and records it as not started, as on the host.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from speechbed.outputs import write_text_atomic
from speechbed.pipeline.slurm.arrays import ArraySidecar, earlier_elements, submit_once
from speechbed.pipeline.slurm.commands import (
    BATCH_SCRIPT,
    COMMENT_PREFIX,
    JobInfo,
    active_job_with_comment,
    cancel_command,
    exit_record,
    parse_job,
    read_exit_record,
    show_job_command,
    squeue_command,
    submitted_job_id,
)

TAIL_SECONDS = 0.1  # how often the output file is read
CANCEL_WAIT_SECONDS = 5.0  # how long a cancelled job may take to reach its final state
DEPENDENCY_WAIT_SECONDS = 120.0  # how long a job whose dependency failed waits for the runner
COMMAND_TIMEOUT_SECONDS = 60


def _say(text: str) -> None:
    sys.stdout.buffer.write(f"[slurm] {text}\n".encode())
    sys.stdout.buffer.flush()


def _run(command: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a Slurm command; a missing command or a hang is a failed result, not an exception."""
    try:
        return subprocess.run(
            list(command),
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return subprocess.CompletedProcess(list(command), 255, "", str(error))


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


class OutputTail:
    """Copies what is appended to a file to stdout (from its start: an adopted job's too)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def copy(self) -> None:
        try:
            with open(self.path, "rb") as stream:
                size = os.fstat(stream.fileno()).st_size
                if size < self.offset:  # truncated: start over
                    self.offset = 0
                stream.seek(self.offset)
                chunk = stream.read()
        except FileNotFoundError:
            return
        if chunk:
            self.offset += len(chunk)
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()


class Watcher:
    """One Slurm job from submission (or adoption) to its final state."""

    def __init__(self, arguments: argparse.Namespace) -> None:
        self.arguments = arguments
        self.output = Path(arguments.output)
        self.status = Path(arguments.status)
        self.parent = os.getppid()
        self.stop_signal: int | None = None
        self.job_id: str | None = None
        self.array_job_id: str | None = None  # set when this job is an element of an array

    def _on_signal(self, number: int, frame: object) -> None:
        self.stop_signal = number

    def _write_status(self, **status: object) -> None:
        with contextlib.suppress(OSError):
            ids = {"job_id": self.job_id, "array_job_id": self.array_job_id}
            write_text_atomic(self.status, json.dumps({**ids, **status}) + "\n")

    def run(self) -> int:
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(number, self._on_signal)
        with contextlib.suppress(FileNotFoundError):
            self.status.unlink()
        if self.arguments.array_file:
            failure = self._join_array()
            return self._failed(failure) if failure is not None else self._watch()
        found = _run(squeue_command())
        if found.returncode != 0:
            return self._failed(
                f"squeue failed, is the Slurm controller up? {_first_line(found.stderr)}"
            )
        self.job_id = active_job_with_comment(found.stdout, self.arguments.comment)
        if self.job_id is None:
            key = self.arguments.comment.removeprefix(COMMENT_PREFIX)
            earlier = earlier_elements(found.stdout, self.status.parent).get(key)
            if earlier is not None:
                self.job_id, self.output = earlier[0], earlier[1]
        if self.job_id is None and self.stop_signal is not None:
            return 128 + self.stop_signal  # interrupted before anything was submitted
        if self.job_id is not None:
            self._write_status(state="SUBMITTED")
            _say(f"adopting Slurm job {self.job_id}, still queued or running from an earlier run")
        else:
            failure = self._submit()
            if failure is not None:
                return self._failed(failure)
        return self._watch()

    def _join_array(self) -> str | None:
        """Submit the job array or find it submitted; the reason when that failed."""
        try:
            sidecar = ArraySidecar.read(Path(self.arguments.array_file))
        except ValueError as error:
            return str(error)

        def run(command: Sequence[str], stdin: str | None) -> tuple[int, str, str]:
            done = _run(command, stdin)
            return done.returncode, done.stdout, done.stderr

        record = submit_once(sidecar, self.arguments.sbatch, self.arguments.array_throttle, run)
        index = str(self.arguments.array_index)
        self.job_id = record.get("ids", {}).get(index)
        if self.job_id is None:
            failure = record.get("failure") or "the job array lists no job for it"
            return f"{failure} (job {self.arguments.name}, element {index} of a job array)"
        array_id = record.get("array_job_id")
        self.output = sidecar.output(index)
        if array_id and self.job_id == f"{array_id}_{index}":
            self.array_job_id = array_id
            self._write_status(state="SUBMITTED")
            _say(f"submitted as element {index} of Slurm job array {array_id}")
        else:
            earlier = record.get("outputs", {}).get(index) or self.arguments.single_output
            self.output = Path(earlier)
            self._write_status(state="SUBMITTED")
            _say(f"adopting Slurm job {self.job_id}, still queued or running from an earlier run")
        return None

    def _submit(self) -> str | None:
        """Submit the job; the reason when Slurm refused it."""
        for stale in (self.output, exit_record(self.output)):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()  # a new job's output starts empty (requeues append to it)
        if self.arguments.lineage:
            with contextlib.suppress(FileNotFoundError):
                Path(self.arguments.lineage[0]).unlink()
        submitted = _run(self.arguments.sbatch, stdin=BATCH_SCRIPT)
        if submitted.returncode != 0:
            return f"sbatch refused job {self.arguments.name}: {_first_line(submitted.stderr)}"
        try:
            self.job_id = submitted_job_id(submitted.stdout)
        except ValueError as error:
            return str(error)
        # Written before the line that announces it: that line wakes the runner, which reads
        # the id here to queue the jobs after a barrier behind this one.
        self._write_status(state="SUBMITTED")
        _say(f"submitted as Slurm job {self.job_id}")
        return None

    def _failed(self, reason: str) -> int:
        _say(f"error: {reason}")
        self._write_status(state="NOT_SUBMITTED", failure=reason)
        return 1

    def _query(self) -> JobInfo | str:
        """The job's state, or why it could not be read."""
        assert self.job_id is not None
        shown = _run(show_job_command(self.job_id))
        info = parse_job(shown.stdout) if shown.returncode == 0 else None
        return info if info is not None else _first_line(shown.stderr or shown.stdout)

    def _watch(self) -> int:
        tail = OutputTail(self.output)
        seen, unreachable, next_query = "", "", 0.0
        while True:
            tail.copy()
            if self.stop_signal is not None:
                return self._stop(tail)
            if time.monotonic() >= next_query:
                info = self._query()
                next_query = time.monotonic() + self.arguments.poll
                if isinstance(info, str):
                    if "Invalid job id" in info or "not found" in info:
                        return self._forgotten(info, tail)
                    if info != unreachable:
                        _say(f"warning: cannot read the job's state ({info}); retrying")
                    unreachable = info
                else:
                    unreachable = ""
                    if info.state != seen:
                        seen = info.state
                        where = f" on {info.node}" if info.node and info.state == "RUNNING" else ""
                        restarts = f", requeued {info.restarts}x" if info.restarts else ""
                        _say(f"job {self.job_id} {info.state}{where}{restarts}")
                    if info.state == "CANCELLED" and "Dependency" in info.reason:
                        return self._never_started(info, tail)
                    if info.final:
                        return self._finished(info, tail)
            time.sleep(TAIL_SECONDS)

    def _forgotten(self, why: str, tail: OutputTail) -> int:
        """The controller no longer lists the job: it ended ``MinJobAge`` seconds or more
        ago (a late watcher: an element whose turn came after it ran), or it never ran. Its
        batch step's exit record says how it ended; without one, the job failed."""
        assert self.job_id is not None
        code = read_exit_record(self.output, self.job_id)
        if code is None:
            return self._failed(f"Slurm job {self.job_id} is gone from the controller ({why})")
        _say(f"job {self.job_id} ended before Slurm was asked (its record is gone); exit {code}")
        state = "COMPLETED" if code == 0 else "FAILED"
        return self._finished(JobInfo(state=state, exit_code=code), tail)

    def _finished(self, info: JobInfo, tail: OutputTail) -> int:
        time.sleep(TAIL_SECONDS)  # the last lines may land just after the state changes
        tail.copy()
        if info.state == "COMPLETED" and self.arguments.lineage:
            handed, expected = self.arguments.lineage
            with contextlib.suppress(FileNotFoundError):
                os.replace(handed, expected)
        failure = info.failure()
        if failure:
            _say(f"job {self.job_id} ended {failure}")
        self._write_status(state=info.state, failure=failure, exit_code=info.returncode())
        return info.returncode()

    def _never_started(self, info: JobInfo, tail: OutputTail) -> int:
        """Slurm cancelled the job, never started, because a job it waited for failed. The
        runner sees that failure too and stops this watcher to record the job as not
        started (as on the host); exiting first would record it as failed."""
        _say(f"job {self.job_id} {info.failure()}: a job before it failed")
        deadline = time.monotonic() + DEPENDENCY_WAIT_SECONDS
        while self.stop_signal is None and time.monotonic() < deadline:
            time.sleep(TAIL_SECONDS)
        if self.stop_signal is None:
            return self._finished(info, tail)
        self._write_status(state=info.state, failure="not started: a job before it failed")
        return 128 + self.stop_signal

    def _stop(self, tail: OutputTail) -> int:
        assert self.stop_signal is not None
        if os.getppid() != self.parent:  # the runner died: leave the job to the next run
            self._write_status(state="LEFT_RUNNING")
            return 128 + self.stop_signal
        assert self.job_id is not None
        # An element cancels its whole array: the runner stops every element (interrupted,
        # or held back behind a failure), also those it has no watcher for yet (num_jobs).
        target = self.array_job_id or self.job_id
        cancelled = _run(cancel_command(target))
        if cancelled.returncode != 0:
            _say(f"warning: scancel {target} failed: {_first_line(cancelled.stderr)}")
        else:
            _say(f"cancelled Slurm job {target}")
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        while time.monotonic() < deadline:
            info = self._query()
            if isinstance(info, JobInfo) and info.final:
                break
            time.sleep(0.2)
        tail.copy()
        self._write_status(state="CANCELLED", failure="CANCELLED (runner interrupted)")
        return 128 + self.stop_signal


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m speechbed.pipeline.slurm.watcher", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--name", required=True, help="the job's name, for messages")
    parser.add_argument("--comment", required=True, help="the job's --comment (holds its key)")
    parser.add_argument("--output", required=True, help="Slurm's output file of the job")
    parser.add_argument("--status", required=True, help="where to write the job id and ending")
    parser.add_argument("--poll", type=float, default=10.0, help="seconds between state queries")
    parser.add_argument(
        "--lineage", nargs=2, metavar=("HANDED", "EXPECTED"), help="move the job's lineage file"
    )
    parser.add_argument("--array-file", help="the sidecar file of the job array it is part of")
    parser.add_argument("--array-index", type=int, default=0, help="its index in the array")
    parser.add_argument("--array-throttle", type=int, default=1, help="elements run at once")
    parser.add_argument("--single-output", help="its output file when run as a single job")
    parser.add_argument("sbatch", nargs=argparse.REMAINDER, help="-- then the sbatch command")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    if arguments.sbatch[:1] == ["--"]:
        arguments.sbatch = arguments.sbatch[1:]
    if not arguments.sbatch:
        print("error: no sbatch command after --", file=sys.stderr)
        return 2
    return Watcher(arguments).run()


if __name__ == "__main__":
    raise SystemExit(main())
