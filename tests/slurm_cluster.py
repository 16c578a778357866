"""A one-node Slurm cluster on loopback, started and stopped by its pid files.

Used by tests/test_slurm.py (its module fixture) and benchmarks/bench_slurm.py. Free ports,
state and spool in a given folder, two fake GPUs through gres.conf; the recipe of
../shared/ENVIRONMENT.md.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

#: Whether this machine can start the cluster (Debian's slurm-wlm; .ci/run installs it).
SLURM_INSTALLED = shutil.which("slurmctld") is not None and shutil.which("slurmd") is not None

Found = TypeVar("Found")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait(condition: Callable[[], Found], seconds: float, what: str, step: float = 0.1) -> Found:
    """``condition()``'s first true answer; AssertionError after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(step)
    raise AssertionError(f"waited {seconds}s for {what}")


def slurm(*command: str) -> str:
    """The standard output of a Slurm command (empty when it failed)."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    return done.stdout


def _stop_by_pid_file(path: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        pid = int(path.read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
        wait(lambda: not Path(f"/proc/{pid}").exists(), 10, f"pid {pid} to stop")


def _write_config(folder: Path) -> Path:
    user = getpass.getuser()
    settings = {
        "ClusterName": "test",
        "SlurmctldHost": "localhost",
        "SlurmctldPort": free_port(),
        "SlurmdPort": free_port(),
        "AuthType": "auth/none",
        "CredType": "cred/none",
        "ProctrackType": "proctrack/linuxproc",
        "TaskPlugin": "task/none",
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_Core",
        "SlurmUser": user,
        "SlurmdUser": user,
        "StateSaveLocation": folder / "state",
        "SlurmdSpoolDir": folder / "spool",
        "SlurmctldPidFile": folder / "slurmctld.pid",
        "SlurmdPidFile": folder / "slurmd.pid",
        "SlurmctldLogFile": folder / "slurmctld.log",
        "SlurmdLogFile": folder / "slurmd.log",
        "AccountingStorageType": "accounting_storage/none",
        "JobCompType": "jobcomp/none",
        "MinJobAge": 3600,
        "ReturnToService": 2,
        "GresTypes": "gpu",
        "SchedulerParameters": "sched_interval=1",
    }
    lines = [f"{key}={value}" for key, value in settings.items()]
    lines += [
        "NodeName=localhost CPUs=2 RealMemory=8000 Gres=gpu:2 State=UNKNOWN",
        "PartitionName=main Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
    ]
    conf = folder / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    (folder / "gres.conf").write_text("NodeName=localhost Name=gpu File=/dev/tty[0-1]\n")
    return conf


@contextlib.contextmanager
def one_node_cluster(folder: Path) -> Iterator[Path]:
    """A running cluster whose files lie in ``folder``; yields its slurm.conf.

    Slurm's commands find it through ``SLURM_CONF``, which the caller sets for them.
    On the way out every job of this user is cancelled and both daemons are stopped.
    """
    conf = _write_config(folder)
    environ = {**os.environ, "SLURM_CONF": str(conf)}
    try:
        subprocess.run(["slurmctld", "-f", str(conf)], env=environ, check=True, timeout=30)
        subprocess.run(["slurmd", "-f", str(conf)], env=environ, check=True, timeout=30)
        idle = ["sinfo", "--noheader", "--format=%T"]

        def node_idle() -> bool:
            done = subprocess.run(idle, env=environ, capture_output=True, text=True, timeout=30)
            return done.stdout.strip() == "idle"

        wait(node_idle, 30, "the node to be idle", 0.2)
        yield conf
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(["scancel", "--me"], env=environ, timeout=10)
        _stop_by_pid_file(folder / "slurmd.pid")
        _stop_by_pid_file(folder / "slurmctld.pid")
