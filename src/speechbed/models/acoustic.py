"""The CNN + RNN acoustic model: windows -> correlations -> RNN -> per-window class logits.

Built by tasks (speechbed.tasks) with ``build_model`` from plain numbers: the architecture
settings, the input size and the number of output classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from speechbed.models.convolution import ConvolutionalStack, plan_layers
from speechbed.models.windows import frames_to_windows

_RECURRENT = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN": nn.RNN}


#: Where the learnable floor of the log compression starts: e^-10 ~ 4.5e-5, about 50 dB under
#: the mean power of a filterbank channel, so quiet bins are not all flattened to the floor.
INITIAL_LOG_EPSILON = -10.0


class LogCompression(nn.Module):
    """log(|x| + e^epsilon) with a learnable epsilon (starting at INITIAL_LOG_EPSILON)."""

    def __init__(self) -> None:
        super().__init__()
        self.log_epsilon = nn.Parameter(torch.tensor(INITIAL_LOG_EPSILON))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return torch.log(windows.abs() + self.log_epsilon.exp())


class Lift(nn.Module):
    """Scale frame j of each window by (j + 1)^tau, with a learnable tau (starts at 0: identity)."""

    def __init__(self) -> None:
        super().__init__()
        self.tau = nn.Parameter(torch.zeros(()))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        # windows: (B, 1, window, F) or (B, 1, window)
        positions = torch.arange(
            1, windows.shape[2] + 1, device=windows.device, dtype=windows.dtype
        )
        scale = positions.pow(self.tau)
        shape = [1, 1, -1] + [1] * (windows.dim() - 3)
        return windows * scale.view(shape)


@dataclass(frozen=True, kw_only=True)
class AcousticModelSettings:
    """The architecture, as plain values (the run config's ``model`` section documents each)."""

    use_log_compression: bool
    use_lift: bool
    window_size: int
    window_stride: int
    convolutional_layers: int
    convolutional_initial_channels: int
    convolutional_kernel_time: int
    convolutional_kernel_freq: int
    convolutional_mellin: bool
    convolutional_time_factor: int
    convolutional_freq_factor: int
    convolutional_channel_factor: int
    convolutional_factor_schedule: int
    convolutional_nonlinearity: str
    convolutional_dropout_2d: bool
    recurrent_type: str
    recurrent_size: int
    recurrent_layers: int
    recurrent_bidirectional: bool


class AcousticModel(nn.Module):
    """(N, T, F) features with lengths -> (N, windows, num_classes) logits and window counts.

    Each window of ``window_size`` frames (every ``window_stride`` frames) is one image through
    the convolutional stack; the window's time axis is then summed out and the sequence of
    windows goes through the recurrent layers and a linear layer to ``num_classes`` logits.
    """

    def __init__(
        self,
        config: AcousticModelSettings,
        num_features: int,
        num_classes: int,
        dropout_prob: float = 0.0,
    ) -> None:
        super().__init__()
        if num_features < 1:
            raise ValueError(f"num_features must be at least 1, got {num_features}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if config.recurrent_type not in _RECURRENT:
            raise ValueError(
                f"recurrent_type must be one of {sorted(_RECURRENT)}, got {config.recurrent_type!r}"
            )
        self.config = config
        self.num_features = num_features
        self.num_classes = num_classes
        self.one_dimensional = num_features == 1
        self.log_compression = LogCompression() if config.use_log_compression else None
        # per-bin standardisation of the (compressed) input, fitted to training data by
        # fit_input_normalization; identity until then, saved with the parameters
        self.register_buffer("input_mean", torch.zeros(num_features))
        self.register_buffer("input_std", torch.ones(num_features))
        self.lift = Lift() if config.use_lift else None
        shapes = plan_layers(
            config.convolutional_layers,
            config.convolutional_initial_channels,
            config.window_size,
            num_features,
            config.convolutional_time_factor,
            1 if self.one_dimensional else config.convolutional_freq_factor,
            config.convolutional_channel_factor,
            config.convolutional_factor_schedule,
        )
        self.convolutions = ConvolutionalStack(
            shapes,
            (config.convolutional_kernel_time, config.convolutional_kernel_freq),
            config.convolutional_mellin,
            config.convolutional_nonlinearity,
            dropout_prob,
            config.convolutional_dropout_2d,
            self.one_dimensional,
        )
        frequency = (
            1 if self.one_dimensional else (shapes[-1].out_size[1] if shapes else num_features)
        )
        features_per_window = self.convolutions.output_channels * frequency
        if config.recurrent_layers > 0:
            self.recurrent: nn.Module | None = _RECURRENT[config.recurrent_type](
                features_per_window,
                config.recurrent_size,
                num_layers=config.recurrent_layers,
                batch_first=True,
                bidirectional=config.recurrent_bidirectional,
                dropout=dropout_prob if config.recurrent_layers > 1 else 0.0,
            )
            output_size = config.recurrent_size * (2 if config.recurrent_bidirectional else 1)
        else:
            self.recurrent = None
            output_size = features_per_window
        self.dropout = nn.Dropout(dropout_prob)
        self.output = nn.Linear(output_size, num_classes)

    def standardize(self, values: torch.Tensor) -> torch.Tensor:
        """Log-compress (when on), then standardise each feature bin (the last axis, or F = 1)."""
        if self.log_compression is not None:
            values = self.log_compression(values)
        if self.one_dimensional:
            return (values - self.input_mean[0]) / self.input_std[0]
        return (values - self.input_mean) / self.input_std

    @torch.no_grad()
    def fit_input_normalization(self, frames: torch.Tensor) -> None:
        """Set the per-bin mean and std from (M, F) training frames, as the model sees them."""
        self.input_mean.zero_()
        self.input_std.fill_(1.0)
        compressed = self.standardize(frames.to(self.input_mean.device, torch.float64)).float()
        self.input_mean.copy_(compressed.mean(dim=0))
        self.input_std.copy_(compressed.std(dim=0).clamp_min(1e-5))

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if features.dim() != 3 or features.shape[2] != self.num_features:
            raise ValueError(
                f"features must be (N, T, {self.num_features}), got shape {tuple(features.shape)}"
            )
        windows, window_counts = frames_to_windows(
            features, lengths, self.config.window_size, self.config.window_stride
        )
        batch, num_windows = windows.shape[:2]
        images = windows.reshape(batch * num_windows, 1, *windows.shape[2:])
        if self.one_dimensional:
            images = images.squeeze(-1)
        images = self.standardize(images)
        if self.lift is not None:
            images = self.lift(images)
        images = self.convolutions(images)
        summed = images.sum(dim=2)  # the window's time axis
        sequence = summed.reshape(batch, num_windows, -1)
        if self.recurrent is not None:
            packed = pack_padded_sequence(
                sequence, window_counts.cpu(), batch_first=True, enforce_sorted=False
            )
            hidden, _ = self.recurrent(packed)
            sequence, _ = pad_packed_sequence(hidden, batch_first=True, total_length=num_windows)
        return self.output(self.dropout(sequence)), window_counts


def build_model(
    config: AcousticModelSettings,
    num_features: int,
    num_classes: int,
    seed: int,
    dropout_prob: float = 0.0,
) -> AcousticModel:
    """The model with parameters drawn from ``seed`` (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AcousticModel(config, num_features, num_classes, dropout_prob)
