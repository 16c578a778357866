"""Chooses which implementation of the Mellin ops runs: the vectorized torch path or the extension.

Called by speechbed.mellin.functional on every op; SPEECHBED_MELLIN_PATH or a ``path``
argument (torch | extension | auto) forces a choice for tests and benchmarks.
"""

from __future__ import annotations

import os

import torch

from speechbed.mellin.errors import MellinArgumentError

#: Environment variable that forces a path when no ``path`` argument is given.
PATH_VARIABLE = "SPEECHBED_MELLIN_PATH"
PATHS = ("auto", "torch", "extension")
#: Dtypes the compiled extension implements; others always take the torch path.
EXTENSION_DTYPES = (torch.float32, torch.float64)


def requested_path(path: str | None) -> str:
    """The path asked for by the argument, else the environment variable, else "auto"."""
    source = "path argument"
    if path is None:
        path, source = os.environ.get(PATH_VARIABLE, "auto") or "auto", PATH_VARIABLE
    if path not in PATHS:
        raise MellinArgumentError(f"{source} must be one of {', '.join(PATHS)}, got {path!r}")
    return path


def choose_path(path: str | None, input: torch.Tensor) -> str:
    """ "torch" or "extension" for an op on ``input``."""
    wanted = requested_path(path)
    if wanted == "torch":
        return "torch"
    from speechbed.mellin import extension

    if wanted == "extension":
        if input.dtype not in EXTENSION_DTYPES:
            raise MellinArgumentError(
                f"the Mellin extension implements float32 and float64, not {input.dtype}"
            )
        extension.require(input.device)
        return "extension"
    if input.dtype in EXTENSION_DTYPES and extension.preferred_on(input.device):
        return "extension"
    return "torch"
