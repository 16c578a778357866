"""Plain mistakes give one line naming file, key and cause, exit 2, and nothing started or
half-written: booleans where numbers are expected, step scripts outside the repository,
read-only storage for the experiment expansion and the analysis."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from speechbed.errors import UserInputError
from speechbed.jobs import load_config, load_jobs
from speechbed.outputs import OutputError
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


EXPERIMENT = """
info: {seed: 0}
data: {cache_directory: "${CACHE_DIRECTORY}/corpus/fbank-81-10ms", feature: fbank-81-10ms}
model: {recurrent_size: 8, recurrent_layers: 1, convolutional_layers: 1}
training: {num_epochs: 1}
sweep:
  - {seed: [1, 2], populate_cache: true}
"""


def test_make_experiment_on_unwritable_artifacts_is_one_line_and_writes_nothing(tmp_path):
    artifacts = unwritable_folder()
    name = "unwritable_artifacts_study"
    (tmp_path / f"{name}.yml").write_text(EXPERIMENT)
    manifests = tmp_path / "cache" / "corpus" / "manifests"
    manifests.mkdir(parents=True)
    for partition in ("train", "dev", "test"):
        (manifests / f"{partition}.jsonl").write_text("")
    environment = {
        **os.environ,
        "CACHE_DIRECTORY": str(tmp_path / "cache"),
        "ARTIFACTS_DIRECTORY": str(artifacts),
    }
    result = subprocess.run(
        [sys.executable, str(REPOSITORY / "scripts" / "sweep_experiment.py"), "-y",
         str(tmp_path / f"{name}.yml")],
        capture_output=True, text=True, env=environment, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert str(artifacts) in result.stderr and "permission denied" in result.stderr
    assert not (REPOSITORY / "experiments" / "out" / name).exists()


def test_the_analysis_on_unwritable_storage_is_one_line_and_exit_2(tmp_path):
    folder = unwritable_folder()
    run_dir = tmp_path / "exp" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yml").write_text("info: {seed: 1}\n")
    (run_dir / "results.json").write_text('{"dev": {"per": 0.2}, "test": {"per": 0.3}}')
    job = tmp_path / "analyze.yml"
    job.write_text(
        yaml.safe_dump(
            {
                "experiments": ["exp"],
                "artifacts_directory": str(tmp_path),
                "output_path": str(folder / "analysis"),
                "report": {"tensorboard": False},
            }
        )
    )
    result = subprocess.run(
        [sys.executable, str(REPOSITORY / "scripts" / "analyze.py"), "-y", str(job)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert str(folder) in errors[0] and "permission denied" in errors[0]


def test_read_only_file_system_is_named_as_such(tmp_path, monkeypatch):
    # EROFS itself, which only a mount gives for real: raised where the folder is made.
    from speechbed.sweep.experiment import load_experiment, write_experiment

    (tmp_path / "study.yml").write_text(EXPERIMENT)
    experiment = load_experiment(tmp_path / "study.yml")
    artifacts = tmp_path / "artifacts"
    real_mkdir = Path.mkdir

    def read_only_mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if self.is_relative_to(artifacts):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only_mkdir)
    with pytest.raises(OutputError) as caught:
        write_experiment(experiment, tmp_path / "repo", artifacts)
    assert str(artifacts / "study") in str(caught.value)
    assert "read-only file system" in str(caught.value)
    assert not (tmp_path / "repo").exists()
