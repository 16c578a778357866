"""Container executor: runs ``run_in: container`` jobs in DOCKER_IMAGE_NAME with docker or podman.

Used by the pipeline scheduler, and as ``python -m speechbed.pipeline.container`` by ``make
docker``/``make run_in_container``/``make shell`` and by ``speechbed.services``.

Inside every container the repository is ``/workspace`` (the working directory) and
DATA_DIRECTORY, CACHE_DIRECTORY and ARTIFACTS_DIRECTORY are ``/storage/data``,
``/storage/cache`` and ``/storage/artifacts``; those variables, and every passed variable
whose value is a host path under a mounted folder, are rewritten to the container paths, so
``${VAR}``s in a job file resolve inside. A job gets only the variables it needs: the
testbed's folder settings, a few harmless locale/thread settings, the variables its job
file names as ``${VAR}`` and those listed in CONTAINER_PASS_ENV; nothing else of the
runner's environment (credentials included) reaches it. Values travel in the engine client's environment (``-e NAME`` on the command
line), so secrets never show in logs or ``ps``. The engine command lines are built by pure
functions (``run_command``, ``build_command``, ...) that the tests check for both engines.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from speechbed.errors import UserInputError
from speechbed.pipeline.executors import Executor, Launch
from speechbed.pipeline.plan import PlannedJob
from speechbed.storage import STORAGE_FOLDERS, repository_root, storage_directory

ENGINES = ("docker", "podman")
#: How leased GPUs reach the container: docker's ``--gpus``, CDI devices (podman with the
#: NVIDIA container toolkit's CDI spec), or only ``NVIDIA_VISIBLE_DEVICES`` (for the
#: nvidia runtime or the toolkit's OCI hook).
GPU_MODES = ("gpus", "cdi", "env")
DEFAULT_GPU_MODE = {"docker": "gpus", "podman": "cdi"}

WORKSPACE = PurePosixPath("/workspace")
#: Host folder variables and where they are mounted in every container.
STORAGE_PATHS = {
    variable: PurePosixPath("/storage") / folder for variable, folder in STORAGE_FOLDERS.items()
}
#: Where a job's script or config that lies outside every mounted folder is mounted read-only.
JOB_FILES = PurePosixPath("/storage/job")
#: Harmless settings passed through when the runner has them (never credentials).
PASSED_THROUGH = ("LANG", "LC_ALL", "TZ", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: Set by the pipeline runner for each job: where it hands back its lineage (a path under
#: ARTIFACTS_DIRECTORY, rewritten like the others) and whether nested pipelines force.
RUNNER_VARIABLES = ("SPEECHBED_LINEAGE_FILE", "SPEECHBED_FORCE")
#: PyTorch's DataLoader workers share tensors through /dev/shm, which is 64 MB by default.
SHARED_MEMORY_SIZE = "8g"
#: The image's ports for JupyterLab and TensorBoard (docker/Dockerfile EXPOSEs them).
JUPYTER_PORT = 8888
TENSORBOARD_PORT = 6006

_VARIABLE_REFERENCE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")
_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class ContainerSettings:
    """The engine, image and options every container command uses (from the environment)."""

    engine: str = "docker"
    image: str = "speechbed:dev"
    #: OCI runtime for podman (``podman --runtime``) or docker (``docker run --runtime``).
    runtime: str | None = None
    #: ``--network`` value; None keeps the engine's default network.
    network: str | None = None
    #: podman only: run this host folder as the container's root instead of the image.
    rootfs: Path | None = None
    #: the interpreter that runs job scripts inside the container.
    python: str = "python"
    gpu_mode: str = "gpus"
    #: ``uid:gid`` the container runs as, so files written to mounts belong to the host user.
    user: str = ""
    #: variables every container gets besides the ones a job file names (CONTAINER_PASS_ENV).
    pass_env: tuple[str, ...] = ()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> ContainerSettings:
        """Read CONTAINER_ENGINE, DOCKER_IMAGE_NAME and the CONTAINER_* settings; check them."""

        def setting(name: str) -> str:
            return environ.get(name, "").strip()

        engine = setting("CONTAINER_ENGINE") or "docker"
        if engine not in ENGINES:
            raise UserInputError(
                f"CONTAINER_ENGINE={engine!r} is not supported; use one of {', '.join(ENGINES)}"
            )
        gpu_mode = setting("CONTAINER_GPU_MODE") or DEFAULT_GPU_MODE[engine]
        if gpu_mode not in GPU_MODES:
            raise UserInputError(
                f"CONTAINER_GPU_MODE={gpu_mode!r} is not a GPU mode; use one of "
                f"{', '.join(GPU_MODES)} (or leave it empty for the engine's default)"
            )
        if gpu_mode == "gpus" and engine != "docker":
            raise UserInputError(
                "CONTAINER_GPU_MODE=gpus is docker's --gpus flag; with podman use cdi or env"
            )
        rootfs = setting("CONTAINER_ROOTFS")
        if rootfs and engine != "podman":
            raise UserInputError(
                "CONTAINER_ROOTFS runs a host folder as the container's root, which only "
                "podman can do; unset it or set CONTAINER_ENGINE=podman"
            )
        user = setting("CONTAINER_USER") or f"{os.getuid()}:{os.getgid()}"
        if not re.fullmatch(r"\d+(:\d+)?", user):
            raise UserInputError(f"CONTAINER_USER={user!r} must be numeric: UID or UID:GID")
        pass_env = tuple(
            name for name in re.split(r"[\s,]+", setting("CONTAINER_PASS_ENV")) if name
        )
        for name in pass_env:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise UserInputError(
                    f"CONTAINER_PASS_ENV: {name!r} is not a variable name; "
                    "write names separated by commas, e.g. COMET_API_KEY,WANDB_MODE"
                )
        return cls(
            engine=engine,
            image=setting("DOCKER_IMAGE_NAME") or "speechbed:dev",
            runtime=setting("CONTAINER_RUNTIME") or None,
            network=setting("CONTAINER_NETWORK") or None,
            rootfs=Path(rootfs) if rootfs else None,
            python=setting("CONTAINER_PYTHON") or "python",
            gpu_mode=gpu_mode,
            user=user,
            pass_env=pass_env,
        )


@dataclass(frozen=True)
class Mount:
    """A host path bind-mounted at a container path."""

    host: Path
    container: PurePosixPath
    read_only: bool = False

    def option(self) -> str:
        """The ``-v`` value; refuses host paths the engine would misread."""
        if ":" in str(self.host) or "," in str(self.host):
            raise UserInputError(
                f"{self.host}: a folder mounted into the container cannot contain ':' or ','; "
                "move it or point the variable at a symlink-free path without them"
            )
        return f"{self.host}:{self.container}" + (":ro" if self.read_only else "")


# --------------------------------------------------------------------------- pure builders


def storage_mounts(root: Path, environ: Mapping[str, str]) -> list[Mount]:
    """The repository at /workspace and the three storage folders at /storage/*.

    Unset folder variables default as in ``setup/environment/default.sh``
    (``<root>/storage/<name>``).
    """
    mounts = [Mount(Path(os.path.realpath(root)), WORKSPACE)]
    for variable, container in STORAGE_PATHS.items():
        host = storage_directory(variable, root, environ)
        mounts.append(Mount(Path(os.path.realpath(host)), container))
    return mounts


def container_path(host_path: str | Path, mounts: Sequence[Mount]) -> PurePosixPath | None:
    """Where ``host_path`` is seen inside, through the most specific mount; None if unmounted."""
    resolved = Path(os.path.realpath(host_path))
    best: Mount | None = None
    for mount in mounts:
        if resolved == mount.host or mount.host in resolved.parents:
            if best is None or len(mount.host.parts) > len(best.host.parts):
                best = mount
    if best is None:
        return None
    return best.container.joinpath(*resolved.relative_to(best.host).parts)


def referenced_variables(text: str) -> set[str]:
    """Names written as ``${NAME}`` or ``${NAME:-default}`` in a job file (``$${...}`` is not)."""
    return set(_VARIABLE_REFERENCE.findall(text))


def _rewritten(value: str, mounts: Sequence[Mount]) -> str:
    if not value.startswith("/"):
        return value
    inside = container_path(value, mounts)
    return str(inside) if inside is not None else value


def container_environment(
    base_env: Mapping[str, str], mounts: Sequence[Mount], needed: Collection[str] = ()
) -> dict[str, str]:
    """The variables a container gets: folder settings at their container paths, harmless
    pass-through settings and the ``needed`` ones present in ``base_env`` (paths rewritten)."""
    env: dict[str, str] = {}
    for name in sorted(set(PASSED_THROUGH) | set(RUNNER_VARIABLES) | set(needed)):
        if name in base_env:
            env[name] = _rewritten(base_env[name], mounts)
    env["SPEECHBED_ROOT"] = str(WORKSPACE)
    env.update({variable: str(path) for variable, path in STORAGE_PATHS.items()})
    env["PYTHONUNBUFFERED"] = "1"
    # The host's ids mean nothing inside: the engine exposes the leased GPUs as 0..n-1.
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.pop("NVIDIA_VISIBLE_DEVICES", None)
    return env


def gpu_options(
    engine: str, gpu_mode: str, devices: Sequence[int]
) -> tuple[list[str], dict[str, str]]:
    """Engine options and variables that expose exactly ``devices`` (none when empty).

    ``NVIDIA_VISIBLE_DEVICES=void`` for a 0-GPU job stops CUDA base images (which set
    ``all``) from getting every GPU when the nvidia runtime is the engine's default.
    """
    ids = ",".join(str(device) for device in devices)
    if not devices:
        return [], {"NVIDIA_VISIBLE_DEVICES": "void"}
    if gpu_mode == "gpus":
        if engine != "docker":
            raise UserInputError("--gpus is docker's flag; use CONTAINER_GPU_MODE=cdi or env")
        # docker reads the value as CSV: the quotes keep "device=0,2" one field.
        return ["--gpus", f'"device={ids}"'], {}
    if gpu_mode == "cdi":
        options: list[str] = []
        for device in devices:
            options += ["--device", f"nvidia.com/gpu={device}"]
        return options, {"NVIDIA_VISIBLE_DEVICES": "void"}
    if gpu_mode == "env":
        return [], {"NVIDIA_VISIBLE_DEVICES": ids}
    raise UserInputError(f"unknown GPU mode {gpu_mode!r}; use one of {', '.join(GPU_MODES)}")


def container_name(*parts: str) -> str:
    """A unique, valid container name made of ``parts`` (so a stuck one can be found)."""
    stem = "-".join(_NAME_CHARACTERS.sub("_", part).strip("_.-") for part in parts if part)
    return f"speechbed-{stem}-{uuid.uuid4().hex[:8]}" if stem else f"speechbed-{uuid.uuid4().hex}"


def engine_prefix(settings: ContainerSettings) -> list[str]:
    """The engine and its global options (podman takes ``--runtime`` before the command)."""
    prefix = [settings.engine]
    if settings.engine == "podman" and settings.runtime:
        prefix += ["--runtime", settings.runtime]
    return prefix


def run_command(
    settings: ContainerSettings,
    *,
    name: str,
    mounts: Sequence[Mount],
    env_names: Sequence[str],
    command: Sequence[str],
    gpu_flags: Sequence[str] = (),
    ports: Sequence[tuple[int, int]] = (),
    publish_address: str = "127.0.0.1",
    interactive: bool = False,
    labels: Mapping[str, str] | None = None,
) -> list[str]:
    """``ENGINE run ...`` for ``command`` in ``/workspace``; variables named, values not.

    ``ports`` are (host, container) pairs published on ``publish_address`` (loopback unless
    a person asks for more).
    """
    argv = [*engine_prefix(settings), "run", "--rm", "--init", "--name", name]
    if interactive:
        argv += ["--interactive", "--tty"] if sys.stdin.isatty() else ["--interactive"]
    if settings.engine == "docker" and settings.runtime:
        argv += ["--runtime", settings.runtime]
    if settings.network:
        argv += ["--network", settings.network]
    argv += ["--user", settings.user, "--workdir", str(WORKSPACE)]
    argv += ["--shm-size", SHARED_MEMORY_SIZE]
    for key, value in sorted((labels or {}).items()):
        argv += ["--label", f"{key}={value}"]
    for mount in mounts:
        argv += ["--volume", mount.option()]
    for variable in sorted(env_names):
        argv += ["--env", variable]
    for host, inside in ports:
        argv += ["--publish", f"{publish_address}:{host}:{inside}"]
    argv += list(gpu_flags)
    if settings.rootfs is not None:
        # podman: options come before --rootfs; ":O" overlays it so the host stays untouched.
        argv += ["--rootfs", f"{settings.rootfs}:O"]
    else:
        argv.append(settings.image)
    return argv + list(command)


def remove_command(settings: ContainerSettings, name: str) -> list[str]:
    """Force-remove container ``name``; succeeds (podman) or harmlessly fails when it is gone."""
    if settings.engine == "podman":
        return [*engine_prefix(settings), "rm", "--force", "--ignore", "--time", "2", name]
    return [*engine_prefix(settings), "rm", "--force", name]


def image_exists_command(settings: ContainerSettings) -> list[str]:
    return [*engine_prefix(settings), "image", "inspect", settings.image]


def build_command(settings: ContainerSettings, root: Path, extra: Sequence[str] = ()) -> list[str]:
    """``ENGINE build`` of docker/Dockerfile as DOCKER_IMAGE_NAME, owned by this user's ids."""
    user_id, _, group_id = settings.user.partition(":")
    # podman's default OCI format drops the Dockerfile's SHELL; docker's format keeps it.
    image_format = ["--format", "docker"] if settings.engine == "podman" else []
    return [
        *engine_prefix(settings),
        "build",
        *image_format,
        "--file",
        str(Path(root) / "docker" / "Dockerfile"),
        "--build-arg",
        f"USER_ID={user_id}",
        "--build-arg",
        f"GROUP_ID={group_id or user_id}",
        "--tag",
        settings.image,
        *extra,
        str(root),
    ]


# --------------------------------------------------------------------------- the executor


@dataclass(frozen=True)
class ContainerInvocation:
    """A complete container command: argv, the client's environment, and the container name."""

    argv: list[str]
    env: dict[str, str]
    name: str


def _job_file_mount(path: Path, mounts: list[Mount], kind: str, job_name: str) -> PurePosixPath:
    inside = container_path(path, mounts)
    if inside is None:
        inside = JOB_FILES / job_name / kind / path.name
        mounts.append(Mount(Path(os.path.realpath(path)), inside, read_only=True))
    return inside


def job_invocation(
    settings: ContainerSettings,
    job: PlannedJob,
    devices: Sequence[int],
    base_env: Mapping[str, str],
) -> ContainerInvocation:
    """The container command for a pipeline job on the leased ``devices``."""
    mounts = storage_mounts(job.root, base_env)
    script = _job_file_mount(job.script, mounts, "script", job.name)
    config = _job_file_mount(job.config, mounts, "config", job.name)
    try:
        needed = referenced_variables(job.config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise UserInputError(f"cannot read config {job.config}: {error}") from None
    env = container_environment(base_env, mounts, needed | set(settings.pass_env))
    env["SPEECHBED_JOB_NAME"] = job.name
    gpu_flags, gpu_env = gpu_options(settings.engine, settings.gpu_mode, devices)
    env.update(gpu_env)
    name = container_name(job.pipeline, job.name)
    argv = run_command(
        settings,
        name=name,
        mounts=mounts,
        env_names=list(env),
        command=[settings.python, str(script), "-y", str(config), *job.args],
        gpu_flags=gpu_flags,
        labels={"speechbed.pipeline": job.pipeline, "speechbed.job": job.name},
    )
    # The client passes each named variable's value from its own environment into the
    # container; variables it needs itself (PATH, HOME, DOCKER_HOST, ...) stay as they are.
    return ContainerInvocation(argv=argv, env={**base_env, **env}, name=name)


def remove_container(name: str, environ: Mapping[str, str]) -> None:
    """Force-remove container ``name`` if it is still there; never raises."""
    try:
        settings = ContainerSettings.from_environment(environ)
        subprocess.run(
            remove_command(settings, name),
            env=dict(environ),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired, UserInputError):
        pass  # nothing to remove, or no engine: the caller goes on either way


def _name_in(argv: Sequence[str]) -> str | None:
    for index, item in enumerate(argv[:-1]):
        if item == "--name":
            return argv[index + 1]
    return None


class ContainerExecutor(Executor):
    """Runs ``python SCRIPT -y CONFIG ARGS...`` in DOCKER_IMAGE_NAME (see the module doc)."""

    name = "container"

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self._checked: set[ContainerSettings] = set()

    def _settings(self, environ: Mapping[str, str]) -> ContainerSettings:
        return ContainerSettings.from_environment(environ)

    def check(self, job: PlannedJob) -> None:
        settings = self._settings(self._environ)
        for mount in storage_mounts(job.root, self._environ):
            mount.option()
        if settings in self._checked:
            return
        if shutil.which(settings.engine) is None:
            raise UserInputError(
                f"run_in: container needs {settings.engine} (CONTAINER_ENGINE), which is not "
                "on PATH; install it, set CONTAINER_ENGINE to docker or podman, or use run_in: host"
            )
        if settings.rootfs is None:
            found = subprocess.run(
                image_exists_command(settings), capture_output=True, text=True, timeout=120
            )
            if found.returncode != 0:
                raise UserInputError(
                    f"image {settings.image} (DOCKER_IMAGE_NAME) not found by {settings.engine}; "
                    "build it with `make docker` or point DOCKER_IMAGE_NAME at an existing image"
                )
        elif not settings.rootfs.is_dir():
            raise UserInputError(f"CONTAINER_ROOTFS={settings.rootfs} is not a folder")
        self._checked.add(settings)

    def launch(self, job: PlannedJob, devices: list[int], base_env: Mapping[str, str]) -> Launch:
        settings = self._settings(base_env)
        invocation = job_invocation(settings, job, devices, base_env)
        for mount in storage_mounts(job.root, base_env)[1:]:
            # A missing folder would be created by docker as root; make it ours first.
            mount.host.mkdir(parents=True, exist_ok=True)
        return Launch(argv=invocation.argv, env=invocation.env, cwd=job.root)

    def cleanup(self, job: PlannedJob, launch: Launch) -> None:
        name = _name_in(launch.argv)
        if name is not None:
            remove_container(name, launch.env)


# --------------------------------------------------------------------------- command line


def _interactive_invocation(
    settings: ContainerSettings,
    root: Path,
    environ: Mapping[str, str],
    command: Sequence[str],
    devices: Sequence[int],
    ports: Sequence[tuple[int, int]] = (),
    publish_address: str = "127.0.0.1",
    extra_env: Sequence[str] = (),
    label: str = "interactive",
) -> ContainerInvocation:
    mounts = storage_mounts(root, environ)
    env = container_environment(environ, mounts, set(extra_env) | set(settings.pass_env))
    gpu_flags, gpu_env = gpu_options(settings.engine, settings.gpu_mode, devices)
    env.update(gpu_env)
    name = container_name(label)
    argv = run_command(
        settings,
        name=name,
        mounts=mounts,
        env_names=list(env),
        command=command,
        gpu_flags=gpu_flags,
        ports=ports,
        publish_address=publish_address,
        interactive=not ports,
        labels={"speechbed.job": label},
    )
    return ContainerInvocation(argv=argv, env={**environ, **env}, name=name)


def service_invocation(
    service: str,
    root: Path,
    environ: Mapping[str, str],
    host_port: int,
    host_address: str = "127.0.0.1",
    jupyter_token: str | None = None,
) -> ContainerInvocation:
    """JupyterLab or TensorBoard in the image, published on ``host_address:host_port``.

    Called by ``speechbed.services``; the token travels as ``JUPYTER_TOKEN`` (not in argv).
    """
    settings = ContainerSettings.from_environment(environ)
    extra_env: list[str] = []
    if service == "jupyter":
        inside = JUPYTER_PORT
        command = [
            settings.python, "-m", "jupyterlab", "--ip=0.0.0.0", f"--port={inside}",
            "--port-retries=0", "--no-browser", f"--ServerApp.root_dir={WORKSPACE}",
        ]  # fmt: skip
        if settings.user.split(":")[0] == "0":
            command.append("--allow-root")  # jupyter refuses root unless told
        if jupyter_token:
            environ = {**environ, "JUPYTER_TOKEN": jupyter_token}
            extra_env.append("JUPYTER_TOKEN")
    elif service == "tensorboard":
        inside = TENSORBOARD_PORT
        command = [
            settings.python, "-m", "tensorboard.main", "--bind_all", f"--port={inside}",
            f"--logdir={STORAGE_PATHS['ARTIFACTS_DIRECTORY']}", "--reload_interval=15",
        ]  # fmt: skip
    else:
        raise UserInputError(f"unknown service {service!r}; use jupyter or tensorboard")
    return _interactive_invocation(
        settings, root, environ, command, [], ports=[(host_port, inside)],
        publish_address=host_address, extra_env=extra_env, label=service,
    )  # fmt: skip


def container_available(environ: Mapping[str, str]) -> str | None:
    """None when the engine and image are usable, else why not (for a message to a person)."""
    try:
        settings = ContainerSettings.from_environment(environ)
    except UserInputError as error:
        return str(error)
    if shutil.which(settings.engine) is None:
        return f"{settings.engine} (CONTAINER_ENGINE) is not installed"
    if settings.rootfs is not None:
        return None
    found = subprocess.run(
        image_exists_command(settings), capture_output=True, text=True, timeout=120
    )
    if found.returncode != 0:
        return f"image {settings.image} not found by {settings.engine} (build it: make docker)"
    return None


def _run_foreground(invocation: ContainerInvocation) -> int:
    process = subprocess.Popen(invocation.argv, env=invocation.env)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        return process.wait()
    finally:
        remove_container(invocation.name, invocation.env)


def main(argv: Sequence[str] | None = None) -> int:
    """``build`` the image, ``run`` a command in it, or open a ``shell``."""
    parser = argparse.ArgumentParser(
        prog="python -m speechbed.pipeline.container",
        description="Build the speechbed image, or run a command / a shell in it with the "
        "repository at /workspace and the storage folders at /storage/*.",
    )
    commands = parser.add_subparsers(dest="action", required=True)
    commands.add_parser(
        "build", help="build docker/Dockerfile as DOCKER_IMAGE_NAME; other options go to the engine"
    )
    for action in ("run", "shell"):
        sub = commands.add_parser(action, help=f"{action} in the image")
        sub.add_argument("--gpus", default="", help="comma-separated GPU ids to lease and pass")
        sub.add_argument(
            "--env", action="append", default=[], help="pass this variable too (repeatable)"
        )
        if action == "run":
            sub.add_argument("command", nargs=argparse.REMAINDER, help="the command to run")
    arguments, unknown = parser.parse_known_args(argv)
    if unknown and arguments.action != "build":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    environ = dict(os.environ)
    root = repository_root(environ)
    try:
        settings = ContainerSettings.from_environment(environ)
        if shutil.which(settings.engine) is None:
            raise UserInputError(
                f"{settings.engine} (CONTAINER_ENGINE) is not installed or not on PATH; "
                "install it or set CONTAINER_ENGINE=docker|podman"
            )
        if arguments.action == "build":
            command = build_command(settings, root, [item for item in unknown if item != "--"])
            print(f"$ {shlex.join(command)}", file=sys.stderr)
            return subprocess.run(command).returncode
        return _run_interactive(arguments, settings, root, environ)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _run_interactive(
    arguments: argparse.Namespace,
    settings: ContainerSettings,
    root: Path,
    environ: dict[str, str],
) -> int:
    from speechbed.pipeline.inventory import parse_gpu_list
    from speechbed.pipeline.leases import GpuLeases, default_lease_dir

    command = [item for item in getattr(arguments, "command", []) if item != "--"]
    if arguments.action == "shell":
        command = ["bash"]
    if not command:
        raise UserInputError('no command given; use make run_in_container command="..."')
    devices = parse_gpu_list(arguments.gpus, "--gpus") if arguments.gpus else []
    leases = GpuLeases(default_lease_dir(environ))
    if devices:
        leases.prepare()
    # The same leases the pipeline takes, so an interactive session never shares a GPU.
    busy = [device for device in devices if not leases.try_acquire(device)]
    if busy:
        leases.release_all()
        raise UserInputError(
            f"GPU(s) {','.join(map(str, busy))} are leased by another process (a pipeline?); "
            "pick others with gpus=..."
        )
    try:
        invocation = _interactive_invocation(
            settings, root, environ, command, devices, extra_env=arguments.env
        )
        for mount in storage_mounts(root, environ)[1:]:
            mount.host.mkdir(parents=True, exist_ok=True)
        return _run_foreground(invocation)
    finally:
        leases.release_all()


if __name__ == "__main__":
    raise SystemExit(main())
