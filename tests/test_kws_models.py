"""KWS models: TC-ResNet8's parameter count worked out by hand, the width variant, the LSTM
baseline, and the multiply-accumulates per 1 s clip counted by speechbed.deployment."""

from __future__ import annotations

import torch

from speechbed.models.tc_resnet import KwsLstm, TCResNet


def _count(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def _block(c_in: int, c_out: int, kernel: int = 9) -> int:
    """A residual block: two kernel-9 convolutions, a 1x1 shortcut, three batch norms
    (weight and bias each); no convolution has a bias."""
    return c_in * c_out * kernel + c_out * c_out * kernel + c_in * c_out + 3 * 2 * c_out


def test_tc_resnet8_parameter_count_by_hand() -> None:
    # 40 MFCCs in, 12 classes out, width 1:
    first = 40 * 16 * 3  # 1920: the first convolution, kernel 3, no bias
    block1 = 16 * 24 * 9 + 24 * 24 * 9 + 16 * 24 + 6 * 24  # 3456 + 5184 + 384 + 144 = 9168
    block2 = 24 * 32 * 9 + 32 * 32 * 9 + 24 * 32 + 6 * 32  # 6912 + 9216 + 768 + 192 = 17088
    block3 = 32 * 48 * 9 + 48 * 48 * 9 + 32 * 48 + 6 * 48  # 13824 + 20736 + 1536 + 288 = 36384
    classifier = 48 * 12 + 12  # 588
    trainable = first + block1 + block2 + block3 + classifier
    assert trainable == 65148 == _count(TCResNet(40, 12))
    # The published "about 66k" counts the batch norms' running mean and variance too
    # (Keras's total counts non-trainable weights): 2 x (3 x 24 + 3 x 32 + 3 x 48) = 624.
    running = 2 * 3 * (24 + 32 + 48)
    model = TCResNet(40, 12)
    buffers = sum(
        b.numel()
        for name, b in model.named_buffers()
        if name.endswith(("running_mean", "running_var"))
    )
    assert buffers == running and trainable + running == 65772


def test_width_multiplier() -> None:
    # TC-ResNet8-1.5: 24, 36, 48, 72 channels
    expected = 40 * 24 * 3 + _block(24, 36) + _block(36, 48) + _block(48, 72) + 72 * 12 + 12
    assert _count(TCResNet(40, 12, width=1.5)) == expected
    assert _count(TCResNet(40, 12, width=0.5)) < _count(TCResNet(40, 12)) < expected


def test_shapes_and_input_checks() -> None:
    model = TCResNet(40, 12).eval()
    assert model(torch.randn(3, 101, 40)).shape == (3, 12)
    lstm = KwsLstm(40, 12, hidden_size=32, num_layers=2).eval()
    assert lstm(torch.randn(3, 101, 40)).shape == (3, 12)
    # LSTM: 4 gates x (input + hidden + 2 biases) x hidden per layer, then the classifier
    assert _count(lstm) == 4 * 32 * (40 + 32 + 2) + 4 * 32 * (32 + 32 + 2) + 32 * 12 + 12
    try:
        model(torch.randn(3, 101, 13))
    except ValueError as error:
        assert "(batch, frames, 40)" in str(error)
    else:
        raise AssertionError("a wrong feature size was accepted")


def test_standardization_is_fitted_and_saved() -> None:
    model = TCResNet(4, 3)
    frames = torch.randn(500, 4) * torch.tensor([1.0, 10.0, 0.1, 5.0]) + 3.0
    model.standardize.fit(frames)
    standardized = model.standardize(frames)
    torch.testing.assert_close(standardized.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    assert "standardize.mean" in model.state_dict()


def test_multiply_accumulates_per_clip_by_hand() -> None:
    from speechbed.deployment.costs import count_macs

    # 101 frames of 40 MFCCs (1 s, 10 ms hop, centred); kernel 9 with padding 4 and stride 2:
    # 101 -> 51 -> 26 -> 13 frames. Each convolution: out frames x out ch x in ch x kernel.
    first = 101 * 16 * 40 * 3
    block1 = 51 * 24 * 16 * 9 + 51 * 24 * 24 * 9 + 51 * 24 * 16
    block2 = 26 * 32 * 24 * 9 + 26 * 32 * 32 * 9 + 26 * 32 * 24
    block3 = 13 * 48 * 32 * 9 + 13 * 48 * 48 * 9 + 13 * 48 * 32
    expected = first + block1 + block2 + block3 + 48 * 12
    assert expected == 1_563_264
    assert count_macs(TCResNet(40, 12), torch.randn(1, 101, 40)) == expected
    lstm = KwsLstm(40, 12, hidden_size=32, num_layers=2)
    assert count_macs(lstm, torch.randn(1, 101, 40)) == 101 * 4 * 32 * (40 + 32 + 32 + 32) + 32 * 12
