"""Container settings: the engine, image and options every container command uses, from the environment.

Read by the container executor, the ``build``/``run``/``shell`` command line and ``speechbed.services``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from speechbed.errors import UserInputError

ENGINES = ("docker", "podman")
#: How leased GPUs reach the container: docker's ``--gpus``, CDI devices (podman with the
#: NVIDIA container toolkit's CDI spec), or only ``NVIDIA_VISIBLE_DEVICES`` (for the
#: nvidia runtime or the toolkit's OCI hook).
GPU_MODES = ("gpus", "cdi", "env")
DEFAULT_GPU_MODE = {"docker": "gpus", "podman": "cdi"}
DEFAULT_IMAGE = "speechbed:dev"

_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class ContainerSettings:
    """The engine, image and options every container command uses (from the environment)."""

    engine: str = "docker"
    image: str = DEFAULT_IMAGE
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

    @property
    def runs_as_root(self) -> bool:
        return self.user.split(":")[0] == "0"

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
            if not _VARIABLE_NAME.fullmatch(name):
                raise UserInputError(
                    f"CONTAINER_PASS_ENV: {name!r} is not a variable name; "
                    "write names separated by commas, e.g. COMET_API_KEY,WANDB_MODE"
                )
        return cls(
            engine=engine,
            image=setting("DOCKER_IMAGE_NAME") or DEFAULT_IMAGE,
            runtime=setting("CONTAINER_RUNTIME") or None,
            network=setting("CONTAINER_NETWORK") or None,
            rootfs=Path(rootfs) if rootfs else None,
            python=setting("CONTAINER_PYTHON") or "python",
            gpu_mode=gpu_mode,
            user=user,
            pass_env=pass_env,
        )
