"""The RNN transducer model (speechbed.models.rnnt): sizes, time stacking, step-wise prediction."""

from __future__ import annotations

import torch

from speechbed.models.rnnt import RnntModel, RnntSettings, count_parameters, stack_time

TINY = RnntSettings(
    input_size=12, num_tokens=7, encoder_hidden=16, encoder_pre_layers=1, encoder_post_layers=1,
    encoder_stack_factor=2, prediction_hidden=8, prediction_layers=2, joint_hidden=10,
    encoder_dropout=0.0, prediction_dropout=0.0, joint_dropout=0.0,
)  # fmt: skip


def lstm_parameters(inputs: int, hidden: int, layers: int) -> int:
    first = 4 * hidden * (inputs + hidden) + 8 * hidden
    return first + (layers - 1) * (4 * hidden * 2 * hidden + 8 * hidden)


def test_testing_configuration_has_about_49_million_parameters():
    """Myrtle.ai's ``testing`` model (1023 sentencepieces) is listed at 49M parameters."""
    model = RnntModel(RnntSettings())
    expected = (
        lstm_parameters(240, 1024, 2) + lstm_parameters(2048, 1024, 3)
        + 1023 * 512 + lstm_parameters(512, 512, 2)
        + (1024 * 512 + 512) + (512 * 512 + 512) + (512 * 1024 + 1024)
    )  # fmt: skip
    assert count_parameters(model) == expected
    assert round(expected / 1e6) == 49
    bias = model.encoder_pre.bias_ih_l0
    assert torch.all(bias[1024:2048] == 1.0) and torch.all(
        model.encoder_pre.bias_hh_l0[1024:2048] == 0
    )


def test_stack_time_joins_consecutive_frames():
    values = torch.arange(10.0).view(1, 5, 2)
    stacked, lengths = stack_time(values, torch.tensor([5]), 2)
    assert stacked.tolist() == [[[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 0]]]
    assert lengths.tolist() == [3]


def test_forward_shapes_and_step_wise_prediction_match_the_sequence():
    torch.manual_seed(0)
    model = RnntModel(TINY).eval()
    features = torch.randn(3, 9, 12)
    lengths = torch.tensor([9, 6, 3])
    targets = torch.randint(0, 7, (3, 4))
    logits, encoded_lengths = model(features, lengths, targets)
    assert logits.shape == (3, 5, 5, 8) and encoded_lengths.tolist() == [5, 3, 2]
    sequence = model.predict_sequence(targets)
    output, state = model.predict(None, None, 3)
    torch.testing.assert_close(output, sequence[:, 0])
    for position in range(4):
        output, state = model.predict(targets[:, position], state, 3)
        torch.testing.assert_close(output, sequence[:, position + 1])
    encoded, _ = model.encode(features, lengths)
    torch.testing.assert_close(model.join(encoded[:, 2], sequence[:, 1]), logits[:, 2, 1])
    # an utterance's encoding does not depend on the padding of the batch it is in
    alone, _ = model.encode(features[1:2, :6], lengths[1:2])
    torch.testing.assert_close(alone[0], encoded[1, :3])
