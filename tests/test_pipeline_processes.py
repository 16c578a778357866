"""No process of a pipeline outlives it: SIGKILL of a runner or of the experiment driver, with
real processes, a job's own child processes and a GPU lease shared by two runners.

Every test records the pids it causes to exist and kills them by pid when it ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from speechbed.pipeline.watchdog import JobWatchdog

REPOSITORY = Path(__file__).resolve().parents[1]

# A job that starts a child process (`sleep 300`), records both pids (and its runner's, and
# that runner's parent's) in --pids (default PIDS_FILE, replaced when written), then sleeps. With --slow-stop it takes 3 s to honour
# SIGTERM, recording when the signal came and when it exits in --record.
FAMILY_JOB = """\
import argparse, json, os, signal, subprocess, sys, time
parser = argparse.ArgumentParser()
parser.add_argument("-y", required=True)
parser.add_argument("--pids", default=PIDS_FILE)
parser.add_argument("--record")
parser.add_argument("--slow-stop", action="store_true")
arguments = parser.parse_args()
def record(event):
    with open(arguments.record, "a") as log:
        log.write(json.dumps({"event": event, "time": time.time(), "pid": os.getpid()}) + "\\n")
def stop_slowly(number, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    record("term")
    time.sleep(3)
    record("exit")
    os._exit(0)
if arguments.slow_stop:
    signal.signal(signal.SIGTERM, stop_slowly)
child = subprocess.Popen(["sleep", "300"])
runner = os.getppid()
with open(f"/proc/{runner}/stat") as stat:
    runner_parent = int(stat.read().rsplit(")", 1)[1].split()[1])
pids = {"job": os.getpid(), "child": child.pid, "runner": runner, "runner_parent": runner_parent}
with open(arguments.pids + ".tmp", "w") as file:
    json.dump(pids, file)
os.replace(arguments.pids + ".tmp", arguments.pids)
time.sleep(300)
"""

# A job that records when it started and whether the job and child in --pids were then alive.
CHECKING_JOB = """\
import argparse, json, os, time
parser = argparse.ArgumentParser()
parser.add_argument("-y", required=True)
parser.add_argument("--pids", required=True)
parser.add_argument("--record", required=True)
arguments = parser.parse_args()
started = time.time()
def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False
pids = json.load(open(arguments.pids))
line = {"event": "second", "time": started,
        "alive": [pids[name] for name in ("job", "child") if alive(pids[name])]}
with open(arguments.record, "a") as log:
    log.write(json.dumps(line) + "\\n")
"""


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def wait_until(condition: Callable[[], object], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"after {seconds:.0f} s: {what}")
        time.sleep(0.02)


def read_pids(path: Path, starter: subprocess.Popen, log: Path, seconds: float = 30) -> dict:
    """The pids the job wrote to ``path``; fails early when ``starter`` exits first."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert starter.poll() is None, f"exit {starter.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"after {seconds} s, no job started:\n{log.read_text()}"
        time.sleep(0.02)
    return json.loads(path.read_text())


def read_events(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    return {event["event"]: event for event in map(json.loads, path.read_text().splitlines())}


@pytest.fixture
def processes() -> Iterator[list[int]]:
    """Pids a test caused to exist; whichever still run at the end are SIGKILLed."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def start(command: list[str], environ: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("a") as output:
        return subprocess.Popen(command, env=environ, stdout=output, stderr=subprocess.STDOUT)


def start_runner(
    pipeline: Path, environ: dict[str, str], log: Path, *flags: str
) -> subprocess.Popen:
    command = [sys.executable, str(REPOSITORY / "scripts/pipeline.py"), "-y", str(pipeline)]
    return start([*command, *flags], environ, log)


def write_pipeline(path: Path, steps: list[dict[str, object]]) -> Path:
    path.write_text(yaml.safe_dump({"num_jobs": 1, "jobs": steps}, sort_keys=False))
    return path


@pytest.fixture
def family_job(tmp_path: Path) -> str:
    (tmp_path / "family_job.py").write_text(FAMILY_JOB.replace("PIDS_FILE", "None"))
    (tmp_path / "check_job.py").write_text(CHECKING_JOB)
    (tmp_path / "job.yml").write_text("setting: 1\n")
    return "family_job.py"


def test_sigkilled_runner_takes_its_job_and_the_job_s_child(
    tmp_path, testbed_env, family_job, processes
):
    pids_file = tmp_path / "pids.json"
    step = {"script": family_job, "config": "job.yml", "args": ["--pids", str(pids_file)]}
    log = tmp_path / "log"
    runner = start_runner(write_pipeline(tmp_path / "p.yml", [step]), testbed_env, log)
    processes.append(runner.pid)
    try:
        pids = read_pids(pids_file, runner, log)
        processes.extend([pids["job"], pids["child"]])
        assert alive(pids["child"])
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
        wait_until(
            lambda: not alive(pids["job"]) and not alive(pids["child"]),
            15,
            f"the job ({alive(pids['job'])=}) or its child ({alive(pids['child'])=}) outlived "
            "the SIGKILLed runner",
        )
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()


def test_a_gpu_stays_leased_until_every_process_of_a_killed_runner_s_job_is_gone(
    tmp_path, testbed_env, family_job, processes
):
    """A job that takes 3 s to honour SIGTERM, with a child: a second runner on the same GPU
    starts its job only once neither is left."""
    pids_file, record = tmp_path / "pids.json", tmp_path / "events.jsonl"
    first = {
        "script": family_job,
        "config": "job.yml",
        "num_gpus": 1,
        "args": ["--pids", str(pids_file), "--record", str(record), "--slow-stop"],
    }
    second = {
        "script": "check_job.py",
        "config": "job.yml",
        "num_gpus": 1,
        "args": ["--pids", str(pids_file), "--record", str(record)],
    }
    log = tmp_path / "log"
    runner = start_runner(
        write_pipeline(tmp_path / "first.yml", [first]), testbed_env, log, "--gpus", "0"
    )
    processes.append(runner.pid)
    later = None
    try:
        pids = read_pids(pids_file, runner, log)
        processes.extend([pids["job"], pids["child"]])
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
        killed = time.time()
        later = start_runner(
            write_pipeline(tmp_path / "second.yml", [second]), testbed_env, log, "--gpus", "0"
        )
        processes.append(later.pid)
        assert later.wait(timeout=30) == 0, log.read_text()
        events = read_events(record)
        assert "term" in events, "the job never got SIGTERM"
        assert events["second"]["alive"] == [], (
            f"the second runner's job started {events['second']['time'] - killed:.2f} s after "
            f"the kill, while {events['second']['alive']} of {pids} still ran"
        )
        assert events["second"]["time"] >= events["exit"]["time"]
        assert events["exit"]["time"] - events["term"]["time"] >= 2.9  # it did take its time
    finally:
        for process in (runner, later):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


def test_a_killed_job_that_ignores_sigterm_is_killed_after_the_grace(
    tmp_path, testbed_env, processes
):
    stubborn = tmp_path / "stubborn.py"
    stubborn.write_text(
        "import json, os, signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        "json.dump({'job': os.getpid(), 'child': child.pid}, open('pids.tmp', 'w'))\n"
        "os.replace('pids.tmp', 'pids.json')\n"
        "time.sleep(300)\n"
    )
    (tmp_path / "job.yml").write_text("x: 1\n")
    pipeline = write_pipeline(tmp_path / "p.yml", [{"script": "stubborn.py", "config": "job.yml"}])
    log = tmp_path / "log"
    runner = start_runner(pipeline, testbed_env, log, "--kill-grace", "0.5")
    processes.append(runner.pid)
    try:
        pids = read_pids(tmp_path / "pids.json", runner, log)
        processes.extend(pids.values())
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
        time.sleep(0.2)
        assert alive(pids["job"])  # still in its grace
        wait_until(
            lambda: not any(map(alive, pids.values())),
            10,
            "a job that ignores SIGTERM outlived its killed runner's grace",
        )
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()


EXPERIMENT = """\
data:
  cache_directory: {cache}
training:
  num_epochs: 1
"""


def test_sigkilled_experiment_driver_takes_its_runners_and_trainings(
    tmp_path, testbed_env, family_job, processes
):
    """`make demo` / `make experiment run=1` start scripts/sweep_experiment.py --run: kill it
    while a training (here a stand-in that starts a child) runs under the nested pipelines."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    for name in ("sweep_experiment.py", "pipeline.py"):  # so the driver's root is tmp_path
        shutil.copy(REPOSITORY / "scripts" / name, scripts / name)
    pids_file = tmp_path / "pids.json"
    (scripts / "train.py").write_text(FAMILY_JOB.replace("PIDS_FILE", repr(str(pids_file))))
    for name in ("evaluate.py", "analyze.py"):  # never reached: the test kills the driver first
        (scripts / name).write_text("raise SystemExit(3)\n")
    cache = tmp_path / "cache" / "fbank"
    for partition in ("train", "dev", "test"):
        (cache / f"{partition}.zarr").mkdir(parents=True)
    experiment = tmp_path / "experiments" / "tiny.yml"
    experiment.parent.mkdir()
    experiment.write_text(EXPERIMENT.format(cache=cache))
    command = [sys.executable, str(scripts / "sweep_experiment.py"), "-y", str(experiment), "--run"]
    log = tmp_path / "log"
    driver = start(command, testbed_env, log)
    processes.append(driver.pid)
    try:
        pids = read_pids(pids_file, driver, log, seconds=60)
        # job, its child, the train pipeline's runner and the outer runner (the driver itself,
        # or its child process)
        processes.extend(pids.values())
        assert all(map(alive, pids.values())), pids
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=10)
        wait_until(
            lambda: not any(map(alive, pids.values())),
            30,
            f"still running after the driver was killed: "
            f"{[name for name, pid in pids.items() if alive(pid)]}",
        )
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()


def test_the_watchdog_keeps_a_reaped_job_s_lease_while_a_process_of_its_group_lives(tmp_path):
    """What a job leaves behind can take a while to die (a process tearing down its CUDA
    context): the runner returns its own lease copy at once, the watchdog holds on."""
    lock_path = tmp_path / "gpu-0.lock"
    lease = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
    straggler = subprocess.Popen(["sleep", "300"], process_group=0)  # the job's last process
    watchdog = JobWatchdog(grace=1.0, warn=pytest.fail)
    try:
        watchdog.watch(straggler.pid, [lease], signal_leader=False)
        os.close(lease)  # the runner's copy goes...
        watchdog.forget(straggler.pid, holds_leases=True)
        with open(lock_path) as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ...the lease stays
        straggler.kill()
        straggler.wait()
        with open(lock_path) as other:
            wait_until(lambda: not _blocked(other), 10, "the lease outlived its job's last process")
    finally:
        if straggler.poll() is None:
            straggler.kill()
            straggler.wait()
        watchdog.close()


def _blocked(lock: object) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    return False
