"""Hard LSTM cells (issue 17): with soft activations they are torch.nn.LSTM; hard ones follow
the formulas written out here; a transducer's LSTMs swap for them with the same state dict."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from speechbed.models.hard_lstm import HardLstm, replace_lstms
from speechbed.models.rnnt import RnntModel, RnntSettings


def _lstm(layers=2):
    torch.manual_seed(0)
    return torch.nn.LSTM(5, 4, layers, batch_first=True).double()


def test_soft_activations_equal_torch_lstm_padded_and_packed():
    lstm = _lstm()
    hard = HardLstm(5, 4, 2, gate_activation="sigmoid", cell_activation="tanh").double()
    hard.load_state_dict(lstm.state_dict())  # the same names and shapes
    assert list(hard.state_dict()) == list(lstm.state_dict())
    inputs = torch.randn(3, 6, 5, dtype=torch.float64, requires_grad=True)
    state = (torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64))
    expected, (h, c) = lstm(inputs, state)
    got, (h2, c2) = hard(inputs, state)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close((h2, c2), (h, c))
    (grad_expected,) = torch.autograd.grad(expected.square().sum(), inputs)
    (grad_got,) = torch.autograd.grad(got.square().sum(), inputs)
    torch.testing.assert_close(grad_got, grad_expected)
    lengths = torch.tensor([4, 6, 2])  # unsorted, so the packing reorders the rows
    packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
    expected, (h, c) = lstm(packed, state)
    got, (h2, c2) = hard(packed, state)
    torch.testing.assert_close(
        pad_packed_sequence(got, batch_first=True)[0],
        pad_packed_sequence(expected, batch_first=True)[0],
    )
    torch.testing.assert_close((h2, c2), (h, c))  # the state at each row's own last frame


def test_hard_activations_follow_the_formulas():
    hard = HardLstm.from_lstm(_lstm(1))
    x = 3 * torch.randn(2, 3, 5, dtype=torch.float64)
    got, _ = hard(x)
    w_ih, w_hh = hard.weight_ih_l0, hard.weight_hh_l0
    bias = hard.bias_ih_l0 + hard.bias_hh_l0
    h = c = torch.zeros(2, 4, dtype=torch.float64)
    for t in range(3):
        z = x[:, t] @ w_ih.T + h @ w_hh.T + bias
        i, f, g, o = (z[:, k * 4 : (k + 1) * 4] for k in range(4))
        hs = [torch.clamp(v / 6 + 0.5, 0, 1) for v in (i, f, o)]
        c = hs[1] * c + hs[0] * torch.clamp(g, -1, 1)
        h = hs[2] * torch.clamp(c, -1, 1)
        torch.testing.assert_close(got[:, t], h)
    assert not torch.allclose(got, _lstm(1)(x)[0])


@pytest.mark.parametrize("activations", [("sigmoid", "tanh"), ("hard_sigmoid", "hard_tanh")])
def test_transducer_lstms_swap_keeping_the_state_dict(activations):
    settings = RnntSettings(
        input_size=6, num_tokens=5, encoder_hidden=8, encoder_pre_layers=1,
        encoder_post_layers=1, prediction_hidden=8, prediction_layers=1, joint_hidden=8,
    )  # fmt: skip
    torch.manual_seed(1)
    model = RnntModel(settings).eval()
    features, lengths = torch.randn(2, 7, 6), torch.tensor([7, 5])
    targets = torch.tensor([[1, 2, 3], [4, 0, 0]])
    expected, _ = model(features, lengths, targets)
    keys = list(model.state_dict())
    assert replace_lstms(model, *activations) == 3
    assert list(model.state_dict()) == keys
    got, _ = model(features, lengths, targets)
    if activations == ("sigmoid", "tanh"):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    else:
        assert got.shape == expected.shape and not torch.allclose(got, expected)
