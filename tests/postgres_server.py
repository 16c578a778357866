"""A throwaway PostgreSQL server on loopback, for the search's tests and its benchmark.

Used by tests/test_search_postgres.py (its ``postgres_url`` fixture) and
benchmarks/bench_search.py. Debian's ``postgresql`` (installed by ``.ci/run``) runs from a
temporary folder on a free loopback port, as the ``postgres`` user when run as root (initdb
refuses root), and is always stopped: by ``pg_ctl``, or by the postmaster's pid should that fail.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: Seconds any one server command (initdb, start, createdb, stop) may take.
SERVER_TIMEOUT = 60


class PostgresMissing(Exception):
    """PostgreSQL's binaries or its user are not on this machine (the reason is the message)."""


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def postgres_database(name: str = "search") -> Iterator[str]:
    """A fresh database ``name`` on a new loopback server, as an SQLAlchemy URL.

    Raises ``PostgresMissing`` when the server cannot be run here, RuntimeError (with the
    server's log) when it will not start.
    """
    bindir = _postgres_bin()
    if bindir is None:
        raise PostgresMissing(
            "PostgreSQL's binaries (initdb, pg_ctl) are missing: apt-get install postgresql"
        )
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="speechbed-pg-"))  # the postgres user must enter it
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder)
            raise PostgresMissing(
                "no 'postgres' user to run the server as (apt-get install postgresql)"
            ) from None
        os.chown(folder, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", _free_port()

    def server(*command: str) -> None:
        subprocess.run(
            [*as_user, *command],
            capture_output=True, text=True, timeout=SERVER_TIMEOUT, check=True, cwd=folder,
        )  # fmt: skip

    started = False
    try:
        try:
            server(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
            options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
            server(
                str(bindir / "pg_ctl"), "-D", str(data), "-o", options,
                "-l", str(folder / "log"), "-w", "-t", str(SERVER_TIMEOUT), "start",
            )  # fmt: skip
            started = True
            server(
                str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                name,
            )  # fmt: skip
        except subprocess.CalledProcessError as error:
            log = folder / "log"
            raise RuntimeError(
                f"PostgreSQL would not start: {error.cmd}: {error.stderr}"
                + (log.read_text()[-2000:] if log.exists() else "")
            ) from None
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{name}"
    finally:
        if started:
            _stop(as_user, bindir, data)
        shutil.rmtree(folder, ignore_errors=True)


def _stop(as_user: list[str], bindir: Path, data: Path) -> None:
    """pg_ctl's fast shutdown; should it fail or hang, the postmaster is killed by its pid."""
    stop = [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w"]
    try:
        if subprocess.run([*stop, "-t", "30", "stop"], capture_output=True, timeout=40).returncode:
            raise RuntimeError("pg_ctl stop failed")
    except (subprocess.TimeoutExpired, RuntimeError):
        pid_file = data / "postmaster.pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
