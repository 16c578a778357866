"""`make tensorboard` and `make jupyter`: real servers answering on loopback only, stopped by pid."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from speechbed.services import _alive, read_state, stop_service

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of sockets listening on ``port`` (from /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if int(port_hex, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                if len(address) == 8:
                    found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
                else:
                    found.add(address)
    return found


def _make(target: str, args: str, artifacts: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "ARTIFACTS_DIRECTORY": str(artifacts)}
    environment.pop("JUPYTER_TOKEN", None)
    # -o install: never reinstall the shared environment from a test
    return subprocess.run(
        ["make", "--no-print-directory", "-o", "install", target, f"args={args}"],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=240,
    )  # fmt: skip


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.parametrize("service", ["tensorboard", "jupyter"])
def test_service_answers_on_loopback_and_stops_by_pid(service, tmp_path):
    artifacts = tmp_path / "artifacts"
    port = _free_port()
    try:
        started = _make(service, f"--port {port}", artifacts)
        assert started.returncode == 0, started.stderr + started.stdout
        state = read_state(artifacts, service)
        assert state is not None and state["port"] == port and _alive(state["pid"])
        assert oct((artifacts / "services" / f"{service}.json").stat().st_mode)[-3:] == "600"
        assert _listening_addresses(port) == {"127.0.0.1"}
        if service == "tensorboard":
            assert _get(f"http://127.0.0.1:{port}/data/logdir") == 200
        else:
            token = state["url"].split("token=", 1)[1]
            assert len(token) >= 32 and token in started.stdout
            assert _get(f"http://127.0.0.1:{port}/api/status") == 403  # no token, no entry
            assert _get(f"http://127.0.0.1:{port}/api/status?token={token}") == 200
        # a second start finds the running one instead of starting another
        again = _make(service, f"--port {port}", artifacts)
        assert again.returncode == 0 and f"pid {state['pid']}" in again.stdout
        stopped = _make(service, "--stop", artifacts)
        assert stopped.returncode == 0 and "stopped" in stopped.stdout
        assert not _alive(state["pid"]) or _zombie(state["pid"])
        assert not _listening_addresses(port)
        assert read_state(artifacts, service) is None
    finally:
        stop_service(service, artifacts)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_state_file_never_outlives_its_process(tmp_path):
    folder = tmp_path / "services"
    folder.mkdir()
    process = subprocess.Popen(["true"])
    process.wait()
    (folder / "tensorboard.json").write_text(json.dumps({"pid": process.pid, "url": "x"}))
    assert read_state(tmp_path, "tensorboard") is None
    assert not (folder / "tensorboard.json").exists()
