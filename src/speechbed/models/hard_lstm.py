"""LSTM layers with selectable gate and cell activations, e.g. hard sigmoid and hard tanh.

Used by the rnnt task when fine-tuning into hard activations (cheap on integer and FPGA
inference hardware): ``replace_lstms`` swaps a model's ``torch.nn.LSTM`` modules for
``HardLstm`` ones holding the same weights. ``HardLstm`` has torch.nn.LSTM's parameter names,
shapes and gate order (input, forget, cell, output), its call signature (padded batch-first
tensors or PackedSequence, optional (h0, c0)) and its between-layer dropout, so state dicts
load either way; with the soft activations it computes what torch.nn.LSTM computes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

GateActivation = Literal["sigmoid", "hard_sigmoid"]
CellActivation = Literal["tanh", "hard_tanh"]


def hard_sigmoid(values: torch.Tensor) -> torch.Tensor:
    """min(1, max(0, x / 6 + 1 / 2)): torch's hardsigmoid, the sigmoid's slope-matched chord."""
    return torch.nn.functional.hardsigmoid(values)


def hard_tanh(values: torch.Tensor) -> torch.Tensor:
    """min(1, max(-1, x))."""
    return torch.clamp(values, -1.0, 1.0)


GATE_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "hard_sigmoid": hard_sigmoid,
}
CELL_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "hard_tanh": hard_tanh,
}


def lstm_cell(
    inputs: torch.Tensor,
    state: tuple[torch.Tensor, torch.Tensor],
    weight_hh: torch.Tensor,
    gate: Callable[[torch.Tensor], torch.Tensor],
    cell: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step: ``inputs`` (B, 4H) is the input projection with both biases already added."""
    hidden, memory = state
    gates = inputs + hidden @ weight_hh.t()
    input_gate, forget_gate, candidate, output_gate = gates.chunk(4, dim=1)
    memory = gate(forget_gate) * memory + gate(input_gate) * cell(candidate)
    return gate(output_gate) * cell(memory), memory


class HardLstm(torch.nn.Module):
    """A batch-first, unidirectional, multi-layer LSTM with chosen activations."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        gate_activation: GateActivation = "hard_sigmoid",
        cell_activation: CellActivation = "hard_tanh",
    ) -> None:
        super().__init__()
        if gate_activation not in GATE_ACTIVATIONS:
            raise ValueError(f"gate_activation must be one of {sorted(GATE_ACTIVATIONS)}")
        if cell_activation not in CELL_ACTIVATIONS:
            raise ValueError(f"cell_activation must be one of {sorted(CELL_ACTIVATIONS)}")
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError("input_size, hidden_size and num_layers must be >= 1")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.dropout = dropout
        self.gate_activation, self.cell_activation = gate_activation, cell_activation
        for layer in range(num_layers):
            width = input_size if layer == 0 else hidden_size
            for name, shape in (
                (f"weight_ih_l{layer}", (4 * hidden_size, width)),
                (f"weight_hh_l{layer}", (4 * hidden_size, hidden_size)),
                (f"bias_ih_l{layer}", (4 * hidden_size,)),
                (f"bias_hh_l{layer}", (4 * hidden_size,)),
            ):
                self.register_parameter(name, torch.nn.Parameter(torch.empty(shape)))
        bound = hidden_size**-0.5  # torch.nn.LSTM's initialisation
        for parameter in self.parameters():
            torch.nn.init.uniform_(parameter, -bound, bound)

    @classmethod
    def from_lstm(
        cls,
        lstm: torch.nn.LSTM,
        gate_activation: GateActivation = "hard_sigmoid",
        cell_activation: CellActivation = "hard_tanh",
    ) -> HardLstm:
        """A copy of ``lstm``'s weights (batch-first, unidirectional, with biases, no projection)."""
        if lstm.bidirectional or not lstm.bias or lstm.proj_size or not lstm.batch_first:
            raise ValueError("only batch-first unidirectional LSTMs with biases are supported")
        hard = cls(
            lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.dropout,
            gate_activation, cell_activation,
        )  # fmt: skip
        hard.load_state_dict(lstm.state_dict())
        return hard.to(lstm.weight_ih_l0.device, lstm.weight_ih_l0.dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"gate={self.gate_activation}, cell={self.cell_activation}"
        )

    def _layer(self, layer: int, inputs: torch.Tensor, lengths: torch.Tensor, state):
        gate = GATE_ACTIVATIONS[self.gate_activation]
        cell = CELL_ACTIVATIONS[self.cell_activation]
        weight_ih = getattr(self, f"weight_ih_l{layer}")
        bias = getattr(self, f"bias_ih_l{layer}") + getattr(self, f"bias_hh_l{layer}")
        projected = inputs @ weight_ih.t() + bias  # (B, T, 4H): every step's input part at once
        weight_hh = getattr(self, f"weight_hh_l{layer}")
        outputs = []
        for t in range(inputs.shape[1]):
            hidden, memory = lstm_cell(projected[:, t], state, weight_hh, gate, cell)
            inside = (t < lengths)[:, None]  # past its length, a row keeps its last state
            state = (torch.where(inside, hidden, state[0]), torch.where(inside, memory, state[1]))
            outputs.append(torch.where(inside, hidden, 0.0))
        return torch.stack(outputs, dim=1), state

    def forward(
        self,
        inputs: torch.Tensor | PackedSequence,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        """As torch.nn.LSTM(batch_first=True): outputs and (h_n, c_n), each (layers, B, H)."""
        packed = isinstance(inputs, PackedSequence)
        if packed:
            padded, lengths = pad_packed_sequence(inputs, batch_first=True)
        else:
            padded = inputs
            lengths = torch.full((inputs.shape[0],), inputs.shape[1], dtype=torch.long)
        lengths = lengths.to(padded.device)
        batch = padded.shape[0]
        if state is None:
            zeros = padded.new_zeros((self.num_layers, batch, self.hidden_size))
            state = (zeros, zeros)
        finals_h, finals_c = [], []
        values = padded
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout and self.training:
                values = torch.nn.functional.dropout(values, self.dropout, True)
            values, (hidden, memory) = self._layer(
                layer, values, lengths, (state[0][layer], state[1][layer])
            )
            finals_h.append(hidden)
            finals_c.append(memory)
        final = (torch.stack(finals_h), torch.stack(finals_c))
        if packed:
            values = pack_padded_sequence(values, lengths.cpu(), True, enforce_sorted=False)
        return values, final


def replace_lstms(
    model: torch.nn.Module,
    gate_activation: GateActivation = "hard_sigmoid",
    cell_activation: CellActivation = "hard_tanh",
) -> int:
    """Swap every torch.nn.LSTM inside ``model`` for a HardLstm with its weights; how many."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.LSTM):
                setattr(parent, name, HardLstm.from_lstm(child, gate_activation, cell_activation))
                swapped += 1
    return swapped
