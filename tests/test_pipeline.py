"""Pipeline runner with real processes: barriers, exclusive GPU leases, failures, resume, signals.

GPU ids are fake (the runner only hands them out); every test has its own lease folder.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from speechbed.pipeline.cli import main
from speechbed.pipeline.executors import EXECUTOR_FACTORIES, HostExecutor, Launch
from speechbed.pipeline.inventory import discover_gpus

REPOSITORY = Path(__file__).resolve().parents[1]


def step(record: Path, name: str, **options: object) -> dict[str, object]:
    """A pipeline step running the recording job; options go to the step or its args.

    The name also goes into the args: steps with the same script, job file and args are the
    same work (one key), and these tests want distinct jobs.
    """
    options.setdefault("label", name)
    args = ["--record", str(record)]
    for flag in ("sleep", "exit", "wait_for", "wait_for_starts", "label"):
        if flag in options:
            args += [f"--{flag.replace('_', '-')}", str(options.pop(flag))]
    return {"script": "record_job.py", "config": "job.yml", "name": name, "args": args, **options}


def write_pipeline(path: Path, steps: list[dict[str, object]], num_jobs: int = 1) -> Path:
    path.write_text(yaml.safe_dump({"num_jobs": num_jobs, "jobs": steps}, sort_keys=False))
    return path


def run(environ: dict[str, str], pipeline: Path, *flags: str) -> tuple[int, str]:
    output = io.StringIO()
    code = main(["-y", str(pipeline), *flags], environ=environ, stream=output)
    return code, output.getvalue()


def read_events(record: Path) -> dict[str, dict[str, dict]]:
    """name -> {"start": event, "end": event} (the last of each kind)."""
    events: dict[str, dict[str, dict]] = {}
    if record.exists():
        for line in record.read_text().splitlines():
            event = json.loads(line)
            events.setdefault(event["name"], {})[event["event"]] = event
    return events


def intervals_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_barrier_orders_jobs_by_recorded_timestamps(tmp_path, testbed_env, recording_job):
    record = tmp_path / "events.jsonl"
    steps = [
        step(record, "a", wait_for_starts=2),
        step(record, "b", wait_for_starts=2),
        step(record, "barrier", sleep=0.1, blocking=True),
        step(record, "c", sleep=0.1),
        step(record, "d", sleep=0.1),
    ]
    code, output = run(testbed_env, write_pipeline(tmp_path / "p.yml", steps, num_jobs=4))
    assert code == 0, output
    events = read_events(record)
    assert set(events) == {"a", "b", "barrier", "c", "d"}
    before = max(events[name]["end"]["time"] for name in ("a", "b"))
    assert events["barrier"]["start"]["time"] >= before
    for name in ("c", "d"):
        assert events[name]["start"]["time"] >= events["barrier"]["end"]["time"]
    # a and b ran at the same time (their rendezvous), which is what makes the barrier matter.
    span = lambda name: (events[name]["start"]["time"], events[name]["end"]["time"])  # noqa: E731
    assert intervals_overlap(span("a"), span("b"))


def test_gpus_are_exclusive_and_never_idle(tmp_path, testbed_env, recording_job):
    record = tmp_path / "events.jsonl"
    # The first two meet (rendezvous): with two GPUs, two jobs must run at once.
    steps = [
        step(record, f"j{index}", sleep=0.2, num_gpus=1, wait_for_starts=2) for index in range(6)
    ]
    code, output = run(
        testbed_env, write_pipeline(tmp_path / "p.yml", steps, num_jobs=6), "--gpus", "7,9"
    )
    assert code == 0, output
    events = read_events(record)
    assert len(events) == 6
    by_device: dict[str, list[tuple[float, float]]] = {}
    for job in events.values():
        assert job["start"]["devices"] in ("7", "9")  # exactly one of the two fake GPUs
        by_device.setdefault(job["start"]["devices"], []).append(
            (job["start"]["time"], job["end"]["time"])
        )
    for spans in by_device.values():
        spans.sort()
        assert all(not intervals_overlap(x, y) for x, y in zip(spans, spans[1:], strict=False))
    # Never idle: both GPUs were busy at once, and each ran several of the jobs.
    assert sorted(by_device) == ["7", "9"]
    assert all(len(spans) >= 2 for spans in by_device.values())
    assert intervals_overlap(by_device["7"][0], by_device["9"][0])


def test_two_concurrent_pipelines_never_share_a_gpu(
    tmp_path, testbed_env, recording_job, start_runner
):
    record = tmp_path / "events.jsonl"
    runners = []
    for label in ("first", "second"):
        steps = [step(record, f"{label}{index}", sleep=0.25, num_gpus=1) for index in range(4)]
        pipeline = write_pipeline(tmp_path / f"{label}.yml", steps, num_jobs=4)
        runners.append(start_runner(pipeline, testbed_env, "--gpus", "3,5"))
    for runner in runners:
        output, _ = runner.communicate(timeout=60)
        assert runner.returncode == 0, output
    events = read_events(record)
    assert len(events) == 8
    spans = [
        (job["start"]["devices"], job["start"]["time"], job["end"]["time"])
        for job in events.values()
    ]
    for index, (device, start, end) in enumerate(spans):
        for other_device, other_start, other_end in spans[index + 1 :]:
            if device == other_device:
                assert not intervals_overlap((start, end), (other_start, other_end))


def test_job_environment_cwd_logs_and_prefixed_output(tmp_path, testbed_env, recording_job):
    record = tmp_path / "events.jsonl"
    steps = [step(record, "cpu"), step(record, "gpu", num_gpus=2)]
    code, output = run(testbed_env, write_pipeline(tmp_path / "p.yml", steps), "--gpus", "4,2")
    assert code == 0, output
    events = read_events(record)
    assert events["cpu"]["start"]["devices"] == ""
    assert events["gpu"]["start"]["devices"] == "4,2"
    assert events["cpu"]["start"]["cwd"] == str(tmp_path)  # SPEECHBED_ROOT
    log = tmp_path / "artifacts" / "logs" / "p" / "gpu.log"
    assert "job says hello" in log.read_text()
    assert "[gpu] job says hello" in output and "[cpu] job says hello" in output


def test_failure_fails_pipeline_and_stops_the_next_barrier(tmp_path, testbed_env, recording_job):
    record = tmp_path / "events.jsonl"
    steps = [
        step(record, "bad", exit=3),
        step(record, "same_segment", sleep=0.1),
        step(record, "barrier", blocking=True),
        step(record, "after"),
    ]
    pipeline = write_pipeline(tmp_path / "p.yml", steps, num_jobs=1)
    code, output = run(testbed_env, pipeline)
    assert code == 1
    assert set(read_events(record)) == {"bad", "same_segment"}
    assert "exit code 3" in output and "not started" in output
    log = (tmp_path / "artifacts/logs/p/bad.log").read_text()
    assert log.startswith("$ ") and "# exit code 3 after" in log

    code, output = run(testbed_env, pipeline, "--keep-going")
    assert code == 1  # 'bad' fails again; everything else is not behind a failed barrier
    assert set(read_events(record)) == {"bad", "same_segment", "barrier", "after"}


def test_keep_going_still_stops_behind_a_failed_barrier(tmp_path, testbed_env, recording_job):
    record = tmp_path / "events.jsonl"
    steps = [step(record, "barrier", exit=1, blocking=True), step(record, "after")]
    code, _ = run(testbed_env, write_pipeline(tmp_path / "p.yml", steps), "--keep-going")
    assert code == 1
    assert set(read_events(record)) == {"barrier"}


def test_rerun_skips_done_jobs_force_reruns_and_dry_run_shows_plan(
    tmp_path, testbed_env, recording_job
):
    record = tmp_path / "events.jsonl"
    steps = [step(record, "good"), step(record, "bad", exit=2)]
    pipeline = write_pipeline(tmp_path / "p.yml", steps, num_jobs=2)
    assert run(testbed_env, pipeline)[0] == 1
    record.unlink()
    code, output = run(testbed_env, pipeline, "--dry-run")
    assert code == 0 and not record.exists()
    assert "skip (done)" in output.split("good")[1].splitlines()[0]
    assert "run" in output.split("│ bad")[1].splitlines()[0]
    assert run(testbed_env, pipeline)[0] == 1
    assert set(read_events(record)) == {"bad"}  # good was skipped, failed bad rerun
    record.unlink()
    assert run(testbed_env, pipeline, "--force")[0] == 1
    assert set(read_events(record)) == {"good", "bad"}
    # Editing the job file changes the key: the job is no longer done.
    (tmp_path / "job.yml").write_text("setting: 2\n")
    record.unlink()
    run(testbed_env, pipeline)
    assert set(read_events(record)) == {"good", "bad"}


@pytest.fixture
def start_runner():
    """Starts scripts/pipeline.py processes; kills any still running when the test ends."""
    runners: list[subprocess.Popen] = []

    def start(pipeline: Path, environ: dict[str, str], *flags: str) -> subprocess.Popen:
        command = [sys.executable, str(REPOSITORY / "scripts/pipeline.py"), "-y", str(pipeline)]
        runner = subprocess.Popen(
            [*command, *flags],
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        runners.append(runner)
        return runner

    yield start
    for runner in runners:
        if runner.poll() is None:
            runner.kill()  # its jobs get SIGTERM through their death signal
            runner.communicate()


def _wait_for_start(record: Path, name: str, runner: subprocess.Popen) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        started = read_events(record).get(name, {}).get("start")
        if started:
            return started
        assert runner.poll() is None, runner.communicate()[0]
        time.sleep(0.02)
    raise AssertionError(f"{name} never started")


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise AssertionError(f"job process {pid} outlived its runner")


def _wait_lease_free(path: Path) -> None:
    deadline = time.monotonic() + 10
    with open(path) as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)


@pytest.mark.parametrize("death_signal_by", ["setpriv", "prctl"])
def test_resume_after_runner_is_killed(
    tmp_path, testbed_env, recording_job, death_signal_by, start_runner
):
    if death_signal_by == "prctl":  # no setpriv on PATH: the runner falls back to prctl
        (tmp_path / "empty_bin").mkdir()
        testbed_env["PATH"] = str(tmp_path / "empty_bin")
    record, gate = tmp_path / "events.jsonl", tmp_path / "gate"
    steps = [
        step(record, "first"),
        step(record, "second"),
        step(record, "long", wait_for=gate, num_gpus=1),
        step(record, "last"),
    ]
    pipeline = write_pipeline(tmp_path / "p.yml", steps, num_jobs=1)
    runner = start_runner(pipeline, testbed_env, "--gpus", "0")
    long_job = _wait_for_start(record, "long", runner)
    runner.send_signal(signal.SIGKILL)
    runner.communicate(timeout=10)
    _wait_gone(long_job["pid"])  # the job dies with its runner
    # ...and the killed runner's lease is free again (once its watchdog saw the job gone).
    _wait_lease_free(tmp_path / "leases" / "gpu-0.lock")
    gate.touch()
    record.unlink()
    code, output = run(testbed_env, pipeline, "--gpus", "0")
    assert code == 0, output
    assert set(read_events(record)) == {"long", "last"}  # first and second not rerun


def test_sigterm_interrupts_running_jobs_and_releases_leases(
    tmp_path, testbed_env, recording_job, start_runner
):
    record, gate = tmp_path / "events.jsonl", tmp_path / "gate"
    steps = [step(record, "long", wait_for=gate, num_gpus=1), step(record, "never")]
    pipeline = write_pipeline(tmp_path / "p.yml", steps, num_jobs=1)
    runner = start_runner(pipeline, testbed_env, "--gpus", "1")
    long_job = _wait_for_start(record, "long", runner)
    runner.send_signal(signal.SIGTERM)
    output, _ = runner.communicate(timeout=30)
    assert runner.returncode == 128 + signal.SIGTERM, output
    assert "interrupted" in output
    _wait_gone(long_job["pid"])
    assert set(read_events(record)) == {"long"} and "end" not in read_events(record)["long"]
    with open(tmp_path / "leases" / "gpu-1.lock") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    # Interrupted jobs are not done: the next run starts them again.
    gate.touch()
    assert run(testbed_env, pipeline, "--gpus", "1")[0] == 0
    assert read_events(record)["long"]["end"]


@pytest.mark.parametrize("signal_number", [signal.SIGINT])
def test_second_signal_kills_a_job_that_ignores_sigterm(
    tmp_path, testbed_env, signal_number, start_runner
):
    stubborn = tmp_path / "stubborn.py"
    stubborn.write_text(
        "import signal, time, pathlib\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "pathlib.Path('started').touch()\n"
        "time.sleep(60)\n"
    )
    (tmp_path / "job.yml").write_text("x: 1\n")
    pipeline = write_pipeline(tmp_path / "p.yml", [{"script": "stubborn.py", "config": "job.yml"}])
    runner = start_runner(pipeline, testbed_env, "--kill-grace", "30")
    deadline = time.monotonic() + 30
    while not (tmp_path / "started").exists():
        assert time.monotonic() < deadline and runner.poll() is None
        time.sleep(0.02)
    started = time.monotonic()
    runner.send_signal(signal_number)
    time.sleep(0.3)
    assert runner.poll() is None  # still waiting for the job to honour SIGTERM
    runner.send_signal(signal_number)
    output, _ = runner.communicate(timeout=20)
    assert runner.returncode == 128 + signal_number, output
    assert time.monotonic() - started < 20
    assert "second signal" in output


def test_a_small_job_uses_a_free_gpu_while_a_bigger_one_waits(tmp_path, testbed_env, recording_job):
    record = tmp_path / "events.jsonl"
    steps = [
        step(record, "one_gpu", num_gpus=1, wait_for_starts=2),  # ends only once 'small' started
        step(record, "two_gpus", num_gpus=2),
        step(record, "small", num_gpus=1),
    ]
    code, output = run(
        testbed_env, write_pipeline(tmp_path / "p.yml", steps, num_jobs=3), "--gpus", "0,1"
    )
    assert code == 0, output
    events = read_events(record)
    # 'small' took the idle GPU while 'two_gpus' waited for both.
    assert events["small"]["start"]["time"] < events["one_gpu"]["end"]["time"]
    assert events["two_gpus"]["start"]["time"] >= events["one_gpu"]["end"]["time"]
    assert events["two_gpus"]["start"]["devices"] in ("0,1", "1,0")


class RecordingExecutor(HostExecutor):
    """A test executor registered by name: wraps the host launch and logs its calls."""

    name = "recording"
    calls: Path

    def launch(self, job, devices, base_env):
        launch = super().launch(job, devices, base_env)
        with open(self.calls, "a") as calls:
            calls.write(f"launch {job.name} {devices}\n")
        return Launch(launch.argv, {**launch.env, "LAUNCHED_BY": "recording"}, launch.cwd)

    def cleanup(self, job, launch):
        with open(self.calls, "a") as calls:
            calls.write(f"cleanup {job.name} {launch.env['LAUNCHED_BY']}\n")


def test_a_new_executor_slots_in_by_name(tmp_path, testbed_env, recording_job, monkeypatch):
    RecordingExecutor.calls = tmp_path / "calls.txt"
    monkeypatch.setitem(EXECUTOR_FACTORIES, "recording", RecordingExecutor)
    record = tmp_path / "events.jsonl"
    steps = [
        step(record, "ok", run_in="recording", num_gpus=1),
        step(record, "bad", run_in="recording", exit=4),
    ]
    code, _ = run(testbed_env, write_pipeline(tmp_path / "p.yml", steps), "--gpus", "6")
    assert code == 1
    assert (tmp_path / "calls.txt").read_text().splitlines() == [
        "launch ok [6]",
        "cleanup ok recording",
        "launch bad []",
        "cleanup bad recording",  # also after a failure
    ]


class RemoteGpuExecutor(RecordingExecutor):
    """Like a Slurm executor: its jobs get GPUs elsewhere, so no local lease or inventory."""

    name = "remote"
    leases_local_gpus = False


def test_an_executor_with_its_own_gpus_takes_no_local_lease(
    tmp_path, testbed_env, recording_job, monkeypatch
):
    RemoteGpuExecutor.calls = tmp_path / "calls.txt"
    monkeypatch.setitem(EXECUTOR_FACTORIES, "remote", RemoteGpuExecutor)
    record = tmp_path / "events.jsonl"
    steps = [step(record, "big", run_in="remote", num_gpus=8)]
    code, output = run(testbed_env, write_pipeline(tmp_path / "p.yml", steps), "--gpus", "")
    assert code == 0, output
    assert (tmp_path / "calls.txt").read_text().splitlines()[0] == "launch big []"
    assert not (tmp_path / "leases").exists()


def test_gpu_inventory_precedence():
    environ = {"SPEECHBED_GPUS": "4,5", "CUDA_VISIBLE_DEVICES": "0"}
    assert discover_gpus("1", environ) == ([1], "--gpus")
    assert discover_gpus(None, environ) == ([4, 5], "SPEECHBED_GPUS")
    assert discover_gpus(None, {"SPEECHBED_GPUS": " ", "CUDA_VISIBLE_DEVICES": "2,3"}) == (
        [2, 3],
        "CUDA_VISIBLE_DEVICES",
    )
    assert discover_gpus("", environ) == ([], "--gpus")


def test_help_describes_the_pipeline_schema():
    result = subprocess.run(
        [sys.executable, str(REPOSITORY / "scripts/pipeline.py"), "--help"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0
    for text in ("--gpus", "--dry-run", "--keep-going", "num_jobs", "blocking", "run_in"):
        assert text in result.stdout


def test_gpus_from_nvidia_smi_when_nothing_else_is_set(tmp_path, monkeypatch):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\n"
        "echo 'GPU 0: NVIDIA H100 (UUID: GPU-aaaa)'\n"
        "echo 'GPU 1: NVIDIA H100 (UUID: GPU-bbbb)'\n"
        "echo '  MIG 1g.10gb Device 0: (UUID: MIG-cccc)'\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")
    assert discover_gpus(None, {}) == ([0, 1], "nvidia-smi -L")
    fake.write_text("#!/bin/sh\nexit 9\n")
    assert discover_gpus(None, {}) == ([], "none found")


def test_progress_bar_output_shows_final_state_of_each_line(tmp_path, testbed_env):
    (tmp_path / "bar.py").write_text(
        "import sys\n"
        "sys.stdout.write('step 1/3\\rstep 2/3\\rstep 3/3\\n')\n"
        "sys.stdout.write('no newline at the end')\n"
    )
    (tmp_path / "job.yml").write_text("x: 1\n")
    pipeline = write_pipeline(tmp_path / "p.yml", [{"script": "bar.py", "config": "job.yml"}])
    code, output = run(testbed_env, pipeline)
    assert code == 0, output
    assert "[job] step 3/3\n" in output and "step 1/3" not in output
    assert "[job] no newline at the end\n" in output
    log = (tmp_path / "artifacts/logs/p/job.log").read_bytes().decode()
    assert "step 1/3\rstep 2/3\rstep 3/3\nno newline at the end" in log  # the log keeps it all


def test_on_a_terminal_the_live_counts_show_and_ctrl_c_stops(tmp_path, testbed_env, recording_job):
    record, gate = tmp_path / "events.jsonl", tmp_path / "gate"
    steps = [step(record, "quick"), step(record, "long", wait_for=gate)]
    pipeline = write_pipeline(tmp_path / "p.yml", steps, num_jobs=2)
    controller, terminal = pty.openpty()
    command = [sys.executable, str(REPOSITORY / "scripts/pipeline.py"), "-y", str(pipeline)]
    runner = subprocess.Popen(command, env=testbed_env, stdout=terminal, stderr=terminal)
    os.close(terminal)
    chunks: list[bytes] = []

    def read_terminal() -> None:  # keep reading, so the runner never blocks on a full terminal
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the runner closed the terminal
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        _wait_for_start(record, "long", runner)
        deadline = time.monotonic() + 30
        while "end" not in read_events(record).get("quick", {}) and time.monotonic() < deadline:
            time.sleep(0.02)
        runner.send_signal(signal.SIGINT)
        assert runner.wait(timeout=30) == 128 + signal.SIGINT
        reader.join(timeout=10)
    finally:
        if runner.poll() is None:
            runner.kill()
        os.close(controller)
    text = b"".join(chunks).decode("utf-8", "replace")
    assert "pipeline: pending" in text  # the live count line
    assert "interrupted" in text and "done" in text
