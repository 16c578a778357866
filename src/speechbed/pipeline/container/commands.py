"""Container command lines: mounts, the variables a container gets, GPU flags, run/build/remove argv.

Pure builders (nothing here runs a process) used by the container executor, the
``build``/``run``/``shell`` command line and ``speechbed.services``; tests check them for both engines.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from speechbed.errors import UserInputError
from speechbed.pipeline.container.settings import GPU_MODES, ContainerSettings
from speechbed.pipeline.launch import step_command
from speechbed.pipeline.plan import PlannedJob
from speechbed.storage import ROOT_VARIABLE, STORAGE_FOLDERS, storage_directory
from speechbed.variables import referenced_variables

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

_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9_.-]+")


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


@dataclass(frozen=True)
class ContainerInvocation:
    """A complete container command: argv, the client's environment, and the container name."""

    argv: list[str]
    env: dict[str, str]
    name: str


# --------------------------------------------------------------------------- mounts and variables


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
    env[ROOT_VARIABLE] = str(WORKSPACE)
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


# --------------------------------------------------------------------------- engine argv


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


# --------------------------------------------------------------------------- whole invocations


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
    """The container command for a pipeline job on the leased ``devices``.

    The job gets the variables its job file names as ``${VAR}`` (``referenced_variables``,
    the rule ``substitute_variables`` follows) and those in CONTAINER_PASS_ENV.
    """
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
        command=step_command(settings.python, str(script), str(config), job.args, job.processes),
        gpu_flags=gpu_flags,
        labels={"speechbed.pipeline": job.pipeline, "speechbed.job": job.name},
    )
    # The client passes each named variable's value from its own environment into the
    # container; variables it needs itself (PATH, HOME, DOCKER_HOST, ...) stay as they are.
    return ContainerInvocation(argv=argv, env={**base_env, **env}, name=name)


def interactive_invocation(
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
    """``command`` in the image outside a pipeline: a shell, ``make run_in_container``, or a
    service whose ``ports`` are published (then it runs in the background, not interactive)."""
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
