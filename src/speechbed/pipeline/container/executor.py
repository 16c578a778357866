"""The container executor (``run_in: container``), and the engine checks and clean-up it shares.

Made by name through ``speechbed.pipeline.executors``; ``container_available`` and
``remove_container`` also serve ``speechbed.services`` and the container command line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from speechbed.errors import UserInputError
from speechbed.pipeline.container.commands import (
    image_exists_command,
    job_invocation,
    remove_command,
    storage_mounts,
)
from speechbed.pipeline.container.settings import ContainerSettings
from speechbed.pipeline.launch import Executor, Launch
from speechbed.pipeline.plan import PlannedJob


def engine_missing(settings: ContainerSettings) -> str | None:
    """Why the engine cannot be used (for a message to a person), or None."""
    if shutil.which(settings.engine) is None:
        return (
            f"{settings.engine} (CONTAINER_ENGINE) is not installed or not on PATH; "
            "install it or set CONTAINER_ENGINE=docker|podman"
        )
    return None


def image_missing(settings: ContainerSettings) -> str | None:
    """Why there is nothing to run (no image, or CONTAINER_ROOTFS is not a folder), or None."""
    if settings.rootfs is not None:
        return (
            None
            if settings.rootfs.is_dir()
            else f"CONTAINER_ROOTFS={settings.rootfs} is not a folder"
        )
    found = subprocess.run(
        image_exists_command(settings), capture_output=True, text=True, timeout=120
    )
    if found.returncode != 0:
        return (
            f"image {settings.image} (DOCKER_IMAGE_NAME) not found by {settings.engine}; "
            "build it with `make docker` or point DOCKER_IMAGE_NAME at an existing image"
        )
    return None


def container_available(environ: Mapping[str, str]) -> str | None:
    """None when the engine and image are usable, else why not (for a message to a person)."""
    try:
        settings = ContainerSettings.from_environment(environ)
    except UserInputError as error:
        return str(error)
    return engine_missing(settings) or image_missing(settings)


def prepare_storage(root: Path, environ: Mapping[str, str]) -> None:
    """Create the storage folders a container mounts: a missing one would be made by the
    engine as root."""
    for mount in storage_mounts(root, environ)[1:]:
        mount.host.mkdir(parents=True, exist_ok=True)


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


class ContainerExecutor(Executor):
    """Runs ``python SCRIPT -y CONFIG ARGS...`` in DOCKER_IMAGE_NAME (see the package doc)."""

    name = "container"

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self._checked: set[ContainerSettings] = set()

    def check(self, job: PlannedJob) -> None:
        settings = ContainerSettings.from_environment(self._environ)
        for mount in storage_mounts(job.root, self._environ):
            mount.option()
        if settings in self._checked:
            return
        problem = engine_missing(settings) or image_missing(settings)
        if problem is not None:
            raise UserInputError(
                f"run_in: container needs {settings.engine}, but {problem}; or use run_in: host"
            )
        self._checked.add(settings)

    def launch(self, job: PlannedJob, devices: list[int], base_env: Mapping[str, str]) -> Launch:
        settings = ContainerSettings.from_environment(base_env)
        invocation = job_invocation(settings, job, devices, base_env)
        prepare_storage(job.root, base_env)
        return Launch(
            argv=invocation.argv, env=invocation.env, cwd=job.root, handle=invocation.name
        )

    def cleanup(self, job: PlannedJob, launch: Launch) -> None:
        if launch.handle is not None:
            remove_container(launch.handle, launch.env)
