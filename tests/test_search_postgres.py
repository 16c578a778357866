"""The search on a real PostgreSQL server: two parallel workers end with exactly num_trials.

The fixture runs Debian's ``postgresql`` (installed by ``.ci/run``) from a temporary folder on a
free loopback port, as the ``postgres`` user when the tests run as root, and always stops it.
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

import pytest
from test_search import REPOSITORY, finished, run_script, search_file

from speechbed.search.search_file import load_search
from speechbed.search.worker import SURPLUS_ATTR, open_study

#: Seconds any one server command (initdb, start, createdb, stop) may take.
SERVER_TIMEOUT = 60


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


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database on loopback, as an SQLAlchemy URL; the server stops after."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip(
            "PostgreSQL's binaries (initdb, pg_ctl) are missing: apt-get install postgresql"
        )
    as_user: list[str] = []
    # initdb refuses to run as root; under root the server runs as the postgres user
    folder = Path(tempfile.mkdtemp(prefix="speechbed-pg-"))  # not tmp_path: postgres must enter
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder)
            pytest.skip("no 'postgres' user to run the server as (apt-get install postgresql)")
        os.chown(folder, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", _free_port()

    def server(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*as_user, *command],
            capture_output=True,
            text=True,
            timeout=SERVER_TIMEOUT,
            check=True,
            cwd=folder,
        )

    started = False
    try:
        server(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
        server(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(folder / "log"),
            "-w",
            "-t",
            str(SERVER_TIMEOUT),
            "start",
        )
        started = True
        server(
            str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "search"
        )
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/search"
    except subprocess.CalledProcessError as error:
        log = folder / "log"
        pytest.fail(
            f"PostgreSQL would not start: {error.cmd}: {error.stderr}"
            + (log.read_text()[-2000:] if log.exists() else "")
        )
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


def test_two_parallel_workers_on_postgresql_end_with_exactly_num_trials(
    tmp_path: Path, cache_directory: Path, postgres_url: str, monkeypatch
):
    monkeypatch.setenv("ARTIFACTS_DIRECTORY", str(tmp_path / "artifacts"))
    monkeypatch.setenv("SPEECHBED_LEASE_DIR", str(tmp_path / "leases"))
    monkeypatch.setenv("SEARCH_STORAGE", postgres_url)
    environ = {k: v for k, v in os.environ.items() if k not in ("SPEECHBED_GPUS", "ENV_FILE")}
    environ["CUDA_VISIBLE_DEVICES"] = ""
    environ["PYTHONPATH"] = str(REPOSITORY / "src")
    path = search_file(tmp_path, cache_directory, num_trials=4, storage="${SEARCH_STORAGE}")
    search = load_search(path)
    assert search.settings.storage == postgres_url
    done = run_script(
        environ, "scripts/search.py", "-y", str(path), "--num_workers", "2", timeout=180
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "postgresql database search on 127.0.0.1" in output
    assert postgres_url not in output  # the URL is described, never printed
    study = open_study(search, create=False)
    assert finished(study) == 4
    live = [t for t in study.get_trials() if not t.system_attrs.get(SURPLUS_ATTR)]
    assert all(t.state.is_finished() for t in live)
    assert (tmp_path / "artifacts/search/tiny/trials.csv").is_file()  # the workers' report
    for trial in live:
        if trial.state.name == "COMPLETE":
            assert (Path(trial.user_attrs["run_dir"]) / "model.pt").is_file()
