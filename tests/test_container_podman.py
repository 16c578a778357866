"""Real pipelines whose jobs run in containers through podman (the host's filesystem as rootfs).

Runs ``scripts/pipeline.py`` as a user would; skipped only when podman is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
PODMAN = shutil.which("podman")
RUNC = shutil.which("runc") or "/usr/sbin/runc"
#: The container user: not the runner's own, so ownership of written files proves --user.
CONTAINER_USER = (1234, 1234)

pytestmark = pytest.mark.skipif(
    PODMAN is None, reason="podman is not installed (.ci/run installs podman, runc and uidmap)"
)

# The job, stdlib only because it runs as CONTAINER_USER with the system interpreter. Its
# config is JSON (valid YAML) whose ${VAR}s it expands with the container's environment.
PROBE = """\
import json, os, signal, sys, time
config_path = sys.argv[sys.argv.index("-y") + 1]
with open(config_path) as handle:
    config = json.loads(os.path.expandvars(handle.read()))
if config.get("ignore_sigterm"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if config.get("started"):
    open(config["started"], "w").close()
time.sleep(config.get("sleep", 0))
with open(config["input"]) as handle:
    text = handle.read()
report = {"argv": sys.argv, "config": config, "input_text": text, "uid": os.getuid(),
          "gid": os.getgid(), "cwd": os.getcwd(), "env": dict(os.environ)}
with open(config["output"] + ".tmp", "w") as handle:
    json.dump(report, handle)
os.rename(config["output"] + ".tmp", config["output"])
print("probe wrote", config["output"], flush=True)
sys.exit(config.get("exit", 0))
"""


@pytest.fixture(scope="module")
def podman_works() -> None:
    """Fail with a hint (not skip) when podman is installed but cannot run a container."""
    probe = subprocess.run(
        [PODMAN, "--runtime", RUNC, "run", "--rm", "--network", "none", "--rootfs", "/:O",
         "/bin/true"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.fail(
            "podman is installed but cannot run a container; apply setup/ci_system.sh "
            f"(default_ulimits) and check runc:\n{probe.stderr}"
        )


@pytest.fixture
def testbed(tmp_path: Path, podman_works: None) -> dict:
    """A checkout-like root with the probe, storage folders open to CONTAINER_USER, and env."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    (root / "scripts" / "probe.py").write_text(PROBE)
    storage = {}
    for name in ("data", "cache", "artifacts"):
        folder = tmp_path / "storage" / name
        folder.mkdir(parents=True)
        folder.chmod(0o777)  # the container user is not the owner
        storage[name] = folder
    (storage["data"] / "input.txt").write_text("utterance one\n")
    (tmp_path / "configs").mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("SPEECHBED_GPUS", "CUDA_VISIBLE_DEVICES", "ENV_FILE")
    }
    env.update(
        SPEECHBED_ROOT=str(root),
        DATA_DIRECTORY=str(storage["data"]),
        CACHE_DIRECTORY=str(storage["cache"]),
        ARTIFACTS_DIRECTORY=str(storage["artifacts"]),
        SPEECHBED_LEASE_DIR=str(tmp_path / "leases"),
        CONTAINER_ENGINE="podman",
        CONTAINER_RUNTIME=RUNC,
        CONTAINER_NETWORK="none",
        CONTAINER_ROOTFS="/",
        CONTAINER_PYTHON="/usr/bin/python3",
        CONTAINER_GPU_MODE="env",
        CONTAINER_USER="{}:{}".format(*CONTAINER_USER),
        MY_MODELS=str(storage["cache"] / "models"),
        COMET_API_KEY="secret-comet-key",
        UNRELATED_TOKEN="secret-token",
    )
    return {"root": root, "storage": storage, "env": env, "tmp": tmp_path}


def _config(testbed: dict, name: str, **extra: object) -> Path:
    """A job file that reads the data input and writes <artifacts>/<name>.json."""
    config = {
        "input": "${DATA_DIRECTORY}/input.txt",
        "output": "${ARTIFACTS_DIRECTORY}/" + name + ".json",
        "models": "${MY_MODELS}",
        **extra,
    }
    path = testbed["tmp"] / "configs" / f"{name}.yml"
    path.write_text(json.dumps(config, indent=1))
    return path


def _pipeline(testbed: dict, jobs: list[dict]) -> Path:
    lines = [f"name: {testbed['tmp'].name}", "num_jobs: 2", "jobs:"]
    for job in jobs:
        lines.append(
            "  - " + json.dumps({"script": "scripts/probe.py", "run_in": "container", **job})
        )
    path = testbed["tmp"] / "pipeline.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _pipeline_command(pipeline: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(REPOSITORY / "scripts" / "pipeline.py"),
        "-y",
        str(pipeline),
        *extra,
    ]


def _containers(label: str) -> list[str]:
    listed = subprocess.run(
        [PODMAN, "ps", "--all", "--filter", f"label={label}", "--format", "{{.Names}}"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return listed.stdout.split()


def test_pipeline_jobs_see_mounts_gpus_and_only_needed_variables(testbed: dict) -> None:
    pipeline = _pipeline(
        testbed,
        [
            {"name": "gpu-job", "config": str(_config(testbed, "gpu-job")), "num_gpus": 2},
            {"name": "cpu-job", "config": str(_config(testbed, "cpu-job"))},
        ],
    )
    run = subprocess.run(
        _pipeline_command(pipeline, "--gpus", "3,5"),
        env=testbed["env"], cwd=testbed["root"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    artifacts = testbed["storage"]["artifacts"]
    reports = {
        name: json.loads((artifacts / f"{name}.json").read_text())
        for name in ("gpu-job", "cpu-job")
    }
    for name, report in reports.items():
        # The mounted folders at their container paths, with ${VAR}s resolved inside.
        assert report["config"]["input"] == "/storage/data/input.txt"
        assert report["config"]["output"] == f"/storage/artifacts/{name}.json"
        assert report["config"]["models"] == "/storage/cache/models"  # host path rewritten
        assert report["input_text"] == "utterance one\n"
        assert report["cwd"] == "/workspace"
        assert report["argv"] == [
            "/workspace/scripts/probe.py", "-y", f"/storage/job/{name}/config/{name}.yml"
        ]  # fmt: skip
        # Written as the container user, and owned by that uid on the host.
        assert (report["uid"], report["gid"]) == CONTAINER_USER
        stat = (artifacts / f"{name}.json").stat()
        assert (stat.st_uid, stat.st_gid) == CONTAINER_USER
        env = report["env"]
        assert env["SPEECHBED_ROOT"] == "/workspace"
        assert env["SPEECHBED_JOB_NAME"] == name
        assert "COMET_API_KEY" not in env and "UNRELATED_TOKEN" not in env
        assert "CUDA_VISIBLE_DEVICES" not in env  # host ids mean nothing inside
        assert not any(value.startswith(str(testbed["tmp"])) for value in env.values())
    assert reports["gpu-job"]["env"]["NVIDIA_VISIBLE_DEVICES"] == "3,5"
    assert reports["cpu-job"]["env"]["NVIDIA_VISIBLE_DEVICES"] == "void"
    # The job's own console output reached its log through the engine.
    log = (artifacts / "logs" / testbed["tmp"].name / "gpu-job.log").read_text()
    assert "probe wrote /storage/artifacts/gpu-job.json" in log
    assert _containers(f"speechbed.pipeline={testbed['tmp'].name}") == []


def test_failing_container_job_fails_the_pipeline(testbed: dict) -> None:
    pipeline = _pipeline(
        testbed,
        [
            {"name": "fails", "config": str(_config(testbed, "fails", exit=7))},
            {"name": "after", "config": str(_config(testbed, "after")), "blocking": True},
        ],
    )
    run = subprocess.run(
        _pipeline_command(pipeline),
        env=testbed["env"], cwd=testbed["root"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode != 0, run.stdout + run.stderr
    artifacts = testbed["storage"]["artifacts"]
    assert (artifacts / "fails.json").exists()  # it ran, then exited 7
    assert not (artifacts / "after.json").exists()  # nothing past the barrier started
    assert "failed fails" in run.stdout and "(exit code 7)" in run.stdout  # the container's code


def test_interrupted_job_leaves_no_container(testbed: dict) -> None:
    # The job ignores SIGTERM, so after the grace period the engine client is killed and
    # only the executor's cleanup can remove the still-running container.
    started = testbed["storage"]["artifacts"] / "started"
    config = _config(
        testbed, "sleeper", sleep=120, ignore_sigterm=True,
        started="${ARTIFACTS_DIRECTORY}/started",
    )  # fmt: skip
    pipeline = _pipeline(testbed, [{"name": "sleeper", "config": str(config)}])
    label = f"speechbed.pipeline={testbed['tmp'].name}"
    runner = subprocess.Popen(
        _pipeline_command(pipeline, "--kill-grace", "1"),
        env=testbed["env"], cwd=testbed["root"], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not started.exists():
            assert runner.poll() is None, runner.communicate()[0]
            assert time.monotonic() < deadline, "the container job never started"
            time.sleep(0.1)
        assert len(_containers(label)) == 1
        runner.send_signal(signal.SIGINT)  # Ctrl-C
        output, _ = runner.communicate(timeout=120)
    finally:
        if runner.poll() is None:
            runner.kill()
        left = _containers(label)
        if left:  # leave the machine clean even when the assertion below fails
            subprocess.run([PODMAN, "rm", "--force", "--time", "0", *left], capture_output=True)
    assert runner.returncode != 0, output
    assert left == []
    assert not (testbed["storage"]["artifacts"] / "sleeper.json").exists()


def test_run_in_container_command_line(testbed: dict) -> None:
    """``make run_in_container`` runs ``python -m speechbed.pipeline.container run -- ...``."""
    code = (
        "import os, sys; open('/storage/cache/made.txt', 'w').write(os.getcwd()); "
        "print('gpus', os.environ['NVIDIA_VISIBLE_DEVICES']); sys.exit(4)"
    )
    run = subprocess.run(
        [sys.executable, "-m", "speechbed.pipeline.container", "run", "--gpus", "2", "--",
         "/usr/bin/python3", "-c", code],
        # a fake inventory: GPU 2 must exist for gpus=2 to be leased (the engine gets env mode)
        env={**testbed["env"], "SPEECHBED_GPUS": "0,1,2"}, cwd=testbed["root"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert run.returncode == 4, run.stdout + run.stderr  # the command's own exit code
    assert "gpus 2" in run.stdout
    made = testbed["storage"]["cache"] / "made.txt"
    assert made.read_text() == "/workspace"
    assert made.stat().st_uid == CONTAINER_USER[0]
    assert _containers("speechbed.job=interactive") == []


def test_tensorboard_runs_in_the_container_on_the_host_port(testbed: dict) -> None:
    from speechbed.services import start_service, stop_service

    with socket.socket() as probe:  # a free host port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(testbed["env"], CONTAINER_PYTHON=sys.executable, TENSORBOARD_HOST_PORT=str(port))
    for name in ("CONTAINER_NETWORK", "CONTAINER_USER"):  # publishing needs the bridge network;
        env.pop(name)  # the runner's own user can run this interpreter
    artifacts = testbed["storage"]["artifacts"]
    state = start_service("tensorboard", artifacts, testbed["root"], environ=env, where="container")
    try:
        assert state["container"] in _containers("speechbed.job=tensorboard")
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).read()
        assert b"TensorBoard" in page
        # A killed engine client leaves the container running: --stop still removes it.
        os.killpg(state["pid"], signal.SIGKILL)
        os.waitpid(state["pid"], 0)
        assert state["container"] in _containers("speechbed.job=tensorboard")
    finally:
        stop_service("tensorboard", artifacts)
        left = state["container"] in _containers("speechbed.job=tensorboard")
        if left:  # leave the machine clean even when the assertion below fails
            subprocess.run([PODMAN, "rm", "--force", "--time", "0", state["container"]])
    assert not left
