"""Chooses which implementation of the Mellin ops runs (vectorized torch or the extension) and runs it.

Called by speechbed.mellin.functional on every op, after its argument checks; SPEECHBED_MELLIN_PATH
or a ``path`` argument (torch | extension | auto) forces a choice for tests and benchmarks.
"""

from __future__ import annotations

import os
import warnings

import torch

from speechbed.mellin import extension, torch_path
from speechbed.mellin.errors import MellinArgumentError
from speechbed.mellin.sizes import lcorr_valid_size, mcorr_valid_size

#: Environment variable that forces a path when no ``path`` argument is given.
PATH_VARIABLE = "SPEECHBED_MELLIN_PATH"
PATHS = ("auto", "torch", "extension")
#: Dtypes the compiled extension implements; others always take the torch path.
EXTENSION_DTYPES = (torch.float32, torch.float64)
#: Per device ("cuda:0"): whether the extension's results there agree with the torch path.
_agreement: dict[str, bool] = {}


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
    if wanted == "extension":
        if input.dtype not in EXTENSION_DTYPES:
            raise MellinArgumentError(
                f"the Mellin extension implements float32 and float64, not {input.dtype}"
            )
        extension.require(input.device)
        return "extension"
    if input.dtype in EXTENSION_DTYPES and preferred_on(input.device):
        return "extension"
    return "torch"


def preferred_on(device: torch.device) -> bool:
    """Whether "auto" uses the extension on ``device`` (see benchmarks/bench_mellin.py).

    On CPU the torch path measured as fast (and needs no compiler), so auto never builds
    there. On CUDA the extension is used when it has CUDA kernels and, checked once per
    device, agrees with the torch path on a small case; otherwise a warning and torch.
    """
    if device.type != "cuda" or not extension.with_cuda() or not extension.load():
        return False
    key = str(device)
    if key not in _agreement:
        _agreement[key] = agrees_with_torch_path(device)
        if not _agreement[key]:
            warnings.warn(
                f"speechbed.mellin: the extension's results on {device} differ from the torch path; "
                "using the torch path",
                RuntimeWarning,
                stacklevel=2,
            )
    return _agreement[key]


def agrees_with_torch_path(device: torch.device) -> bool:
    """Forward and gradients of a small mcorrlcorr on ``device``: extension against torch path."""
    generator = torch.Generator().manual_seed(0)
    tensors = [
        torch.randn(shape, generator=generator, dtype=torch.float64)
        for shape in ((2, 3, 9, 7), (4, 3, 2, 3), (4,))
    ]
    s, d, p = (2, 1), (1, 2), (1, 1)
    size = (
        mcorr_valid_size(2, 9, s[0], d[0], p[0]) + 1,
        lcorr_valid_size(3, 7, s[1], d[1], p[1]) + 1,
    )
    results = []
    for path in ("torch", "extension"):
        leaves = [tensor.to(device).requires_grad_() for tensor in tensors]
        output = mcorrlcorr(*leaves, s, d, p, size, path=path)
        output.backward(torch.ones_like(output))
        results.append([output.detach().cpu()] + [leaf.grad.cpu() for leaf in leaves])
    return all(torch.allclose(a, b, rtol=1e-9, atol=1e-9) for a, b in zip(*results, strict=True))


def implementation(path: str | None, input: torch.Tensor):
    """The module (extension or torch_path) whose ``mcorr1d``/``mcorrlcorr`` run on ``input``."""
    return extension if choose_path(path, input) == "extension" else torch_path


def mcorr1d(input, weight, bias, s: int, d: int, p: int, size: int, *, path: str | None):
    """mcorr1d on checked arguments with its output length ``size``, by the chosen path."""
    return implementation(path, input).mcorr1d(input, weight, bias, s, d, p, size)


def mcorrlcorr(input, weight, bias, s, d, p, size, *, path: str | None) -> torch.Tensor:
    """mcorrlcorr on checked arguments (pairs) with its output size, by the chosen path."""
    return implementation(path, input).mcorrlcorr(input, weight, bias, s, d, p, size)
