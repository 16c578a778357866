"""Long-running helper services: JupyterLab, TensorBoard and optuna-dashboard, in the background.

Called by ``make jupyter`` / ``make tensorboard`` / ``make dashboard`` (``python -m
speechbed.services NAME``) and tests. JupyterLab and TensorBoard run on the host or in the
image; the dashboard (a search study's storage, ``speechbed.search.dashboard``) on the host.

Each service binds to loopback unless ``--host`` says otherwise, runs in its own process
group, and leaves ``${ARTIFACTS_DIRECTORY}/services/<name>.json`` (pid, url; readable by the
owner only, since Jupyter's url carries its token) so ``--stop`` and tests can end it.
``service_argv`` is the one place that builds a service's command line; ``service_command``
launches it on the host and ``service_invocation`` in DOCKER_IMAGE_NAME (``choose_launch``:
``--where auto``, the command line's default, picks the image when the engine and image are
there; ports published the same way).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath

from speechbed.errors import UserInputError
from speechbed.outputs import atomic_output
from speechbed.pipeline.container.commands import (
    STORAGE_PATHS,
    WORKSPACE,
    ContainerInvocation,
    interactive_invocation,
    remove_command,
)
from speechbed.pipeline.container.executor import container_available
from speechbed.pipeline.container.settings import ContainerSettings
from speechbed.reports.tensorboard_view import VIEW_FOLDER, view_folder
from speechbed.storage import repository_root, storage_directory

SERVICES = ("jupyter", "tensorboard", "dashboard")
DEFAULT_PORTS = {
    "jupyter": ("JUPYTER_HOST_PORT", 8888),
    "tensorboard": ("TENSORBOARD_HOST_PORT", 6006),
    "dashboard": ("DASHBOARD_HOST_PORT", 8080),
}
LOOPBACK = "127.0.0.1"
#: The image's ports for JupyterLab and TensorBoard (docker/Dockerfile EXPOSEs them).
IMAGE_PORTS = {"jupyter": 8888, "tensorboard": 6006}
#: What `make jupyter` opens, relative to the repository (JupyterLab's root).
NOTEBOOK = "notebooks/analysis.ipynb"


@dataclass
class ServiceLaunch:
    """How to start a service: argv, extra environment and the url it will answer on."""

    argv: list[str]
    environment: dict[str, str]
    url: str


def service_argv(
    name: str,
    python: str,
    bind: str | None,
    port: int,
    root_dir: str | PurePath,
    logdir: str | PurePath,
    as_root: bool = False,
    search_file: str | PurePath | None = None,
) -> list[str]:
    """The command line of a service, on the host or in the image (the one place it is built).

    ``bind`` None binds every interface (in a container, where the engine publishes the port
    on the address a person chose). Jupyter's token is never here: it goes in JUPYTER_TOKEN.
    The dashboard serves ``search_file``'s storage (opened by the service, never on argv).
    """
    if name == "jupyter":
        argv = [
            python, "-m", "jupyterlab", "--no-browser", f"--ip={bind or '0.0.0.0'}",
            f"--port={port}", "--port-retries=0", f"--ServerApp.root_dir={root_dir}",
            f"--ServerApp.default_url=/lab/tree/{NOTEBOOK}",
        ]  # fmt: skip
        if as_root:
            argv.append("--allow-root")  # containers and CI run as root; Jupyter refuses otherwise
        return argv
    if name == "tensorboard":
        return [
            python, "-m", "tensorboard.main", "--bind_all" if bind is None else f"--host={bind}",
            # the named view: runs by experiment, condition and seed (reports.tensorboard_view)
            f"--port={port}", f"--logdir={PurePath(logdir, VIEW_FOLDER)}",
            "--reload_interval=15",
        ]  # fmt: skip
    if name == "dashboard":
        if search_file is None:
            raise UserInputError("the dashboard serves a search study: give its file (yml=FILE)")
        return [
            python, "-m", "speechbed.search.dashboard", "-y", str(search_file),
            f"--host={bind or '0.0.0.0'}", f"--port={port}",
        ]  # fmt: skip
    raise UserInputError(f"unknown service {name!r}; choose one of {', '.join(SERVICES)}")


def service_url(name: str, host: str, port: int, token: str | None) -> str:
    """Where a person opens the service (Jupyter's carries its token)."""
    shown = LOOPBACK if host in ("0.0.0.0", "::") else host
    if name != "jupyter":
        return f"http://{shown}:{port}/"
    # the analysis notebook opened at once; the token logs the browser in
    return f"http://{shown}:{port}/lab/tree/{NOTEBOOK}" + (f"?token={token}" if token else "")


def service_command(
    name: str,
    host: str,
    port: int,
    root: Path,
    artifacts: Path,
    token: str | None = None,
    search_file: Path | None = None,
) -> ServiceLaunch:
    """The launch of a service on the host with this interpreter."""
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    argv = service_argv(name, sys.executable, host, port, root, artifacts, as_root, search_file)
    if name != "jupyter":
        return ServiceLaunch(argv, {}, service_url(name, host, port, None))
    token = token or secrets.token_hex(24)
    # The token goes through the environment, not argv, so `ps` does not show it.
    return ServiceLaunch(argv, {"JUPYTER_TOKEN": token}, service_url(name, host, port, token))


def service_invocation(
    service: str,
    root: Path,
    environ: Mapping[str, str],
    host_port: int,
    host_address: str = LOOPBACK,
    jupyter_token: str | None = None,
) -> ContainerInvocation:
    """JupyterLab or TensorBoard in the image, published on ``host_address:host_port``.

    The token travels as ``JUPYTER_TOKEN`` (not in argv).
    """
    if service not in IMAGE_PORTS:
        raise UserInputError(f"unknown service {service!r}; use {' or '.join(SERVICES)}")
    settings = ContainerSettings.from_environment(environ)
    inside = IMAGE_PORTS[service]
    command = service_argv(
        service, settings.python, None, inside, WORKSPACE,
        STORAGE_PATHS["ARTIFACTS_DIRECTORY"], settings.runs_as_root,
    )  # fmt: skip
    extra_env: list[str] = []
    if service == "jupyter" and jupyter_token:
        environ = {**environ, "JUPYTER_TOKEN": jupyter_token}
        extra_env.append("JUPYTER_TOKEN")
    return interactive_invocation(
        settings, root, environ, command, [], ports=[(host_port, inside)],
        publish_address=host_address, extra_env=extra_env, label=service,
    )  # fmt: skip


def choose_launch(
    name: str,
    host: str,
    port: int,
    root: Path,
    artifacts: Path,
    environ: Mapping[str, str],
    where: str,
    search_file: Path | None = None,
) -> tuple[ServiceLaunch, tuple[str, list[str]] | None]:
    """The launch for ``where`` (host | container | auto); in a container, also its name and
    the command that removes it. The dashboard runs on the host (``auto`` means the host)."""
    token = environ.get("JUPYTER_TOKEN")
    if name not in IMAGE_PORTS:
        if where == "container":
            raise UserInputError(f"{name} runs on the host only; use --where host (or auto)")
        where = "host"
    if where in ("container", "auto"):
        missing = container_available(environ)
        if missing is None:
            token = (token or secrets.token_hex(24)) if name == "jupyter" else None
            invocation = service_invocation(name, root, environ, port, host, token)
            print(f"{name}: starting in the container ({invocation.name})", file=sys.stderr)
            remove = remove_command(ContainerSettings.from_environment(environ), invocation.name)
            launch = ServiceLaunch(
                invocation.argv, invocation.env, service_url(name, host, port, token)
            )
            return launch, (invocation.name, remove)
        if where == "container":
            raise UserInputError(f"cannot start {name} in a container: {missing}")
        print(f"{name}: starting on the host, not in a container: {missing}", file=sys.stderr)
    elif where != "host":
        raise UserInputError(f"--where {where!r}: use host, container or auto")
    return service_command(name, host, port, root, artifacts, token, search_file), None


def state_file(artifacts: Path, name: str) -> Path:
    return artifacts / "services" / f"{name}.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def port_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on host:port."""
    target = LOOPBACK if host in ("0.0.0.0", "::") else host
    try:
        with socket.create_connection((target, port), timeout=timeout):
            return True
    except OSError:
        return False


def read_state(artifacts: Path, name: str) -> dict | None:
    """The running service's recorded state, or None when it is not running."""
    path = state_file(artifacts, name)
    if not path.is_file():
        return None
    state = json.loads(path.read_text(encoding="utf-8"))
    if not _alive(int(state["pid"])):
        _remove_container(state)  # its engine client died; the container may still run
        path.unlink(missing_ok=True)
        return None
    return state


def _remove_container(state: dict) -> None:
    if state.get("container_remove"):
        subprocess.run(state["container_remove"], capture_output=True, timeout=60)


def start_service(
    name: str,
    artifacts: Path,
    root: Path,
    host: str = LOOPBACK,
    port: int | None = None,
    environ: Mapping[str, str] | None = None,
    wait_seconds: float = 120.0,
    where: str = "host",
    search_file: Path | None = None,
) -> dict:
    """Start the service in the background (or find it running); returns its state.

    ``where``: ``host``, ``container`` (DOCKER_IMAGE_NAME through CONTAINER_ENGINE) or
    ``auto`` (the container when the engine and image are there, else the host, saying so).
    ``search_file``: the search whose study the dashboard serves.
    """
    environ = dict(os.environ if environ is None else environ)
    if name == "dashboard" and (search_file is None or not Path(search_file).is_file()):
        raise UserInputError(
            f"the dashboard serves a search study: give its file (yml=FILE; got {search_file})"
        )
    running = read_state(artifacts, name)
    if running is not None:
        return running
    if port is None:
        variable, default = DEFAULT_PORTS[name]
        port = int(environ.get(variable) or default)
    if port_answers(host, port):
        raise UserInputError(
            f"port {port} is already in use; pick another with --port or {DEFAULT_PORTS[name][0]}"
        )
    view_folder(artifacts).mkdir(parents=True, exist_ok=True)
    launch, container = choose_launch(
        name, host, port, root, artifacts, environ, where, search_file
    )
    log_path = state_file(artifacts, name).with_suffix(".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            launch.argv,
            cwd=root,
            env={**environ, **launch.environment},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so --stop ends all of it
        )
    state = {"name": name, "pid": process.pid, "host": host, "port": port, "url": launch.url}
    if container:
        state["container"], state["container_remove"] = container
    path = state_file(artifacts, name)
    with atomic_output(path) as temporary:  # per-process name: two starts never collide
        # 0o600 from the start: the state names a token-bearing URL
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(state))
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            path.unlink(missing_ok=True)
            raise UserInputError(
                f"{name} exited at start (code {process.returncode}); see {log_path}"
            )
        if port_answers(host, port):
            return state
        time.sleep(0.5)
    stop_service(name, artifacts)
    raise UserInputError(
        f"{name} did not answer on port {port} within {wait_seconds:.0f} s; see {log_path}"
    )


def stop_service(name: str, artifacts: Path, wait_seconds: float = 20.0) -> bool:
    """Stop the service started by ``start_service``; returns whether one was running."""
    state = read_state(artifacts, name)
    if state is None:
        return False
    pid = int(state["pid"])
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + wait_seconds
    while _alive(pid) and time.monotonic() < deadline:
        try:  # reap it when it is our own child (tests); otherwise just wait
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
    _remove_container(state)
    state_file(artifacts, name).unlink(missing_ok=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Start or stop JupyterLab / TensorBoard / optuna-dashboard."
    )
    parser.add_argument("name", choices=SERVICES)
    parser.add_argument("--host", default=LOOPBACK, help="address to bind (default: loopback only)")
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="default: JUPYTER_HOST_PORT / TENSORBOARD_HOST_PORT / DASHBOARD_HOST_PORT",
    )
    parser.add_argument(
        "-y", "--yml", type=Path, help="dashboard: the search file whose study it serves"
    )
    parser.add_argument("--stop", action="store_true", help="stop the running service")
    parser.add_argument(
        "--where",
        choices=("auto", "container", "host"),
        default="auto",
        help="auto (default): in DOCKER_IMAGE_NAME when CONTAINER_ENGINE and the image are "
        "there, else on the host",
    )
    arguments = parser.parse_args(argv)
    root = repository_root()
    artifacts = storage_directory("ARTIFACTS_DIRECTORY", root)
    try:
        if arguments.stop:
            stopped = stop_service(arguments.name, artifacts)
            print(f"{arguments.name}: {'stopped' if stopped else 'was not running'}")
            return 0
        state = start_service(
            arguments.name, artifacts, root, arguments.host, arguments.port,
            where=arguments.where, search_file=arguments.yml and arguments.yml.resolve(),
        )  # fmt: skip
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{arguments.name} is running (pid {state['pid']}): {state['url']}")
    print(f"stop it with: make {arguments.name} args=--stop")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
