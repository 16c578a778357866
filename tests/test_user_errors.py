"""Plain mistakes give one line naming file, key and cause, exit 2, and nothing started or
half-written: booleans where numbers are expected, step scripts outside the repository,
read-only storage for the experiment expansion and the analysis."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from speechbed.errors import UserInputError
from speechbed.jobs import load_config, load_jobs
from speechbed.pipeline.cli import main as pipeline_main
from speechbed.pipeline.schema import PipelineFile
from speechbed.training.config import RunConfig

REPOSITORY = Path(__file__).resolve().parents[1]
STEP = "{script: record_job.py, config: job.yml, args: [--record, events.jsonl]"


def run_pipeline(tmp_path: Path, environ: dict[str, str], capsys, text: str) -> tuple[int, str]:
    pipeline = tmp_path / "p.yml"
    pipeline.write_text(text)
    code = pipeline_main(["-y", str(pipeline)], environ=environ, stream=io.StringIO())
    return code, capsys.readouterr().err


# --------------------------------------------------------------------------- strict types


def test_a_boolean_for_num_gpus_is_refused_naming_file_line_and_key(
    tmp_path, testbed_env, recording_job, capsys
):
    code, error = run_pipeline(
        tmp_path, testbed_env, capsys, f"num_jobs: 1\njobs:\n  - {STEP}, num_gpus: true}}\n"
    )
    assert code == 2, error
    assert error.count("\n") == 1 and "Traceback" not in error
    assert f"{tmp_path / 'p.yml'}:3:" in error and "'jobs.0.num_gpus'" in error
    assert "not a boolean" in error
    assert not (tmp_path / "events.jsonl").exists()  # nothing started


def test_booleans_are_refused_wherever_a_schema_wants_numbers(tmp_path):
    source = tmp_path / "run.yml"
    source.write_text(
        "info: {seed: 1}\n"
        "data:\n  cache_directory: /c\n  batch_size: true\n"
        "training:\n  log10_learning_rate: false\n"
    )
    with pytest.raises(UserInputError) as caught:
        load_jobs(source, RunConfig)
    lines = str(caught.value).splitlines()
    assert any(line.startswith(f"{source}:4: job 0: key 'data.batch_size'") for line in lines)
    assert any(
        line.startswith(f"{source}:6: job 0: key 'training.log10_learning_rate'") for line in lines
    )
    source.write_text("num_jobs: [true]\njobs: []\n")
    with pytest.raises(UserInputError, match="num_jobs"):
        load_config(source, PipelineFile)


def test_booleans_stay_fine_where_the_schema_wants_them(tmp_path):
    source = tmp_path / "p.yml"
    source.write_text(
        "allow_outside_scripts: true\njobs:\n  - {script: a.py, config: b.yml, blocking: true}\n"
    )
    pipeline = load_config(source, PipelineFile)
    assert pipeline.allow_outside_scripts is True and pipeline.jobs[0].blocking is True
    assert pipeline.jobs[0].num_gpus == 0


# --------------------------------------------------------------------------- outside scripts


@pytest.mark.parametrize("where", ["absolute", "dotdot"])
def test_a_step_script_outside_the_repository_is_refused(
    tmp_path, testbed_env, recording_job, capsys, where
):
    root = tmp_path / "checkout"
    root.mkdir()
    testbed_env["SPEECHBED_ROOT"] = str(root)
    script = str(recording_job) if where == "absolute" else "../record_job.py"
    events = tmp_path / "events.jsonl"
    text = (
        f"jobs:\n  - {{script: {script}, config: {tmp_path / 'job.yml'}, "
        f"args: [--record, {events}]}}\n"
    )
    code, error = run_pipeline(tmp_path, testbed_env, capsys, text)
    assert code == 2, error
    assert error.count("\n") == 1 and "Traceback" not in error
    assert str(tmp_path / "p.yml") in error and "job 0" in error and "'script'" in error
    assert "outside the repository" in error and "allow_outside_scripts: true" in error
    assert not events.exists()
    # the pipeline file can say it means it
    code, error = run_pipeline(
        tmp_path, testbed_env, capsys, "allow_outside_scripts: true\n" + text
    )
    assert code == 0, error
    assert events.exists()


# --------------------------------------------------------------------------- read-only storage


def unwritable_folder() -> Path:
    """A folder no one can create, root included (sysfs refuses new entries)."""
    folder = Path("/sys/speechbed-test-artifacts")
    try:
        folder.mkdir()
    except OSError:
        return folder
    folder.rmdir()
    pytest.skip("/sys accepts new folders here; no unwritable place to test with")
