"""The Mellin ops: mcorr1d, mcorrlcorr, snd2col, spec2col, with argument checks and path dispatch.

Called by speechbed.mellin.modules and the acoustic models; index conventions are in DESIGN.md.
"""

from __future__ import annotations

import torch

from speechbed.mellin import dispatch, torch_path
from speechbed.mellin.errors import MellinArgumentError
from speechbed.mellin.sizes import lcorr_valid_size, mcorr_valid_size

IntOrPair = int | tuple[int, int]


def as_pair(value: IntOrPair, name: str) -> tuple[int, int]:
    """``value`` as a pair of ints (an int is used on both axes)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(v, int) for v in value)
    ):
        return (int(value[0]), int(value[1]))
    raise MellinArgumentError(f"{name} must be an int or a pair of ints, got {value!r}")


def param_pairs(s: IntOrPair, d: IntOrPair, p: IntOrPair, r: IntOrPair):
    """``s, d, p, r`` as checked pairs of ints (an int is used on both axes)."""
    pairs = as_pair(s, "s"), as_pair(d, "d"), as_pair(p, "p"), as_pair(r, "r")
    check_params(*pairs)
    return pairs


def check_params(s, d, p, r) -> None:
    for name, values, least in (("s", s, 1), ("d", d, 1), ("p", p, 0), ("r", r, 0)):
        for value in values if isinstance(values, tuple) else (values,):
            if not isinstance(value, int) or isinstance(value, bool):
                raise MellinArgumentError(f"{name} must be an int, got {value!r}")
            if value < least:
                raise MellinArgumentError(f"{name} must be >= {least}, got {value}")


def check_tensors(
    input: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, dims: int, op: str
) -> None:
    shape_in = "(N, C_in, T)" if dims == 3 else "(N, C_in, X, Y)"
    shape_w = "(C_out, C_in, K)" if dims == 3 else "(C_out, C_in, Kx, Ky)"
    if input.dim() != dims:
        raise MellinArgumentError(f"{op}: input must be {shape_in}, got shape {tuple(input.shape)}")
    if not input.is_floating_point():
        raise MellinArgumentError(f"{op}: input must be a floating-point tensor, got {input.dtype}")
    if weight is None:
        return
    if weight.dim() != dims:
        raise MellinArgumentError(
            f"{op}: weight must be {shape_w}, got shape {tuple(weight.shape)}"
        )
    if weight.shape[1] != input.shape[1]:
        raise MellinArgumentError(
            f"{op}: weight has {weight.shape[1]} input channels (dim 1) but input has {input.shape[1]} (dim 1)"
        )
    if min(weight.shape) < 1:
        raise MellinArgumentError(
            f"{op}: weight sizes must be positive, got shape {tuple(weight.shape)}"
        )
    if weight.device != input.device:
        raise MellinArgumentError(
            f"{op}: weight is on {weight.device} but input is on {input.device}"
        )
    if weight.dtype != input.dtype:
        raise MellinArgumentError(f"{op}: weight is {weight.dtype} but input is {input.dtype}")
    if bias is not None:
        if bias.shape != (weight.shape[0],):
            raise MellinArgumentError(
                f"{op}: bias must have shape ({weight.shape[0]},) (C_out), got {tuple(bias.shape)}"
            )
        if bias.device != input.device:
            raise MellinArgumentError(
                f"{op}: bias is on {bias.device} but input is on {input.device}"
            )
        if bias.dtype != input.dtype:
            raise MellinArgumentError(f"{op}: bias is {bias.dtype} but input is {input.dtype}")


def check_kernel_size(kernel_size, dims: int, op: str):
    sizes = (kernel_size,) if dims == 1 else kernel_size
    if any(k < 1 for k in sizes):
        raise MellinArgumentError(f"{op}: kernel sizes must be positive, got {kernel_size!r}")


def output_size_1d(
    kernel_size: int, input_size: int, s: int, d: int, p: int, r: int, op: str
) -> int:
    size = mcorr_valid_size(kernel_size, input_size, s, d, p) + r
    if size < 1:
        raise MellinArgumentError(
            f"{op}: output would be empty: input length {input_size} is too short for kernel size "
            f"{kernel_size} with s={s}, d={d}, p={p}, r={r}"
        )
    return size


def output_size_2d(kernel_size, input_size, s, d, p, r, op: str) -> tuple[int, int]:
    size_x = mcorr_valid_size(kernel_size[0], input_size[0], s[0], d[0], p[0]) + r[0]
    size_y = lcorr_valid_size(kernel_size[1], input_size[1], s[1], d[1], p[1]) + r[1]
    if size_x < 1 or size_y < 1:
        raise MellinArgumentError(
            f"{op}: output would be empty ({size_x} x {size_y}): input size {tuple(input_size)} is too "
            f"small for kernel size {tuple(kernel_size)} with s={s}, d={d}, p={p}, r={r}"
        )
    return size_x, size_y


def mcorr1d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    s: int = 1,
    d: int = 1,
    p: int = 0,
    r: int = 0,
    *,
    path: str | None = None,
) -> torch.Tensor:
    """Mellin correlation over the last axis: input (N, C_in, T), weight (C_out, C_in, K).

    ``h[n,o,t] = b[o] + sum_{i,k} f[o,i,k] g[n,i,(t+s)(k+d)/(p+1) - 1]`` (integer indices
    inside the input only); output (N, C_out, mcorr_valid_size(K, T, s, d, p) + r).
    ``path`` ("torch", "extension" or "auto") overrides SPEECHBED_MELLIN_PATH.
    """
    check_params(s, d, p, r)
    check_tensors(input, weight, bias, 3, "mcorr1d")
    size = output_size_1d(weight.shape[2], input.shape[2], s, d, p, r, "mcorr1d")
    return dispatch.mcorr1d(input, weight, bias, s, d, p, size, path=path)


def mcorrlcorr(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    s: IntOrPair = 1,
    d: IntOrPair = 1,
    p: IntOrPair = 0,
    r: IntOrPair = 0,
    *,
    path: str | None = None,
) -> torch.Tensor:
    """Mellin correlation on axis X, linear correlation on axis Y: input (N, C_in, X, Y).

    ``h[n,o,x,y] = b[o] + sum_{i,a,c} f[o,i,a,c] g[n,i,(x+s0)(a+d0)/(p0+1) - 1, s1*y + d1*c - p1]``
    with weight (C_out, C_in, Kx, Ky); output X is mcorr_valid_size(Kx, X, s0, d0, p0) + r0,
    output Y is lcorr_valid_size(Ky, Y, s1, d1, p1) + r1. ``s, d, p, r`` are ints or pairs.
    """
    s, d, p, r = param_pairs(s, d, p, r)
    check_tensors(input, weight, bias, 4, "mcorrlcorr")
    size = output_size_2d(weight.shape[2:], input.shape[2:], s, d, p, r, "mcorrlcorr")
    return dispatch.mcorrlcorr(input, weight, bias, s, d, p, size, path=path)


def snd2col(
    input: torch.Tensor, kernel_width: int, s: int = 1, d: int = 1, p: int = 0, r: int = 0
) -> torch.Tensor:
    """Mellin columns ``gg[n,i,k,t] = g[n,i,(t+s)(k+d)/(p+1) - 1]`` (0 off the input): (N, C_in, K, T_out).

    ``mcorr1d(g, f, b) == (f.flatten(1) @ gg.flatten(1, 2)) + b[:, None]``.
    """
    check_params(s, d, p, r)
    check_tensors(input, None, None, 3, "snd2col")
    check_kernel_size(kernel_width, 1, "snd2col")
    size = output_size_1d(kernel_width, input.shape[2], s, d, p, r, "snd2col")
    return torch_path.snd2col(input, kernel_width, s, d, p, size)


def spec2col(
    input: torch.Tensor,
    kernel_size: IntOrPair,
    s: IntOrPair = 1,
    d: IntOrPair = 1,
    p: IntOrPair = 0,
    r: IntOrPair = 0,
) -> torch.Tensor:
    """Columns of mcorrlcorr's index map: (N, C_in, Kx, Ky, X_out, Y_out), 0 off the input."""
    kernel_size = as_pair(kernel_size, "kernel_size")
    s, d, p, r = param_pairs(s, d, p, r)
    check_tensors(input, None, None, 4, "spec2col")
    check_kernel_size(kernel_size, 2, "spec2col")
    size = output_size_2d(kernel_size, input.shape[2:], s, d, p, r, "spec2col")
    return torch_path.spec2col(input, kernel_size, s, d, p, size)
