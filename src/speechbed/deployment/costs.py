"""What a clip classifier costs: parameters, multiply-accumulates per clip, latency per clip.

Used by speechbed.deployment.backends and scripts/export.py.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass of a one-clip ``example``.

    Convolutions: output elements x input channels per group x kernel; linear layers:
    inputs x outputs; LSTM layers: 4 gates x hidden x (input + hidden) per frame. Batch
    norm, activations, pooling and the input standardisation (folded or cheap) are left out.
    """
    total = 0

    def convolution(module: nn.Conv1d, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        kernel = int(np.prod(module.kernel_size))
        total += output[0].numel() * (module.in_channels // module.groups) * kernel

    def linear(module: nn.Linear, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += output[0].numel() // module.out_features * module.in_features * module.out_features

    def lstm(module: nn.LSTM, inputs: tuple, output: tuple) -> None:
        nonlocal total
        frames = inputs[0].shape[1] if module.batch_first else inputs[0].shape[0]
        hidden = module.hidden_size
        for layer in range(module.num_layers):
            size = module.input_size if layer == 0 else hidden
            total += frames * 4 * hidden * (size + hidden)

    hooks = []
    for module in model.modules():
        if isinstance(module, nn.Conv1d | nn.Conv2d):
            hooks.append(module.register_forward_hook(convolution))
        elif isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(linear))
        elif isinstance(module, nn.LSTM):
            hooks.append(module.register_forward_hook(lstm))
    try:
        with torch.no_grad():
            model.eval()(example[:1])
    finally:
        for hook in hooks:
            hook.remove()
    return total


def latency_per_clip(
    infer: Callable[[np.ndarray], object], clips: np.ndarray, warmup: int = 5
) -> dict[str, float]:
    """Median and 90th percentile milliseconds of ``infer`` on one clip at a time (batch 1)."""
    for index in range(min(warmup, len(clips))):
        infer(clips[index : index + 1])
    times = []
    for index in range(len(clips)):
        started = time.perf_counter()
        infer(clips[index : index + 1])
        times.append(1000 * (time.perf_counter() - started))
    ordered = sorted(times)
    return {
        "median_ms": round(statistics.median(times), 4),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 4),
        "clips": len(times),
    }
