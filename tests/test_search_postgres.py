"""The search on a real PostgreSQL server: two parallel workers end with exactly num_trials.

The fixture runs Debian's ``postgresql`` (installed by ``.ci/run``) from a temporary folder on a
free loopback port and always stops it (tests/postgres_server.py, shared with the benchmark).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_server import PostgresMissing, postgres_database
from test_search import REPOSITORY, finished, run_script, search_file

from speechbed.search.search_file import load_search
from speechbed.search.worker import SURPLUS_ATTR, open_study


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database on loopback, as an SQLAlchemy URL; the server stops after."""
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_database())
        except PostgresMissing as missing:
            pytest.skip(str(missing))
        yield url  # the server stops when the stack closes


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
