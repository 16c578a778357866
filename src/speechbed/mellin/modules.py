"""Mellin correlation layers: MCorr1d and MCorrLCorr hold weight and bias and call the functional ops.

Used by the "mcorr" acoustic models in speechbed.models.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from speechbed.mellin import functional
from speechbed.mellin.errors import MellinArgumentError
from speechbed.mellin.functional import IntOrPair, as_pair, check_params, param_pairs


class _MellinLayer(nn.Module):
    """Shared parameters, init and repr of the Mellin layers."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: tuple[int, ...], bias: bool
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, int) or value < 1:
                raise MellinArgumentError(f"{name} must be a positive int, got {value!r}")
        if any(k < 1 for k in kernel_size):
            raise MellinArgumentError(f"kernel_size must be positive, got {kernel_size!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weight and bias uniform in +-1/sqrt(C_in * prod(kernel_size))."""
        bound = 1.0 / math.sqrt(self.weight[0].numel())
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        for name, default in (("s", 1), ("d", 1), ("p", 0), ("r", 0)):
            value = getattr(self, name)
            if value not in (default, (default, default)):
                text += f", {name}={value}"
        if self.bias is None:
            text += ", bias=False"
        return text


class MCorr1d(_MellinLayer):
    """Mellin correlation over time: (N, in_channels, T) -> (N, out_channels, T_out); see mcorr1d."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        s: int = 1,
        d: int = 1,
        p: int = 0,
        r: int = 0,
        bias: bool = True,
    ) -> None:
        check_params(s, d, p, r)
        if not isinstance(kernel_size, int):
            raise MellinArgumentError(f"kernel_size must be an int, got {kernel_size!r}")
        self.kernel_size, self.s, self.d, self.p, self.r = kernel_size, s, d, p, r
        super().__init__(in_channels, out_channels, (kernel_size,), bias)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return functional.mcorr1d(input, self.weight, self.bias, self.s, self.d, self.p, self.r)


class MCorrLCorr(_MellinLayer):
    """Mellin correlation on axis X, linear on axis Y: (N, in_channels, X, Y) -> (N, out_channels, X_out, Y_out)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair,
        s: IntOrPair = 1,
        d: IntOrPair = 1,
        p: IntOrPair = 0,
        r: IntOrPair = 0,
        bias: bool = True,
    ) -> None:
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.s, self.d, self.p, self.r = param_pairs(s, d, p, r)
        super().__init__(in_channels, out_channels, self.kernel_size, bias)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return functional.mcorrlcorr(input, self.weight, self.bias, self.s, self.d, self.p, self.r)
