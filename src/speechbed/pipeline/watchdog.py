"""The runner's watchdog: a small process that ends a pipeline's jobs when their runner dies.

The scheduler starts one (``JobWatchdog``) with its first job; run as a script, it is the watchdog.

A job's main process gets SIGTERM when the runner dies (``PR_SET_PDEATHSIG``), but nothing
tells the other processes of its group, and a runner killed with SIGKILL cannot. So the
runner tells this process, over a socket, each job's process group as it starts (with
copies of the job's GPU lease descriptors) and again once it has reaped the job. When the
socket closes without the runner having reaped its jobs, the runner is gone, and for each
job still watched the watchdog does what the runner would have done: SIGTERM (unless the
death signal already sent it), SIGKILL to the whole group once the main process has exited
or ``grace`` seconds have passed, and it keeps the job's leases until no process of the
group is left, so another pipeline cannot start on a GPU that is still in use.

It lives in its own session (a signal for the runner's group or terminal does not reach
it), ignores SIGINT/SIGTERM/SIGHUP, and imports only the standard library (``python -I
-S``), so starting it costs one short process per pipeline run, not per job.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MAX_MESSAGE = 256
MAX_DESCRIPTORS = 64  # lease descriptors sent with one job
ACK_TIMEOUT_SECONDS = 2.0
CLOSE_WAIT_SECONDS = 1.0
FIRST_POLL_SECONDS = 0.01  # how soon a group the watchdog waits on is checked again...
LAST_POLL_SECONDS = 0.25  # ...doubling up to this, for a process slow to die


# ---------------------------------------------------------------------- the runner's side


class JobWatchdog:
    """The runner's end: starts the watchdog process and tells it about each job.

    Every method carries on when the watchdog is gone; ``warn`` is told once.
    """

    def __init__(self, grace: float, warn: Callable[[str], None]) -> None:
        self._warn = warn
        self._broken = False
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-S", __file__, repr(float(grace)), str(os.getpid())],
                stdin=theirs,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.settimeout(ACK_TIMEOUT_SECONDS)
        self._channel = ours

    def watch(self, pgid: int, leases: Sequence[int], signal_leader: bool) -> None:
        """A job started in group ``pgid``; ``signal_leader`` when it has no death signal."""
        self._send(f"watch {pgid} {int(signal_leader)}".encode(), leases)

    def forget(self, pgid: int, holds_leases: bool) -> None:
        """The runner reaped the job (and SIGKILLed its group).

        With leases, waits until the watchdog has dropped its copies (unless a process of the
        group still lives), so the runner can lease the same GPUs again at once.
        """
        if not self._send(f"forget {pgid} {int(holds_leases)}".encode()) or not holds_leases:
            return
        expected = f"forgot {pgid}".encode()
        deadline = time.monotonic() + ACK_TIMEOUT_SECONDS
        try:
            while time.monotonic() < deadline:
                if self._channel.recv(MAX_MESSAGE) in (expected, b""):
                    return
        except OSError as error:  # socket.timeout included
            self._lost(f"no answer ({error or 'timed out'})")

    def close(self) -> None:
        """No more jobs: the watchdog exits once what it still waits on is gone."""
        self._channel.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=CLOSE_WAIT_SECONDS)

    def _send(self, message: bytes, descriptors: Sequence[int] = ()) -> bool:
        if self._broken:
            return False
        try:
            socket.send_fds(self._channel, [message], list(descriptors))
        except OSError as error:
            self._lost(str(error))
            return False
        return True

    def _lost(self, why: str) -> None:
        if not self._broken:
            self._broken = True
            self._warn(
                f"warning: the job watchdog (pid {self._process.pid}) is gone: {why}; if this "
                "runner is killed, processes its jobs started may outlive it"
            )


# ---------------------------------------------------------------------- the watchdog process


@dataclass
class _Group:
    """One job's process group, as the watchdog sees it."""

    pgid: int
    leases: list[int]
    signal_leader: bool
    pidfd: int | None = None
    killed: bool = False  # SIGKILL sent to the group (by the runner or by the watchdog)
    poll: float = FIRST_POLL_SECONDS  # until the next look at a killed group

    def drop(self) -> None:
        for descriptor in self.leases:  # the last holder closing it frees the GPU
            with contextlib.suppress(OSError):
                os.close(descriptor)
        self.leases = []
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def _signal_group(pgid: int, number: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, number)


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (a zombie no longer counts)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        entries = os.listdir("/proc")
    except OSError:  # no /proc (not Linux): a zombie left unreaped counts as alive
        return True
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                text = stat.read()
        except OSError:
            continue
        # "pid (command) state ppid pgrp ...": the command may hold spaces and parentheses.
        state, _parent, group = text[text.rindex(b")") + 2 :].split()[:3]
        if int(group) == pgid and state not in (b"Z", b"X"):
            return True
    return False


def _leader_running(group: _Group) -> bool:
    if group.pidfd is not None:  # readable once the process has exited
        return not select.select([group.pidfd], [], [], 0)[0]
    if not os.path.isdir("/proc/self"):  # not Linux: a zombie left unreaped counts as running
        try:
            os.kill(group.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:  # the leader's pid is its group's id
        with open(f"/proc/{group.pgid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def _watch(groups: dict[int, _Group], words: list[bytes], leases: list[int]) -> None:
    pgid = int(words[1])
    old = groups.pop(pgid, None)
    if old is not None:
        old.drop()
    group = _Group(pgid, leases, signal_leader=words[2] == b"1")
    with contextlib.suppress(OSError, AttributeError):  # gone already, or no pidfd_open
        group.pidfd = os.pidfd_open(pgid)
    groups[pgid] = group


def _forget(channel: socket.socket, groups: dict[int, _Group], words: list[bytes]) -> None:
    pgid = int(words[1])
    group = groups.get(pgid)
    if group is not None:
        group.killed = True
        if not _group_alive(pgid):
            group.drop()
            del groups[pgid]
    if words[2] == b"1":
        with contextlib.suppress(OSError):
            channel.send(b"forgot %d" % pgid)


def _drop_finished(groups: dict[int, _Group]) -> float | None:
    """Drop killed groups with no process left; the seconds until one should be checked again."""
    wake: float | None = None
    for pgid, group in list(groups.items()):
        if not group.killed:
            continue
        if not _group_alive(pgid):
            group.drop()
            del groups[pgid]
            continue
        wake = group.poll if wake is None else min(wake, group.poll)
        group.poll = min(group.poll * 2, LAST_POLL_SECONDS)
    return wake


def _serve(channel: socket.socket) -> dict[int, _Group]:
    """Follow the runner's jobs until the runner closes the socket or dies; what is left."""
    groups: dict[int, _Group] = {}
    wake: float | None = None
    while True:
        if select.select([channel], [], [], wake)[0]:
            try:
                message, leases, _, _ = socket.recv_fds(channel, MAX_MESSAGE, MAX_DESCRIPTORS)
            except ConnectionResetError:
                message, leases = b"", []
            if not message:
                return groups
            words = message.split()
            if words[0] == b"watch":
                _watch(groups, words, leases)
            elif words[0] == b"forget":
                _forget(channel, groups, words)
        wake = _drop_finished(groups)


def _end_jobs(groups: dict[int, _Group], grace: float) -> None:
    """What the runner would have done: SIGTERM, SIGKILL after the main process or the grace."""
    deadline = time.monotonic() + grace
    for group in groups.values():
        if not group.killed and group.signal_leader:
            _signal_group(group.pgid, signal.SIGTERM)
    while groups:
        now = time.monotonic()
        for group in groups.values():
            if not group.killed and (now >= deadline or not _leader_running(group)):
                _signal_group(group.pgid, signal.SIGKILL)
                group.killed = True
        wake = _drop_finished(groups)
        leaders = [g.pidfd for g in groups.values() if not g.killed and g.pidfd is not None]
        if any(not group.killed for group in groups.values()):
            until_deadline = max(0.0, deadline - time.monotonic())
            # Without a pidfd to wake on, check the main process as often as a killed group.
            if len(leaders) < sum(not group.killed for group in groups.values()):
                wake = FIRST_POLL_SECONDS if wake is None else min(wake, FIRST_POLL_SECONDS)
            wake = until_deadline if wake is None else min(wake, until_deadline)
        if groups:
            select.select(leaders, [], [], wake)


def main(argv: Sequence[str]) -> int:
    """``watchdog.py GRACE RUNNER_PID``, with the runner's socket as standard input (the pid
    is there for a person reading ``ps``)."""
    grace = float(argv[1])
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)
    channel = socket.socket(fileno=0)
    groups = _serve(channel)
    channel.close()
    _end_jobs(groups, grace)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
