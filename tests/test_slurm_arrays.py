"""Job arrays and afterok dependents on the real one-node cluster (tests/slurm_cluster.py).

The jobs of one segment that share script and resources go in as one ``sbatch --array``;
each element runs its own job, with its own log and exit code. A job Slurm cancels because
the job it waited for failed is recorded as not started, as on the host.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_cluster import slurm, wait
from test_slurm import (  # noqa: F401
    CHECKPOINTING_JOB,
    cluster,
    events,
    run,
    runner,
    slurm_env,
    step,
    write_pipeline,
)

REPOSITORY = Path(__file__).resolve().parents[1]
SBATCH = "/usr/bin/sbatch"


@pytest.fixture
def counted_env(tmp_path, slurm_env) -> dict[str, str]:  # noqa: F811
    """``slurm_env`` with an ``sbatch`` first on PATH that logs each call's argv."""
    folder = tmp_path / "bin"
    folder.mkdir()
    wrapper = folder / "sbatch"
    wrapper.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$*" >> {tmp_path}/sbatch.calls\nexec {SBATCH} "$@"\n'
    )
    wrapper.chmod(0o755)
    return {**slurm_env, "PATH": f"{folder}:{slurm_env['PATH']}"}


def sbatch_calls(tmp_path: Path) -> list[str]:
    calls = tmp_path / "sbatch.calls"
    return calls.read_text().splitlines() if calls.exists() else []


def _array_tasks(name: str) -> list[tuple[str, str, str]]:
    """(array job id, task id, state) of every task of the arrays named ``name``."""
    listing = slurm("squeue", "--noheader", "--me", "--states=all", "--format=%F|%K|%T|%j")
    return sorted(
        (array_id, task, state)
        for array_id, task, state, job_name in (line.split("|", 3) for line in listing.splitlines())
        if job_name == name
    )


def test_the_runs_of_one_step_go_in_as_one_array_and_a_failing_one_fails_the_pipeline(
    tmp_path, counted_env
):
    record = tmp_path / "events.jsonl"
    runs = [step(record, f"run{index}", exit=7 if index == 2 else 0) for index in range(5)]
    steps = [*runs, step(record, "collect", blocking=True)]
    code, output = run(counted_env, write_pipeline(tmp_path / "arrays.yml", steps, num_jobs=2))
    assert code == 1, output
    calls = sbatch_calls(tmp_path)
    assert len(calls) == 1 and "--array=0-4%2" in calls[0], calls  # one submission
    tasks = _array_tasks("arrays/record_job[5]")
    assert [task for _, task, _ in tasks] == ["0", "1", "2", "3", "4"]
    assert len({array_id for array_id, _, _ in tasks}) == 1
    assert {state for _, task, state in tasks if task != "2"} == {"COMPLETED"}
    # each element ran its own job (its name, args and log), once
    ran = [(event["name"], event["label"]) for event in events(record) if event["event"] == "end"]
    assert sorted(ran) == [(f"run{index}", f"run{index}") for index in range(5)]
    logs = tmp_path / "artifacts" / "logs" / "arrays"
    for index in range(5):
        log = (logs / f"run{index}.log").read_text()
        assert "job says hello" in log and f"element {index} of Slurm job array" in log, log
    assert "failed run2" in output and "exit code 7" in output, output
    assert "collect" not in {event["name"] for event in events(record)}
    assert "4 done, 1 failed, 1 not started" in output, output


def test_an_array_behind_a_barrier_depends_on_the_array_and_a_rerun_skips_it(tmp_path, counted_env):
    record, release = tmp_path / "events.jsonl", tmp_path / "release"
    steps = [
        *(step(record, f"seed{index}", wait_for=release) for index in range(3)),
        step(record, "report", blocking=True),
    ]
    pipeline = write_pipeline(tmp_path / "behind.yml", steps)
    process = runner(counted_env, pipeline)
    try:
        wait(lambda: len(sbatch_calls(tmp_path)) == 2, 30, "the barrier to be queued")
        [(array_id, _, _), *_] = _array_tasks("behind/record_job[3]")
        shown = slurm("squeue", "--noheader", "--me", "--name=behind/report", "--format=%i")
        details = slurm("scontrol", "show", "job", "--oneliner", shown.strip())
        assert f"Dependency=afterok:{array_id}_*" in details, details
        release.touch()
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, output
    order = [event["name"] for event in events(record) if event["event"] == "end"]
    assert sorted(order[:3]) == ["seed0", "seed1", "seed2"] and order[3:] == ["report"]
    code, output = run(counted_env, pipeline)
    assert code == 0 and "4 job(s) already done" in output, output
    assert len(sbatch_calls(tmp_path)) == 2


def test_a_killed_runner_leaves_its_array_running_and_the_next_run_adopts_each_element(
    tmp_path, counted_env
):
    record, release = tmp_path / "events.jsonl", tmp_path / "release"
    steps = [step(record, f"run{index}", wait_for=release) for index in range(3)]
    pipeline = write_pipeline(tmp_path / "adopt.yml", steps)
    first = runner(counted_env, pipeline)
    try:
        # the node has two CPUs: two elements run, the third is still pending
        wait(lambda: len(events(record)) == 2, 30, "two elements to start")
        os.killpg(first.pid, signal.SIGKILL)
        first.communicate(timeout=30)
        second = runner(counted_env, pipeline)
        try:
            logs = tmp_path / "artifacts" / "logs" / "adopt"
            wait(
                lambda: all("adopting" in (logs / f"run{i}.log").read_text() for i in range(3)),
                30,
                "adoption",
            )
            release.touch()
            output, _ = second.communicate(timeout=30)
        finally:
            second.kill()
    finally:
        first.kill()
    assert second.returncode == 0, output
    assert len(sbatch_calls(tmp_path)) == 1  # no duplicate submission
    assert [event["event"] for event in events(record)].count("start") == 3  # each ran once
    for index in range(3):
        log = (tmp_path / "artifacts" / "logs" / "adopt" / f"run{index}.log").read_text()
        assert "job says hello" in log, log  # the adopted element's output, from its start


def test_sigterm_to_the_runner_cancels_every_element_of_its_array(tmp_path, counted_env):
    record = tmp_path / "events.jsonl"
    steps = [step(record, f"run{index}", wait_for=tmp_path / "never") for index in range(4)]
    process = runner(counted_env, write_pipeline(tmp_path / "term.yml", steps, num_jobs=2))
    try:
        wait(lambda: len(events(record)) == 2, 30, "two elements to start")
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, output
    # the elements the runner had no watcher for yet (num_jobs: 2) are cancelled too
    assert {state for _, _, state in _array_tasks("term/record_job[4]")} == {"CANCELLED"}


def test_a_job_slurm_cancels_behind_a_failed_one_waits_to_be_called_not_started(
    tmp_path,
    slurm_env,  # noqa: F811
):
    release = tmp_path / "release"
    gate = subprocess.run(
        [SBATCH, "--parsable", "--job-name=race/gate", f"--output={tmp_path}/gate.out",
         f"--wrap=while [ ! -e {release} ]; do sleep 0.05; done; exit 3"],
        env=slurm_env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    status = tmp_path / "after.slurm.json"
    watcher = subprocess.Popen(
        [sys.executable, "-m", "speechbed.pipeline.slurm.watcher", "--name", "after",
         "--comment", "speechbed-key:after", "--output", str(tmp_path / "after.out"),
         "--status", str(status), "--poll", "0.2", "--",
         SBATCH, "--parsable", "--job-name=race/after", f"--output={tmp_path}/after.out",
         f"--dependency=afterok:{gate}", "--kill-on-invalid-dep=yes", "/dev/stdin", "/bin/true"],
        env=slurm_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait(status.exists, 30, "the dependent to be submitted")
        release.touch()
        lines: list[str] = []
        assert watcher.stdout is not None
        while "a job before it failed" not in "".join(lines):
            lines.append(watcher.stdout.readline())
            assert lines[-1], lines
        assert "CANCELLED (DependencyNeverSatisfied)" in lines[-1], lines
        # it does not exit as failed; the runner stops it (having seen gate fail) ...
        with pytest.raises(subprocess.TimeoutExpired):
            watcher.wait(timeout=1.0)
        watcher.send_signal(signal.SIGTERM)
        assert watcher.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        watcher.kill()
    # ... and records it as not started: its failure is no exit code of its own
    assert "not started" in json.loads(status.read_text())["failure"]


def test_a_barrier_that_fails_leaves_its_queued_dependent_not_started(tmp_path, slurm_env):  # noqa: F811
    record, release = tmp_path / "events.jsonl", tmp_path / "release"
    steps = [
        step(record, "gate", blocking=True, wait_for=release, exit=3),
        step(record, "after"),
    ]
    process = runner(slurm_env, write_pipeline(tmp_path / "race.yml", steps))
    try:
        wait(
            lambda: slurm("squeue", "--noheader", "--me", "--name=race/after", "--format=%i"),
            30,
            "the dependent to be queued",
        )
        release.touch()
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 1, output
    assert "1 failed, 1 not started" in output, output


def test_an_element_requeued_at_its_time_limit_resumes_from_its_checkpoint(
    tmp_path,
    slurm_env,  # noqa: F811
):
    (tmp_path / "checkpointing.py").write_text(CHECKPOINTING_JOB)
    for index in range(2):
        (tmp_path / f"run{index}").mkdir()
    (tmp_path / "run0" / "checkpoint.txt").write_text("epoch 5")  # run0 resumes and ends
    steps = [
        {"script": "checkpointing.py", "config": "job.yml", "name": f"run{index}",
         "run_in": "slurm", "args": [str(tmp_path / f"run{index}")]}
        for index in range(2)
    ]  # fmt: skip
    process = runner(slurm_env, write_pipeline(tmp_path / "requeue.yml", steps))
    try:
        wait(lambda: (tmp_path / "run1" / "started").exists(), 30, "run1 to start")
        [(array_id, _, _), *_] = _array_tasks("requeue/checkpointing[2]")
        element = f"{array_id}_1"
        subprocess.run(["scancel", "--signal=USR1", "--batch", element], check=True, timeout=30)

        def requeued() -> bool:
            shown = slurm("scontrol", "show", "job", "--oneliner", element)
            return "JobState=PENDING" in shown and "Restarts=1" in shown

        wait(requeued, 30, "the requeue")
        time.sleep(1.1)  # see test_slurm.py: a credential in the second of the requeue fails
        subprocess.run(["scontrol", "update", f"JobId={element}", "StartTime=now"], timeout=30)
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, output
    logs = tmp_path / "artifacts" / "logs" / "requeue"
    log = (logs / "run1.log").read_text()
    assert "checkpointed" in log and f"requeued job {element}" in log, log
    assert "resumed from epoch 3" in log and "[slurm batch] error" not in log, log
    assert "resumed from epoch 5" in (logs / "run0.log").read_text()
