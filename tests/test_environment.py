"""check_environment and the Makefile's environment handling: values, sources, masking, flags.

Runs the real bash sourcing (and `make` itself, with install skipped) on temporary env files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from speechbed.environment import DEFAULTS_FILE, collect, declared_variables, mask

REPOSITORY = Path(__file__).resolve().parents[1]
DECLARED = declared_variables(REPOSITORY / DEFAULTS_FILE)


@pytest.fixture
def clean_environ() -> dict[str, str]:
    """os.environ without any testbed variable (make test exports them all)."""
    return {
        key: value for key, value in os.environ.items() if key not in DECLARED and key != "ENV_FILE"
    }


def test_default_sh_declares_the_core_variables():
    for name in (
        "DATA_DIRECTORY",
        "CACHE_DIRECTORY",
        "ARTIFACTS_DIRECTORY",
        "SPEECHBED_LEASE_DIR",
        "SPEECHBED_GPUS",
        "PATH_TO_GOOGLE_CREDENTIALS",
        "COMET_API_KEY",
    ):
        assert name in DECLARED


def test_each_value_reports_where_it_came_from(tmp_path, clean_environ):
    env_file = tmp_path / "box_local.sh"
    # A copy of default.sh's style: the edited ${NAME:-default} must take effect.
    env_file.write_text(
        f'export DATA_DIRECTORY="${{DATA_DIRECTORY:-{tmp_path}/corpora}}"\n'
        "export COMET_API_KEY=abc123secret\n"
    )
    clean_environ["CACHE_DIRECTORY"] = str(tmp_path / "shell_cache")
    settings, extras = collect(clean_environ, env_file, REPOSITORY)
    found = {setting.name: setting for setting in settings}
    assert (found["DATA_DIRECTORY"].value, found["DATA_DIRECTORY"].source) == (
        f"{tmp_path}/corpora",
        "ENV_FILE",
    )
    assert (found["CACHE_DIRECTORY"].value, found["CACHE_DIRECTORY"].source) == (
        str(tmp_path / "shell_cache"),
        "shell",
    )
    assert found["ARTIFACTS_DIRECTORY"].source == "default.sh"
    assert found["ARTIFACTS_DIRECTORY"].value == f"{REPOSITORY}/storage/artifacts"
    assert found["COMET_API_KEY"].source == "ENV_FILE" and found["COMET_API_KEY"].status == "ok"
    assert extras == []


def test_a_shell_value_wins_over_the_env_files_default_form(tmp_path, clean_environ):
    env_file = tmp_path / "box_local.sh"
    env_file.write_text('export DATA_DIRECTORY="${DATA_DIRECTORY:-/from/file}"\n')
    clean_environ["DATA_DIRECTORY"] = "/from/shell"
    settings, _ = collect(clean_environ, env_file, REPOSITORY)
    [data] = [setting for setting in settings if setting.name == "DATA_DIRECTORY"]
    assert (data.value, data.source) == ("/from/shell", "shell")


def test_missing_credentials_and_offline_comet_are_flagged(tmp_path, clean_environ):
    clean_environ["PATH_TO_GOOGLE_CREDENTIALS"] = str(tmp_path / "absent.json")
    settings, _ = collect(clean_environ, None, REPOSITORY)
    status = {setting.name: setting.status for setting in settings}
    assert status["PATH_TO_GOOGLE_CREDENTIALS"].startswith("missing")
    assert "offline" in status["COMET_API_KEY"]
    (tmp_path / "absent.json").write_text("{}")
    settings, _ = collect(clean_environ, None, REPOSITORY)
    assert {s.name: s.status for s in settings}["PATH_TO_GOOGLE_CREDENTIALS"] == "ok"


def test_masking():
    assert "hunter2" not in mask("COMET_API_KEY", "hunter2")
    assert mask("COMET_API_KEY", "") == ""
    assert mask("DB_URL", "postgresql://me:hunter2@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert mask("PATH_TO_GOOGLE_CREDENTIALS", "/p/key.json") == "/p/key.json"


def _check(environ, *arguments, cwd=REPOSITORY):
    return subprocess.run(
        [sys.executable, "-m", "speechbed.environment", *arguments],
        env=environ,
        cwd=cwd,
        capture_output=True,
        text=True,
    )


def test_command_never_prints_secrets_and_flags_typos(tmp_path, clean_environ):
    env_file = tmp_path / "box_local.sh"
    env_file.write_text("export COMET_API_KEY=topsecretvalue\nexport CACHE_DIRCTORY=/x\n")
    clean_environ["DB_PASSWORD"] = "alsosecret"
    result = _check(clean_environ, "--env-file", str(env_file))
    assert result.returncode == 1, result.stderr  # the typo is a problem
    assert "topsecretvalue" not in result.stdout and "hidden" in result.stdout
    assert "did you mean CACHE_DIRECTORY?" in result.stdout
    for name in DECLARED:
        assert name in result.stdout


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "not found"), ("if then fi\n", "sourcing ENV_FILE")],
)
def test_bad_env_file_is_a_clear_error(tmp_path, clean_environ, content, expected):
    env_file = tmp_path / "bad_local.sh"
    if content is not None:
        env_file.write_text(content)
    result = _check(clean_environ, "--env-file", str(env_file))
    assert result.returncode == 2 and expected in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_targets_read_env_file_before_defaults(tmp_path, clean_environ):
    """`make pipeline ENV_FILE=...` with a copy of default.sh whose defaults were edited."""
    artifacts = tmp_path / "artifacts"
    env_file = tmp_path / "box_local.sh"
    text = (REPOSITORY / DEFAULTS_FILE).read_text()
    text = text.replace("${SPEECHBED_ROOT}/storage/artifacts", str(artifacts))
    env_file.write_text(text)
    (tmp_path / "job.yml").write_text("artifacts: ${ARTIFACTS_DIRECTORY}\n")
    (tmp_path / "show_env.py").write_text(
        "import json, os, sys\n"
        "print(json.dumps({k: os.environ.get(k) for k in ('ARTIFACTS_DIRECTORY', 'DATA_DIRECTORY')}))\n"
    )
    pipeline = tmp_path / "p.yml"
    pipeline.write_text(
        "allow_outside_scripts: true\n"  # the step script lives in the test's folder
        f"jobs:\n  - {{script: {tmp_path}/show_env.py, config: {tmp_path}/job.yml, name: show}}\n"
    )
    clean_environ["SPEECHBED_LEASE_DIR"] = str(tmp_path / "leases")
    make = ["make", "-s", "-C", str(REPOSITORY), "-o", "install"]
    result = subprocess.run(
        [*make, "pipeline", f"yml={pipeline}", "gpus=", f"ENV_FILE={env_file}"],
        env=clean_environ,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    log = (artifacts / "logs" / "p" / "show.log").read_text()
    seen = json.loads(next(line for line in log.splitlines() if line.startswith("{")))
    assert seen == {
        "ARTIFACTS_DIRECTORY": str(artifacts),
        "DATA_DIRECTORY": f"{REPOSITORY}/storage/data",
    }

    result = subprocess.run(
        [*make, "check_environment", f"ENV_FILE={env_file}"],
        env=clean_environ,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(artifacts) in result.stdout and "ENV_FILE" in result.stdout

    result = subprocess.run(
        [*make, "check_environment"], env=clean_environ, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    row = next(line for line in result.stdout.splitlines() if "ARTIFACTS_DIRECTORY" in line)
    assert f"{REPOSITORY}/storage/artifacts" in row and "default.sh" in row


def test_search_storage_is_shown_without_its_password():
    from speechbed.environment import check, mask

    url = "postgresql+psycopg://study:s3cret@127.0.0.1:5432/searches"
    assert "s3cret" not in mask("SEARCH_STORAGE", url) and "127.0.0.1:5432" in mask(
        "SEARCH_STORAGE", url
    )
    assert check("SEARCH_STORAGE", "")[0].startswith("empty: searches keep a journal file")
    assert "refused for parallel workers" in check("SEARCH_STORAGE", "sqlite:///x.db")[0]
