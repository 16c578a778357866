"""The Slurm executor on a real one-node cluster: order, GPUs, failures, resume, signals, requeue.

A module fixture starts slurmctld and slurmd on loopback (tests/slurm_cluster.py: free
ports, state and spool in a temporary folder, two fake GPUs through gres.conf) and stops
them by their pid files. Skipped, saying so, where Slurm is not installed; CI
installs it (.ci/run).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from slurm_cluster import SLURM_INSTALLED, one_node_cluster, slurm, wait

from speechbed.pipeline.cli import main

REPOSITORY = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    not SLURM_INSTALLED,
    reason="Slurm is not installed (apt-get install slurm-wlm; .ci/run does)",
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Path]:
    """A running one-node cluster; yields its slurm.conf (also set as SLURM_CONF)."""
    with one_node_cluster(tmp_path_factory.mktemp("slurm")) as conf:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SLURM_CONF", str(conf))  # the executor's check reads os.environ
            yield conf


def _jobs(name: str) -> list[tuple[str, str]]:
    """(id, state) of every job named ``name`` the cluster knows, finished ones included."""
    listing = slurm("squeue", "--noheader", "--me", "--states=all", "--format=%i|%T|%j")
    return [
        (job_id, state)
        for job_id, state, job_name in (line.split("|", 2) for line in listing.splitlines())
        if job_name == name
    ]


@pytest.fixture
def slurm_env(cluster, testbed_env, recording_job) -> Iterator[dict[str, str]]:
    environ = {**testbed_env, "SLURM_CONF": str(cluster), "SPEECHBED_SLURM_POLL_SECONDS": "0.2"}
    yield environ
    subprocess.run(["scancel", "--me"], env=environ, timeout=10, check=False)
    wait(lambda: not slurm("squeue", "--noheader", "--me"), 20, "the queue to empty")


def step(record: Path, name: str, **options: object) -> dict[str, object]:
    args = ["--record", str(record), "--label", name]
    for flag in ("sleep", "exit", "wait_for", "wait_for_starts"):
        if flag in options:
            args += [f"--{flag.replace('_', '-')}", str(options.pop(flag))]
    step = {"script": "record_job.py", "config": "job.yml", "name": name, "args": args}
    return {**step, "run_in": "slurm", **options}


def write_pipeline(path: Path, steps: list[dict[str, object]], num_jobs: int = 4) -> Path:
    path.write_text(yaml.safe_dump({"num_jobs": num_jobs, "jobs": steps}, sort_keys=False))
    return path


def run(environ: dict[str, str], pipeline: Path, *flags: str) -> tuple[int, str]:
    output = io.StringIO()
    code = main(["-y", str(pipeline), *flags], environ=environ, stream=output)
    return code, output.getvalue()


def events(record: Path) -> list[dict]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines()]


def runner(environ: dict[str, str], pipeline: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(REPOSITORY / "scripts" / "pipeline.py"), "-y", str(pipeline)],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # our signals reach the runner only
    )


def test_barriers_gpus_logs_and_a_rerun_that_skips(tmp_path, slurm_env):
    record = tmp_path / "events.jsonl"
    steps = [
        step(record, "a", num_gpus=1, wait_for_starts=2),
        step(record, "b", num_gpus=1, wait_for_starts=2),
        step(record, "barrier", blocking=True),
        step(record, "c"),
    ]
    pipeline = write_pipeline(tmp_path / "order.yml", steps)
    code, output = run(slurm_env, pipeline)
    assert code == 0, output
    seen = {(event["name"], event["event"]): event for event in events(record)}
    # a and b ran at once (each waited for the other's start) on distinct GPUs Slurm picked
    assert {seen["a", "start"]["devices"], seen["b", "start"]["devices"]} == {"0", "1"}
    assert seen["barrier", "start"]["time"] >= max(
        seen["a", "end"]["time"], seen["b", "end"]["time"]
    )
    assert seen["c", "start"]["time"] >= seen["barrier", "end"]["time"]
    log = (tmp_path / "artifacts" / "logs" / "order" / "a.log").read_text()
    # a and b share script and resources: one job array (tests/test_slurm_arrays.py)
    assert "job says hello" in log and "submitted as element 0 of Slurm job array" in log
    assert "[a] job says hello" in output  # streamed to the console too
    count = len(events(record))
    code, output = run(slurm_env, pipeline)
    assert code == 0 and "4 job(s) already done" in output, output
    assert len(events(record)) == count and not _jobs("order/a")[1:]


def test_a_failing_job_fails_the_pipeline_and_holds_back_the_next_barrier(tmp_path, slurm_env):
    record = tmp_path / "events.jsonl"
    steps = [step(record, "bad", exit=3), step(record, "next", blocking=True)]
    code, output = run(slurm_env, write_pipeline(tmp_path / "fails.yml", steps))
    assert code == 1, output
    assert "failed bad" in output and "exit code 3" in output
    assert [event["name"] for event in events(record)] == ["bad", "bad"]
    # next may have been queued behind bad (afterok); then it was cancelled, never run
    assert {state for _, state in _jobs("fails/next")} <= {"CANCELLED"}


def test_the_jobs_after_a_barrier_are_queued_behind_it_before_it_ends(tmp_path, slurm_env):
    record, release = tmp_path / "events.jsonl", tmp_path / "release"
    steps = [
        step(record, "first", wait_for=release),
        step(record, "barrier", blocking=True),
        step(record, "after"),
    ]
    process = runner(slurm_env, write_pipeline(tmp_path / "queued.yml", steps))
    try:
        wait(lambda: events(record), 30, "first to start")
        [(barrier_id, barrier_state)] = wait(lambda: _jobs("queued/barrier"), 30, "the barrier")
        assert barrier_state == "PENDING"
        shown = slurm("scontrol", "show", "job", "--oneliner", barrier_id)
        [(first_id, _)] = _jobs("queued/first")
        assert f"Dependency=afterok:{first_id}" in shown, shown
        assert not _jobs("queued/after")  # one segment ahead only
        release.touch()
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, output
    order = [(event["name"], event["event"]) for event in events(record)]
    assert order == [
        (name, event) for name in ("first", "barrier", "after") for event in ("start", "end")
    ]


def test_sigterm_to_the_runner_cancels_its_jobs(tmp_path, slurm_env):
    record = tmp_path / "events.jsonl"
    steps = [step(record, "long", wait_for=tmp_path / "never")]
    process = runner(slurm_env, write_pipeline(tmp_path / "term.yml", steps))
    try:
        wait(lambda: events(record), 30, "the job to start")
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, output
    assert "cancelled Slurm job" in output and "interrupted" in output
    assert [state for _, state in _jobs("term/long")] == ["CANCELLED"]


def test_a_killed_runner_leaves_its_job_running_and_the_next_run_adopts_it(tmp_path, slurm_env):
    record, release = tmp_path / "events.jsonl", tmp_path / "release"
    pipeline = write_pipeline(tmp_path / "adopt.yml", [step(record, "job", wait_for=release)])
    first = runner(slurm_env, pipeline)
    try:
        wait(lambda: events(record), 30, "the job to start")
        os.killpg(first.pid, signal.SIGKILL)
        first.communicate(timeout=30)
        time.sleep(1.0)  # the watcher had its death signal and left
        assert [state for _, state in _jobs("adopt/job")] == ["RUNNING"]
        second = runner(slurm_env, pipeline)
        try:
            wait(
                lambda: "adopting" in (tmp_path / "artifacts/logs/adopt/job.log").read_text(),
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
    assert [event["event"] for event in events(record)] == ["start", "end"]  # ran once
    assert [state for _, state in _jobs("adopt/job")] == ["COMPLETED"]  # one submission
    code, output = run(slurm_env, pipeline)
    assert code == 0 and "already done" in output, output


# A job that behaves like training on Slurm: it resumes from its checkpoint when there is one;
# on SIGUSR1 (the time-limit warning) it writes the checkpoint and exits non-zero.
CHECKPOINTING_JOB = """\
import os, signal, sys, time
if len(sys.argv) > 3:  # its run folder (-y CONFIG FOLDER), else the working directory
    os.chdir(sys.argv[3])
checkpoint = "checkpoint.txt"
if os.path.exists(checkpoint):
    print("resumed from", open(checkpoint).read(), flush=True)
    sys.exit(0)
def stop(number, frame):
    open(checkpoint, "w").write("epoch 3")
    print("checkpointed", flush=True)
    sys.exit(1)
signal.signal(signal.SIGUSR1, stop)
open("started", "w").close()
time.sleep(60)
sys.exit(9)
"""


def test_the_time_limit_signal_requeues_and_the_job_resumes(tmp_path, slurm_env):
    (tmp_path / "checkpointing.py").write_text(CHECKPOINTING_JOB)
    steps = [
        {"script": "checkpointing.py", "config": "job.yml", "name": "train", "run_in": "slurm"}
    ]
    process = runner(slurm_env, write_pipeline(tmp_path / "requeue.yml", steps))
    try:
        wait(lambda: (tmp_path / "started").exists(), 30, "the job to start")
        [(job_id, _)] = _jobs("requeue/train")
        # What Slurm sends --signal seconds before the time limit (the test cannot wait for one)
        subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True, timeout=30)

        def requeued() -> bool:
            shown = slurm("scontrol", "show", "job", "--oneliner", job_id)
            return "JobState=PENDING" in shown and "Restarts=1" in shown

        wait(requeued, 30, "the requeue")
        # A requeued job is held for a while (BeginTime); let it start now, but in a later
        # second than the requeue: slurmd refuses a credential made in the second its
        # predecessor's was revoked ("Job credential revoked": the job would fail)
        time.sleep(1.1)
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], timeout=30)
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, output
    log = (tmp_path / "artifacts" / "logs" / "requeue" / "train.log").read_text()
    assert "checkpointed" in log and "requeued job" in log and "resumed from epoch 3" in log, log
    assert [state for _, state in _jobs("requeue/train")] == ["COMPLETED"]
