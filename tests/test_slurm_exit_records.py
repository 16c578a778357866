"""A finished job that Slurm has already purged (MinJobAge) is read from its exit record.

The batch step records how the job ended beside its output file; a watcher that asks only
after the controller forgot the job (an array element whose watcher started late) takes the
job's exit status from there instead of calling it gone. Here with the real batch module and
watcher, and an ``scontrol`` on PATH that knows no job (as the controller answers then).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from speechbed.pipeline.slurm.arrays import ArrayElement, ArraySidecar, submit_once
from speechbed.pipeline.slurm.commands import read_exit_record, write_exit_record

REPOSITORY = Path(__file__).resolve().parents[1]


def _batch(folder: Path, *arguments: str, **variables: str) -> int:
    return subprocess.run(
        [sys.executable, "-m", "speechbed.pipeline.slurm.batch", "--cwd", str(folder), *arguments],
        cwd=folder,
        env={**os.environ, **variables},
        timeout=60,
    ).returncode


def test_the_batch_step_records_how_a_job_and_an_element_ended(tmp_path):
    output = tmp_path / "train.slurm.out"
    failing = [sys.executable, "-c", "raise SystemExit(3)"]
    assert _batch(tmp_path, "--output", str(output), "--", *failing, SLURM_JOB_ID="77") == 3
    assert read_exit_record(output, "77") == 3
    assert read_exit_record(output, "78") is None  # an earlier job of the same output
    elements = [
        ArrayElement(key=f"k{i}", name=f"r{i}", argv=[sys.executable, "-c", "pass"], env={})
        for i in range(2)
    ]
    sidecar = ArraySidecar.create(tmp_path, elements)
    ids = {"SLURM_JOB_ID": "61", "SLURM_ARRAY_JOB_ID": "60", "SLURM_ARRAY_TASK_ID": "1"}
    assert _batch(tmp_path, "--array-file", str(sidecar.path), **ids) == 0
    assert read_exit_record(sidecar.output(1), "60_1") == 0
    assert read_exit_record(sidecar.output(0), "60_0") is None


def test_a_late_watcher_takes_a_purged_elements_exit_status_from_its_record(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    scontrol = fake / "scontrol"
    scontrol.write_text(
        "#!/bin/sh\necho 'slurm_load_jobs error: Invalid job id specified' >&2\nexit 1\n"
    )
    scontrol.chmod(0o755)
    elements = [ArrayElement(key=f"k{i}", name=f"r{i}", argv=["x"], env={}) for i in range(3)]
    sidecar = ArraySidecar.create(tmp_path, elements)
    submit_once(
        sidecar,
        ["sbatch", "/dev/stdin"],
        2,
        lambda line, stdin: (0, "" if line[0] == "squeue" else "60\n", ""),
    )
    sidecar.output(0).write_text("element 0 ran\n")
    write_exit_record(sidecar.output(0), "60_0", 0)
    write_exit_record(sidecar.output(2), "60_2", 4)
    environ = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}

    def watch(index: int) -> tuple[int, str, dict]:
        status = tmp_path / f"r{index}.slurm.json"
        done = subprocess.run(
            [sys.executable, "-m", "speechbed.pipeline.slurm.watcher", "--name", f"r{index}",
             "--comment", f"speechbed-key:k{index}", "--output", str(tmp_path / "single.out"),
             "--status", str(status), "--poll", "0.1", "--array-file", str(sidecar.path),
             "--array-index", str(index), "--array-throttle", "2", "--", "sbatch"],
            env=environ, capture_output=True, text=True, timeout=60, cwd=REPOSITORY,
        )  # fmt: skip
        return done.returncode, done.stdout + done.stderr, json.loads(status.read_text())

    code, output, status = watch(0)
    assert code == 0 and "element 0 ran" in output and status["state"] == "COMPLETED", output
    code, output, status = watch(2)
    assert code == 4 and status["state"] == "FAILED", output
    code, output, status = watch(1)  # no record: it never ran, or its node died with it
    assert code == 1 and "gone from the controller" in status["failure"], output
