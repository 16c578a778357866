"""The container command line: ``build`` the image, ``run`` a command in it, or open a ``shell``.

Run as ``python -m speechbed.pipeline.container`` by ``make docker``/``make run_in_container``/``make shell``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from speechbed.errors import UserInputError
from speechbed.pipeline.container.commands import (
    ContainerInvocation,
    build_command,
    interactive_invocation,
)
from speechbed.pipeline.container.executor import (
    engine_missing,
    image_missing,
    prepare_storage,
    remove_container,
)
from speechbed.pipeline.container.settings import ContainerSettings
from speechbed.pipeline.inventory import discover_gpus, parse_gpu_list
from speechbed.pipeline.leases import GpuLeases, default_lease_dir
from speechbed.storage import repository_root


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
        missing = engine_missing(settings)
        if missing is not None:
            raise UserInputError(missing)
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
    command = [item for item in getattr(arguments, "command", []) if item != "--"]
    if arguments.action == "shell":
        command = ["bash"]
    if not command:
        raise UserInputError('no command given; use make run_in_container command="..."')
    devices = parse_gpu_list(arguments.gpus, "--gpus") if arguments.gpus else []
    if devices:  # before the image check: a machine without GPUs says so in one line
        machine, source = discover_gpus(None, environ)
        absent = [device for device in devices if device not in machine]
        if absent:
            have = ",".join(map(str, machine)) if machine else "none"
            raise UserInputError(
                f"gpus={arguments.gpus}: GPU(s) {','.join(map(str, absent))} not on this machine "
                f"(its GPUs: {have}, from {source}); leave gpus= out to run without a GPU"
            )
    # the same check and message as a pipeline's container job
    problem = image_missing(settings)
    if problem is not None:
        raise UserInputError(problem)
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
        invocation = interactive_invocation(
            settings, root, environ, command, devices, extra_env=arguments.env
        )
        prepare_storage(root, environ)
        return _run_foreground(invocation)
    finally:
        leases.release_all()


def _run_foreground(invocation: ContainerInvocation) -> int:
    process = subprocess.Popen(invocation.argv, env=invocation.env)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        return process.wait()
    finally:
        remove_container(invocation.name, invocation.env)
