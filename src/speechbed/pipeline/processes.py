"""Job processes: started in their own process group, told to die with the runner, watched, read.

Used by the scheduler, which decides when a job starts and ends; this module says how.

- Each job is its own process group, so a terminal's Ctrl-C reaches the runner only and
  ``signal_group`` ends a job with everything it started.
- On Linux a job gets SIGTERM if the runner dies (``PR_SET_PDEATHSIG``), set by
  ``setpriv`` when it exists (which keeps subprocess's fast vfork path), else by a
  ``prctl`` preexec function.
- The runner's watchdog (``speechbed.pipeline.watchdog``, started with the first job) is
  told each job's group and lease descriptors as it starts and again once it is reaped.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from speechbed.pipeline.launch import Launch
from speechbed.pipeline.watchdog import JobWatchdog

PARTIAL_LINE_LIMIT = 8192  # a line longer than this is shown in pieces
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class DeathSignal:
    """How a job is told to die with its runner: an argv prefix, or a preexec function."""

    prefix: tuple[str, ...] = ()
    preexec: Callable[[], None] | None = None

    @property
    def signals(self) -> bool:
        return bool(self.prefix) or self.preexec is not None


def death_signal() -> DeathSignal:
    """``setpriv --pdeathsig TERM --`` when available (it keeps subprocess's fast vfork
    path), else a ``prctl`` preexec function (forces fork: ~5 ms more per job), else nothing."""
    if not sys.platform.startswith("linux"):
        return DeathSignal()
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        probe = subprocess.run(
            [setpriv, "--pdeathsig", "TERM", "--", "true"], capture_output=True, check=False
        )
        if probe.returncode == 0:
            return DeathSignal(prefix=(setpriv, "--pdeathsig", "TERM", "--"))
    return DeathSignal(preexec=_death_signal_hook())


def _death_signal_hook() -> Callable[[], None] | None:
    """A preexec function that asks Linux to SIGTERM the child when the runner dies."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    runner = os.getpid()

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != runner:  # the runner died between fork and prctl
            os.kill(os.getpid(), signal.SIGTERM)

    return set_death_signal


def signal_group(pid: int, number: int) -> None:
    """Send ``number`` to the process group led by ``pid``; a group already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, number)


def open_log(path: Path, launch: Launch, devices: list[int]) -> int:
    """The job's log, truncated, starting with its command line; a file descriptor."""
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    header = (
        f"$ {shlex.join(launch.argv)}\n"
        f"# CUDA_VISIBLE_DEVICES={','.join(map(str, devices))} cwd={launch.cwd}\n"
    )
    os.write(log, header.encode())
    return log


@dataclass
class JobProcess:
    """A started job: its process, its log, and the pidfd that says when it exits."""

    popen: subprocess.Popen[bytes]
    log: int  # file descriptor of the job's log
    pidfd: int | None
    partial: bytes = b""
    pipe_open: bool = True

    def read_lines(self) -> tuple[list[str], bool]:
        """The complete lines available now (each also written to the log), as a terminal
        would end up showing them, and whether the output reached its end."""
        assert self.popen.stdout is not None
        shown: list[str] = []
        while True:
            try:
                chunk = os.read(self.popen.stdout.fileno(), 65536)
            except BlockingIOError:
                return shown, False
            if not chunk:
                return shown, True
            os.write(self.log, chunk)
            lines = (self.partial + chunk).split(b"\n")
            self.partial = lines.pop()
            if len(self.partial) > PARTIAL_LINE_LIMIT:
                lines.append(self.partial)
                self.partial = b""
            shown += [_shown(line) for line in lines]

    def last_line(self) -> str | None:
        """The output's last line when it had no newline (once)."""
        rest, self.partial = self.partial, b""
        return _shown(rest) if rest else None

    def close_pipe(self) -> None:
        assert self.popen.stdout is not None
        self.pipe_open = False
        self.popen.stdout.close()

    def close(self, ending: str) -> None:
        """Write ``ending`` as the log's last line; close the log and the pidfd."""
        with contextlib.suppress(OSError):
            os.write(self.log, f"\n# {ending}\n".encode())
        os.close(self.log)
        if self.pidfd is not None:
            os.close(self.pidfd)


def _shown(line: bytes) -> str:
    # A progress bar rewrites its line with \r: show what a terminal would end up showing.
    return line.rstrip(b"\r").rsplit(b"\r", 1)[-1].decode("utf-8", "replace")


class JobProcesses:
    """Starts the jobs of one run and keeps the watchdog informed; ``close`` when the run ends."""

    def __init__(self, kill_grace: float, message: Callable[[str], None]) -> None:
        self.kill_grace = kill_grace
        self.message = message
        self._death_signal: DeathSignal | None = None  # found when the first job starts
        self._watchdog: JobWatchdog | None = None  # started with the first job
        self._watchdog_tried = False

    def start(self, launch: Launch, log: int, leases: list[int]) -> JobProcess:
        """Start ``launch`` in its own group; it inherits the lease descriptors ``leases``,
        so the lease lasts while the job holds it, runner or not."""
        if self._death_signal is None:
            self._death_signal = death_signal()
        watchdog = self._job_watchdog()
        process = subprocess.Popen(
            [*self._death_signal.prefix, *launch.argv],
            cwd=launch.cwd,
            env=launch.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0,  # its own group: terminal Ctrl-C goes to the runner only
            preexec_fn=self._death_signal.preexec,
            pass_fds=leases,
        )
        if watchdog is not None:
            watchdog.watch(process.pid, leases, signal_leader=not self._death_signal.signals)
        pidfd = None
        if hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):
                pidfd = os.pidfd_open(process.pid)
        assert process.stdout is not None
        os.set_blocking(process.stdout.fileno(), False)
        return JobProcess(process, log, pidfd)

    def reaped(self, pid: int, holds_leases: bool) -> None:
        """Tell the watchdog that the job led by ``pid`` was reaped."""
        if self._watchdog is not None:
            self._watchdog.forget(pid, holds_leases=holds_leases)

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.close()
            self._watchdog = None

    def _job_watchdog(self) -> JobWatchdog | None:
        """The watchdog, started with the first job; None (said once) when it cannot start."""
        if not self._watchdog_tried:
            self._watchdog_tried = True
            try:
                self._watchdog = JobWatchdog(self.kill_grace, self.message)
            except OSError as error:
                self.message(
                    f"warning: cannot start the job watchdog ({error}); if this runner is "
                    "killed, processes its jobs started may outlive it"
                )
        return self._watchdog
