"""Bad pipeline input: a clear message naming what and where, exit 2, and nothing started.

Runs the pipeline command line in-process (and once as a script, to see no traceback).
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speechbed.errors import UserInputError
from speechbed.pipeline.cli import main
from speechbed.pipeline.loader import load_pipeline

REPOSITORY = Path(__file__).resolve().parents[1]

GOOD_STEP = "  - {script: record_job.py, config: job.yml, args: [--record, events.jsonl]}\n"


def run_bad(tmp_path, environ, capsys, pipeline_text: str, *flags: str) -> str:
    pipeline = tmp_path / "p.yml"
    pipeline.write_text(pipeline_text)
    output = io.StringIO()
    code = main(["-y", str(pipeline), *flags], environ=environ, stream=output)
    error = capsys.readouterr().err
    assert code == 2, (error, output.getvalue())
    assert error.startswith("error: ") and "Traceback" not in error
    # Nothing started or written: no job ran, no log folder, no state folder.
    assert not (tmp_path / "events.jsonl").exists()
    assert not (tmp_path / "artifacts").exists()
    return error


@pytest.mark.parametrize(
    ("text", "flags", "expected"),
    [
        ("jobs: [\n", (), ["p.yml:2", "not valid YAML"]),
        ("jobs:\n  - {scirpt: a.py, config: job.yml}\n", (), ["did you mean 'script'"]),
        (
            "jobs:\n" + GOOD_STEP + "  - {script: record_job.py, config: job.yml, num_gpus: two}\n",
            (),
            ["p.yml:3", "jobs.1.num_gpus"],
        ),
        ("num_jobs: 2\n", (), ["missing required key 'jobs'"]),
        ("jobs: []\n", (), ["jobs"]),
        ("num_jobs: 0\njobs:\n" + GOOD_STEP, (), ["p.yml:1", "num_jobs"]),
        (
            "jobs:\n  - {script: missing.py, config: job.yml}\n",
            (),
            ["job 0", "script missing.py not found"],
        ),
        (
            "jobs:\n  - {script: record_job.py, config: nope.yml}\n",
            (),
            ["config nope.yml not found"],
        ),
        (
            "jobs:\n  - {script: record_job.py, config: job.yml, num_gpus: 3}\n",
            ("--gpus", "0,1"),
            ["num_gpus: 3", "GPU inventory has 2"],
        ),
        (
            "jobs:\n  - {script: record_job.py, config: job.yml, num_gpus: 1}\n",
            ("--gpus", ""),
            ["GPU inventory has none"],
        ),
        ("jobs:\n" + GOOD_STEP, ("--gpus", "0,x"), ["--gpus", "'x'", "not an integer"]),
        ("jobs:\n" + GOOD_STEP, ("--gpus", "0,,1"), ["--gpus", "empty GPU id"]),
        ("jobs:\n" + GOOD_STEP, ("--gpus", "-1"), ["negative"]),
        ("jobs:\n" + GOOD_STEP, ("--gpus", "2,2"), ["listed twice"]),
        ("jobs:\n" + GOOD_STEP, ("--num_jobs", "0"), ["--num_jobs must be at least 1"]),
        (
            "jobs:\n  - {script: record_job.py, config: job.yml, run_in: nonsense}\n",
            (),
            ["job 0", "'nonsense' is not an executor"],
        ),
        (
            "jobs:\n  - {script: ${NOT_SET_ANYWHERE}/a.py, config: job.yml}\n",
            (),
            ["p.yml:2", "NOT_SET_ANYWHERE is not set"],
        ),
        (
            "jobs:\n  - {script: record_job.py, config: job.yml, name: x}\n"
            "  - {script: record_job.py, config: job.yml, name: x}\n",
            (),
            ["'x' is used by 2 jobs"],
        ),
        ("jobs:\n  - {script: record_job.py, config: job.yml, name: a/b}\n", (), ["jobs.0.name"]),
        ("jobs:\n  - {script: record_job.py, config: job.yml, args: --force}\n", (), ["args"]),
        ("- just a list\n", (), ["expected a mapping"]),
    ],
)
def test_bad_pipeline_input(tmp_path, testbed_env, recording_job, capsys, text, flags, expected):
    error = run_bad(tmp_path, testbed_env, capsys, text, *flags)
    for fragment in expected:
        assert fragment in error


def test_unset_variable_in_a_step_config_names_that_file(
    tmp_path, testbed_env, recording_job, capsys
):
    (tmp_path / "job.yml").write_text("a: 1\nb: ${UNSET_IN_CONFIG}\n")
    error = run_bad(tmp_path, testbed_env, capsys, "jobs:\n" + GOOD_STEP)
    assert "job.yml:2" in error and "UNSET_IN_CONFIG" in error


def test_bad_gpu_variable_names_the_variable(tmp_path, testbed_env, recording_job, capsys):
    testbed_env["SPEECHBED_GPUS"] = "0;1"
    error = run_bad(tmp_path, testbed_env, capsys, "jobs:\n" + GOOD_STEP)
    assert "SPEECHBED_GPUS" in error


def test_missing_pipeline_file(tmp_path, testbed_env, capsys):
    code = main(["-y", str(tmp_path / "absent.yml")], environ=testbed_env, stream=io.StringIO())
    assert code == 2 and "absent.yml: job file not found" in capsys.readouterr().err


def test_script_prints_no_traceback(tmp_path, testbed_env):
    (tmp_path / "p.yml").write_text("jobs:\n  - {script: a.py, config: b.yml, extra: 1}\n")
    result = subprocess.run(
        [sys.executable, str(REPOSITORY / "scripts/pipeline.py"), "-y", str(tmp_path / "p.yml")],
        env=testbed_env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "unknown key 'jobs.0.extra'" in result.stderr and "Traceback" not in result.stderr


STEP_KEYS = ["script", "config", "name", "run_in", "num_gpus", "blocking", "args", "scirpt"]
STEP_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 4),
    st.sampled_from(["record_job.py", "job.yml", "missing.py", "host", "x/y", "", "a b"]),
    st.lists(st.one_of(st.integers(), st.text(max_size=3)), max_size=2),
)
PIPELINE_DOCUMENTS = st.one_of(
    st.lists(st.integers(), max_size=2),
    st.fixed_dictionaries(
        {},
        optional={
            "num_jobs": st.one_of(st.integers(-1, 3), st.text(max_size=2)),
            "jobs": st.one_of(
                st.none(),
                st.lists(st.dictionaries(st.sampled_from(STEP_KEYS), STEP_VALUES), max_size=3),
            ),
            "nmae": st.text(max_size=3),
        },
    ),
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(document=PIPELINE_DOCUMENTS, gpus=st.lists(st.integers(0, 3), max_size=2, unique=True))
def test_any_pipeline_document_plans_or_gives_a_clear_error(
    tmp_path, testbed_env, recording_job, document, gpus
):
    source = tmp_path / "fuzz.yml"
    source.write_text(yaml.safe_dump(document))
    try:
        pipeline = load_pipeline(source, testbed_env, gpus, tmp_path, tmp_path / "artifacts")
    except UserInputError as error:
        assert str(error).startswith(str(source))
    else:
        assert all(job.script.is_file() and job.num_gpus <= len(gpus) for job in pipeline.jobs)


def test_unusable_lease_folder(tmp_path, testbed_env, recording_job, capsys):
    (tmp_path / "not_a_folder").write_text("")
    testbed_env["SPEECHBED_LEASE_DIR"] = str(tmp_path / "not_a_folder")
    text = "jobs:\n  - {script: record_job.py, config: job.yml, num_gpus: 1}\n"
    error = run_bad(tmp_path, testbed_env, capsys, text, "--gpus", "0")
    assert "lease folder" in error and "SPEECHBED_LEASE_DIR" in error


def test_a_planted_link_in_the_lease_folder_is_refused(
    tmp_path, testbed_env, recording_job, capsys
):
    leases = tmp_path / "leases"
    leases.mkdir()
    (leases / "gpu-0.lock").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "p.yml").write_text(
        "jobs:\n  - {script: record_job.py, config: job.yml, num_gpus: 1}\n"
    )
    code = main(
        ["-y", str(tmp_path / "p.yml"), "--gpus", "0"], environ=testbed_env, stream=io.StringIO()
    )
    error = capsys.readouterr().err
    assert code == 2 and "gpu-0.lock" in error and "Traceback" not in error
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "events.jsonl").exists()
