"""The RNN transducer of the MLPerf/Myrtle.ai recipe: LSTM encoder, LSTM prediction network, joint.

The rnnt task (speechbed.tasks.rnnt) builds it with ``RnntModel(RnntSettings(...))`` from plain
numbers; speechbed.decoding's transducer greedy search drives its ``predict`` and ``join``.
The encoder reads stacked feature frames: pre-stack LSTM layers, a time-stacking layer that
joins ``stack_factor`` consecutive frames into one, post-stack LSTM layers. The prediction
network reads the tokens emitted so far (a zero vector at the start); the joint network adds
linear projections of both, applies ReLU and maps to the tokens plus the blank (the last class).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

#: The prediction network's state: the LSTM's (h, c), each (layers, batch, hidden).
LstmState = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class RnntSettings:
    """Sizes of the transducer (the defaults are Myrtle.ai's ``testing`` configuration)."""

    input_size: int = 240  # mel bins x frame stacking
    num_tokens: int = 1023  # sentencepiece ids; the blank is the class after them
    encoder_hidden: int = 1024
    encoder_pre_layers: int = 2
    encoder_post_layers: int = 3
    encoder_stack_factor: int = 2
    encoder_dropout: float = 0.1
    prediction_hidden: int = 512
    prediction_layers: int = 2
    prediction_dropout: float = 0.3
    joint_hidden: int = 512
    joint_dropout: float = 0.3
    forget_gate_bias: float = 1.0
    weights_init_scale: float = 0.5

    @property
    def num_classes(self) -> int:
        return self.num_tokens + 1

    @property
    def blank(self) -> int:
        return self.num_tokens


def _lstm(input_size: int, hidden: int, layers: int, dropout: float, settings: RnntSettings):
    """An LSTM with the recipe's initialisation: weights scaled, forget gates biased open."""
    between = dropout if layers > 1 else 0.0  # torch's dropout acts between layers only
    lstm = torch.nn.LSTM(input_size, hidden, layers, batch_first=True, dropout=between)
    with torch.no_grad():
        for name, parameter in lstm.named_parameters():
            parameter.mul_(settings.weights_init_scale)
            if name.startswith("bias_ih"):  # gate order: input, forget, cell, output
                parameter[hidden : 2 * hidden].fill_(settings.forget_gate_bias)
            elif name.startswith("bias_hh"):
                parameter[hidden : 2 * hidden].zero_()
    return lstm


def _run_lstm(lstm: torch.nn.LSTM, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
    outputs, _ = lstm(packed)
    return pad_packed_sequence(outputs, batch_first=True, total_length=inputs.shape[1])[0]


def stack_time(
    values: torch.Tensor, lengths: torch.Tensor, factor: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, H) -> (B, ceil(T / factor), H * factor): consecutive frames joined, zeros past the end."""
    if factor == 1:
        return values, lengths
    padding = -values.shape[1] % factor
    values = torch.nn.functional.pad(values, (0, 0, 0, padding))
    batch, frames, hidden = values.shape
    stacked = values.reshape(batch, frames // factor, hidden * factor)
    return stacked, -torch.div(-lengths, factor, rounding_mode="floor")


class RnntModel(torch.nn.Module):
    """Encoder, prediction and joint networks; ``forward`` gives the (B, T, U + 1, classes) logits."""

    def __init__(self, settings: RnntSettings) -> None:
        super().__init__()
        s = settings
        if s.num_tokens < 1 or s.input_size < 1 or s.encoder_stack_factor < 1:
            raise ValueError(f"num_tokens, input_size and encoder_stack_factor must be >= 1: {s}")
        self.settings = s
        self.encoder_pre = _lstm(
            s.input_size, s.encoder_hidden, s.encoder_pre_layers, s.encoder_dropout, s
        )
        self.encoder_post = _lstm(
            s.encoder_hidden * s.encoder_stack_factor, s.encoder_hidden, s.encoder_post_layers,
            s.encoder_dropout, s,
        )  # fmt: skip
        self.encoder_dropout = torch.nn.Dropout(s.encoder_dropout)
        self.embedding = torch.nn.Embedding(s.num_tokens, s.prediction_hidden)
        self.prediction = _lstm(
            s.prediction_hidden, s.prediction_hidden, s.prediction_layers, s.prediction_dropout, s
        )
        self.prediction_dropout = torch.nn.Dropout(s.prediction_dropout)
        self.joint_encoder = torch.nn.Linear(s.encoder_hidden, s.joint_hidden)
        self.joint_prediction = torch.nn.Linear(s.prediction_hidden, s.joint_hidden)
        self.joint_dropout = torch.nn.Dropout(s.joint_dropout)
        self.joint_output = torch.nn.Linear(s.joint_hidden, s.num_classes)

    def encode(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, input_size) stacked frames -> (B, ceil(T / stack_factor), encoder_hidden)."""
        hidden = self.encoder_dropout(_run_lstm(self.encoder_pre, features, lengths))
        stacked, lengths = stack_time(hidden, lengths, self.settings.encoder_stack_factor)
        return self.encoder_dropout(_run_lstm(self.encoder_post, stacked, lengths)), lengths

    def _embed(self, tokens: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        if tokens is None:  # the start: a zero vector instead of a token's embedding
            weight = self.embedding.weight
            return weight.new_zeros((batch_size, 1, self.settings.prediction_hidden))
        return self.embedding(tokens.long()).view(batch_size, -1, self.settings.prediction_hidden)

    def predict(
        self, tokens: torch.Tensor | None, state: LstmState | None, batch_size: int
    ) -> tuple[torch.Tensor, LstmState]:
        """One prediction step: (B, prediction_hidden) after ``tokens`` (B,), or after the start."""
        outputs, state = self.prediction(self._embed(tokens, batch_size), state)
        return self.prediction_dropout(outputs[:, 0]), state

    def predict_sequence(self, targets: torch.Tensor) -> torch.Tensor:
        """(B, U) targets -> (B, U + 1, prediction_hidden): the output before each target and
        after the last (padded targets only shift outputs that the loss does not read)."""
        batch = targets.shape[0]
        start = self._embed(None, batch)
        inputs = torch.cat([start, self._embed(targets, batch)], dim=1)
        outputs, _ = self.prediction(inputs)
        return self.prediction_dropout(outputs)

    def join(self, encoded: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        """Logits (..., classes) of encoder and prediction vectors that broadcast together."""
        hidden = self.joint_encoder(encoded) + self.joint_prediction(predicted)
        return self.joint_output(self.joint_dropout(torch.relu(hidden)))

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The joint logits over every (frame, tokens-so-far) cell and the encoder lengths."""
        encoded, lengths = self.encode(features, lengths)
        predicted = self.predict_sequence(targets)
        return self.join(encoded[:, :, None, :], predicted[:, None, :, :]), lengths

    def joint_output_parameters(self) -> list[torch.nn.Parameter]:
        """The joint network's last layer (the recipe's ``joint_net_lr_factor`` scales its LR)."""
        return list(self.joint_output.parameters())


def count_parameters(model: torch.nn.Module) -> int:
    return sum(math.prod(parameter.shape) for parameter in model.parameters())
