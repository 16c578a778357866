"""TC-ResNet (temporal convolution ResNet, Choi et al., Interspeech 2019) for keyword spotting.

Built by the kws task (speechbed.tasks.kws) from plain numbers. The input is
``(batch, frames, features)``; the features are the channels of 1-D convolutions along time.

TC-ResNet8: a first convolution of 16 channels, kernel 3 (no bias, no normalisation), three
residual blocks of 24, 32 and 48 channels, kernel 9, each block's first convolution of
stride 2 (convolution, batch norm, ReLU, convolution, batch norm; the shortcut a 1x1
convolution of stride 2, batch norm, ReLU; ReLU after the sum), average pooling over time,
dropout 0.5 and a linear layer. ``width`` multiplies every channel count (TC-ResNet8-1.5 is
width 1.5). Inputs are standardised per feature by statistics fitted on training frames
(buffers, saved with the parameters).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: TC-ResNet8's channels: the first convolution, then one entry per residual block.
TC_RESNET8_CHANNELS = (16, 24, 32, 48)


class InputStandardization(nn.Module):
    """(x - mean) / std per feature; identity until ``fit`` (the statistics are buffers)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))

    def fit(self, frames: torch.Tensor) -> None:
        """Statistics of ``(count, num_features)`` training frames."""
        frames = frames.to(torch.float64)
        self.mean.copy_(frames.mean(dim=0))
        self.std.copy_(frames.std(dim=0).clamp_min(1e-5))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std


class ResidualBlock(nn.Module):
    """Two kernel-``k`` convolutions along time, the first of stride ``stride``, and a shortcut."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int) -> None:
        super().__init__()
        padding = kernel // 2
        self.first = nn.Conv1d(in_channels, out_channels, kernel, stride, padding, bias=False)
        self.first_norm = nn.BatchNorm1d(out_channels)
        self.second = nn.Conv1d(out_channels, out_channels, kernel, 1, padding, bias=False)
        self.second_norm = nn.BatchNorm1d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv1d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm1d(out_channels),
                nn.ReLU(),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.first_norm(self.first(x)))
        y = self.second_norm(self.second(y))
        return torch.relu(y + self.shortcut(x))


def scaled_channels(channels: Sequence[int], width: float) -> list[int]:
    """Channel counts times the width multiplier, rounded, at least 1."""
    return [max(1, round(count * width)) for count in channels]


class TCResNet(nn.Module):
    """Temporal-convolution ResNet: ``(batch, frames, num_features)`` -> ``(batch, num_classes)`` logits."""

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        channels: Sequence[int] = TC_RESNET8_CHANNELS,
        width: float = 1.0,
        first_kernel: int = 3,
        kernel: int = 9,
        stride: int = 2,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError(
                f"channels needs the first convolution's and one block's, got {channels}"
            )
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.num_features = num_features
        sizes = scaled_channels(channels, width)
        self.standardize = InputStandardization(num_features)
        self.first = nn.Conv1d(
            num_features, sizes[0], first_kernel, padding=first_kernel // 2, bias=False
        )
        self.blocks = nn.Sequential(
            *(
                ResidualBlock(a, b, kernel, stride)
                for a, b in zip(sizes[:-1], sizes[1:], strict=True)
            )
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(sizes[-1], num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 3 or features.shape[2] != self.num_features:
            raise ValueError(
                f"features must be (batch, frames, {self.num_features}), got {tuple(features.shape)}"
            )
        x = self.standardize(features).transpose(1, 2)
        x = self.blocks(self.first(x))
        return self.classifier(self.dropout(x.mean(dim=2)))


class KwsLstm(nn.Module):
    """A recurrent baseline: stacked unidirectional LSTM, its outputs averaged over time, a linear
    layer (the average, not the last output: the word sits anywhere in the clip)."""

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        hidden_size: int = 64,
        num_layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.standardize = InputStandardization(num_features)
        self.lstm = nn.LSTM(
            num_features,
            hidden_size,
            num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 3 or features.shape[2] != self.num_features:
            raise ValueError(
                f"features must be (batch, frames, {self.num_features}), got {tuple(features.shape)}"
            )
        outputs, _ = self.lstm(self.standardize(features))
        return self.classifier(self.dropout(outputs.mean(dim=1)))
