"""The convolutional front end: a stack of linear or Mellin correlations over each window.

Built by the acoustic model from its architecture settings; every layer's output size is planned
exactly (time and frequency shrink by their factors, rounding up), for both kinds of layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from speechbed.mellin import MCorr1d, MCorrLCorr, lcorr_valid_size, mcorr_valid_size

NONLINEARITIES = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


@dataclass(frozen=True)
class LayerShape:
    """One layer's channels and (time, frequency) sizes in and out, and how much it shrinks."""

    in_channels: int
    out_channels: int
    in_size: tuple[int, int]
    out_size: tuple[int, int]
    stride: tuple[int, int]


def plan_layers(
    num_layers: int,
    initial_channels: int,
    window_size: int,
    num_features: int,
    time_factor: int,
    freq_factor: int,
    channel_factor: int,
    factor_schedule: int,
) -> list[LayerShape]:
    """Shapes of the stack: layer i shrinks when (i + 1) is a multiple of ``factor_schedule``.

    Channels start at ``initial_channels`` and multiply by ``channel_factor`` on the layer after
    each shrinking layer; sizes shrink to ceil(size / factor).
    """
    shapes = []
    in_channels, size = 1, (window_size, num_features)
    out_channels = initial_channels
    for index in range(num_layers):
        shrinks = (index + 1) % factor_schedule == 0
        stride = (time_factor, freq_factor) if shrinks else (1, 1)
        out_size = (-(-size[0] // stride[0]), -(-size[1] // stride[1]))
        shapes.append(LayerShape(in_channels, out_channels, size, out_size, stride))
        in_channels, size = out_channels, out_size
        if shrinks:
            out_channels *= channel_factor
    return shapes


class LinearCorrelation(nn.Module):
    """Conv1d/Conv2d with the padding that gives exactly the planned output size.

    Left padding is (kernel - 1) // 2; the right side is padded (or cropped) to fit.
    """

    def __init__(
        self, shape: LayerShape, kernel_size: tuple[int, int], one_dimensional: bool
    ) -> None:
        super().__init__()
        axes = 1 if one_dimensional else 2
        padding: list[int] = []
        for axis in reversed(range(axes)):  # F.pad lists the last axis first
            left = (kernel_size[axis] - 1) // 2
            right = (
                (shape.out_size[axis] - 1) * shape.stride[axis]
                + kernel_size[axis]
                - shape.in_size[axis]
                - left
            )
            padding += [left, right]
        self.padding = tuple(padding)
        convolution = nn.Conv1d if one_dimensional else nn.Conv2d
        self.convolution = convolution(
            shape.in_channels,
            shape.out_channels,
            kernel_size[:axes],
            stride=shape.stride[:axes],
        )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.convolution(nn.functional.pad(input, self.padding))


def mellin_time_parameters(
    kernel: int, in_size: int, out_size: int, factor: int
) -> tuple[int, int, int]:
    """(d, p, r) of a Mellin correlation along time that maps in_size to exactly out_size.

    With p = kernel - 1 the last tap reads g[t * (kernel + d - 1) / kernel]; d = kernel * (factor - 1) + 1
    makes that g[t * factor], and r adds the one output floor division may drop.
    """
    dilation, padding = kernel * (factor - 1) + 1, kernel - 1
    valid = mcorr_valid_size(kernel, in_size, 1, dilation, padding)
    return dilation, padding, out_size - valid


def build_mellin_layer(
    shape: LayerShape, kernel_size: tuple[int, int], one_dimensional: bool
) -> nn.Module:
    """MCorrLCorr (Mellin on time, linear on frequency) or MCorr1d sized to the plan."""
    time_d, time_p, time_r = mellin_time_parameters(
        kernel_size[0], shape.in_size[0], shape.out_size[0], shape.stride[0]
    )
    if one_dimensional:
        return MCorr1d(
            shape.in_channels, shape.out_channels, kernel_size[0], 1, time_d, time_p, time_r
        )
    freq_p = (kernel_size[1] - 1) // 2
    freq_valid = lcorr_valid_size(kernel_size[1], shape.in_size[1], shape.stride[1], 1, freq_p)
    freq_r = shape.out_size[1] - freq_valid
    return MCorrLCorr(
        shape.in_channels,
        shape.out_channels,
        kernel_size,
        s=(1, shape.stride[1]),
        d=(time_d, 1),
        p=(time_p, freq_p),
        r=(time_r, freq_r),
    )


class ConvolutionalStack(nn.Module):
    """Correlation, nonlinearity and dropout per layer over (B, 1, window, F) window images.

    Features with F = 1 (raw audio) use the 1-D layers over (B, 1, window).
    """

    def __init__(
        self,
        shapes: list[LayerShape],
        kernel_size: tuple[int, int],
        mellin: bool,
        nonlinearity: str,
        dropout_prob: float,
        dropout_2d: bool,
        one_dimensional: bool,
    ) -> None:
        super().__init__()
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(
                f"nonlinearity must be one of {sorted(NONLINEARITIES)}, got {nonlinearity!r}"
            )
        self.one_dimensional = one_dimensional
        self.shapes = shapes
        layers: list[nn.Module] = []
        for shape in shapes:
            if mellin:
                layers.append(build_mellin_layer(shape, kernel_size, one_dimensional))
            else:
                layers.append(LinearCorrelation(shape, kernel_size, one_dimensional))
            layers.append(NONLINEARITIES[nonlinearity]())
            if dropout_prob > 0:
                if dropout_2d:
                    dropout = nn.Dropout1d if one_dimensional else nn.Dropout2d
                    layers.append(dropout(dropout_prob))
                else:
                    layers.append(nn.Dropout(dropout_prob))
        self.layers = nn.Sequential(*layers)

    @property
    def output_channels(self) -> int:
        return self.shapes[-1].out_channels if self.shapes else 1

    @property
    def output_size(self) -> tuple[int, int] | None:
        return self.shapes[-1].out_size if self.shapes else None

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.layers(windows)
