"""`make dashboard`: optuna-dashboard serving a search study on loopback only, its pages drawn by
a headless Chromium, and stopped by pid like the other services."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from optuna.distributions import IntDistribution
from optuna.trial import create_trial
from test_reports_services import _free_port, _listening_addresses

from speechbed.services import _alive, read_state

REPOSITORY = Path(__file__).resolve().parents[1]
#: Hand-made trials (recurrent_size, dev PER) the dashboard must list.
TRIALS = [(16, 0.50), (32, 0.40), (16, 0.30), (32, 0.35)]


def _services(environ: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "speechbed.services", "dashboard", *args],
        cwd=REPOSITORY, env=environ, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=20) as response:
        return json.loads(response.read())


@pytest.fixture
def study_file(tmp_path: Path, monkeypatch) -> tuple[Path, dict[str, str]]:
    """A search file whose journal holds TRIALS, and the environment that finds it."""
    from speechbed.search.search_file import load_search
    from speechbed.search.worker import open_study

    monkeypatch.setenv("ARTIFACTS_DIRECTORY", str(tmp_path / "artifacts"))
    path = tmp_path / "shown.yml"
    path.write_text(
        "study: shown\nnum_trials: 4\ndata: {cache_directory: /nowhere}\n"
        "space:\n  model.recurrent_size: {int: [16, 32], step: 16}\n"
    )
    study = open_study(load_search(path))
    for size, value in TRIALS:
        study.add_trial(
            create_trial(
                params={"model.recurrent_size": size},
                distributions={"model.recurrent_size": IntDistribution(16, 32, step=16)},
                value=value,
            )
        )
    environ = {k: v for k, v in os.environ.items() if k not in ("SEARCH_STORAGE", "ENV_FILE")}
    environ["PYTHONPATH"] = str(REPOSITORY / "src")
    return path, environ


def test_the_dashboard_serves_the_study_on_loopback_and_chromium_draws_it(study_file, tmp_path):
    path, environ = study_file
    artifacts = tmp_path / "artifacts"
    port = _free_port()
    started = _services(environ, "--yml", str(path), "--port", str(port))
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"http://127.0.0.1:{port}/" in started.stdout
        state = read_state(artifacts, "dashboard")
        assert state is not None and _alive(state["pid"])
        assert _listening_addresses(port) == {"127.0.0.1"}
        studies = _get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        assert [study["study_name"] for study in studies] == ["shown"]
        detail = _get_json(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}")
        shown = [
            (int(t["params"][0]["param_external_value"]), t["values"][0]) for t in detail["trials"]
        ]
        assert shown == TRIALS
        if shutil.which("chromium") is None:
            pytest.skip("no chromium here to draw the page (.ci/run installs Debian's chromium)")
        picture = tmp_path / "dashboard.png"
        subprocess.run(
            ["chromium", "--headless", "--no-sandbox", f"--screenshot={picture}",
             "--window-size=1400,900", "--virtual-time-budget=8000",
             f"http://127.0.0.1:{port}/dashboard/studies/{studies[0]['study_id']}"],
            capture_output=True, timeout=120, check=True,
        )  # fmt: skip
        import matplotlib.image

        pixels = matplotlib.image.imread(picture)
        assert pixels.shape[:2] == (900, 1400)
        colours = {tuple(row) for row in pixels.reshape(-1, pixels.shape[2])[::7].tolist()}
        assert len(colours) > 50, "the page is blank (one or a few colours)"  # drawn charts
    finally:
        stopped = _services(environ, "--stop")
    assert stopped.returncode == 0 and "dashboard: stopped" in stopped.stdout
    assert not _alive(state["pid"]) and read_state(artifacts, "dashboard") is None


def test_the_dashboard_needs_a_search_file(tmp_path):
    environ = {
        **os.environ,
        "ARTIFACTS_DIRECTORY": str(tmp_path),
        "PYTHONPATH": str(REPOSITORY / "src"),
    }
    refused = _services(environ, "--yml", str(tmp_path / "missing.yml"))
    assert refused.returncode == 2 and "give its file (yml=FILE" in refused.stderr
