"""Tests of the windowed CNN + RNN acoustic models (linear and Mellin)."""

from __future__ import annotations

import pytest
import torch

from speechbed.models import build_model
from speechbed.models.convolution import mellin_time_parameters, plan_layers
from speechbed.models.windows import count_windows, frames_to_windows
from speechbed.tasks.ctc_phones import BLANK_INDEX, NUM_CLASSES, acoustic_settings
from speechbed.tasks.ctc_phones.config import AcousticModelConfig as ModelConfig

TINY = dict(
    window_size=6,
    window_stride=2,
    convolutional_layers=2,
    convolutional_initial_channels=3,
    convolutional_kernel_time=3,
    convolutional_kernel_freq=3,
    convolutional_time_factor=2,
    convolutional_freq_factor=2,
    recurrent_size=8,
    recurrent_layers=2,
)


def test_windows_start_every_stride_and_are_zero_padded():
    # one utterance of 5 frames, feature value = frame number + 1; windows of 3 every 2 frames
    # start at frames 0, 2, 4 (ceil(5 / 2) = 3): [1 2 3], [3 4 5], [5 0 0]
    features = torch.arange(1.0, 8.0).reshape(1, 7, 1)  # 2 padding frames holding 6 and 7
    windows, counts = frames_to_windows(features, torch.tensor([5]), 3, 2)
    assert counts.tolist() == [3]
    assert windows[0, :, :, 0].tolist() == [[1, 2, 3], [3, 4, 5], [5, 0, 0]]
    assert count_windows(torch.tensor([1, 2, 3, 0]), 2).tolist() == [1, 1, 2, 1]


def test_layer_plan_shrinks_and_multiplies_on_schedule():
    # 4 layers, factors every 2 layers: sizes 10x81 -> 10x81 -> 5x41 -> 5x41 -> 3x21 (ceil)
    shapes = plan_layers(4, 4, 10, 81, 2, 2, 3, 2)
    assert [shape.out_size for shape in shapes] == [(10, 81), (5, 41), (5, 41), (3, 21)]
    assert [(shape.in_channels, shape.out_channels) for shape in shapes] == [
        (1, 4),
        (4, 4),
        (4, 12),
        (12, 12),
    ]


@pytest.mark.parametrize("kernel", [1, 2, 3, 5])
@pytest.mark.parametrize("size", [1, 4, 7, 10, 16])
@pytest.mark.parametrize("factor", [1, 2, 3])
def test_mellin_time_parameters_give_the_planned_size(kernel, size, factor):
    from speechbed.mellin import mcorr_valid_size

    target = -(-size // factor)
    dilation, padding, extra = mellin_time_parameters(kernel, size, target, factor)
    assert extra >= 0
    assert mcorr_valid_size(kernel, size, 1, dilation, padding) + extra == target


@pytest.mark.parametrize("mellin", [False, True])
@pytest.mark.parametrize("num_features", [1, 9])
def test_every_layer_outputs_its_planned_size(mellin, num_features):
    model = build_model(
        acoustic_settings(ModelConfig(**TINY, convolutional_mellin=mellin)),
        num_features,
        NUM_CLASSES,
        seed=0,
    )
    images = torch.randn(5, 1, TINY["window_size"], num_features)
    if num_features == 1:
        images = images.squeeze(-1)
    shapes = iter(model.convolutions.shapes)
    for layer in model.convolutions.layers:
        if isinstance(layer, torch.nn.ReLU):
            continue
        images = layer(images)
        shape = next(shapes)
        expected = shape.out_size if num_features > 1 else shape.out_size[:1]
        assert tuple(images.shape[2:]) == expected
        assert images.shape[1] == shape.out_channels


@pytest.mark.parametrize("mellin", [False, True])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"use_log_compression": True, "use_lift": True, "recurrent_type": "GRU"},
        {"recurrent_layers": 0, "convolutional_layers": 0},
        {"recurrent_bidirectional": False, "recurrent_type": "RNN"},
    ],
)
def test_padding_never_changes_an_utterances_outputs(mellin, options):
    config = ModelConfig(**{**TINY, **options, "convolutional_mellin": mellin})
    model = build_model(acoustic_settings(config), 7, NUM_CLASSES, seed=1).eval()
    generator = torch.Generator().manual_seed(0)
    model.fit_input_normalization(torch.rand(50, 7, generator=generator))
    lengths = torch.tensor([23, 5, 14, 1])
    batch = torch.randn(4, 30, 7, generator=generator) * 3  # garbage past each length
    with torch.no_grad():
        outputs, counts = model(batch, lengths)
        assert outputs.shape == (4, int(count_windows(lengths, 2).max()), NUM_CLASSES)
        for row, length in enumerate(lengths.tolist()):
            alone, alone_counts = model(batch[row : row + 1, :length], lengths[row : row + 1])
            assert alone_counts.item() == counts[row].item()
            torch.testing.assert_close(outputs[row, : counts[row]], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mellin", [False, True])
def test_raw_audio_uses_one_dimensional_layers_and_ignores_padding(mellin):
    from speechbed.mellin import MCorr1d

    config = ModelConfig(
        **{**TINY, "window_size": 16, "window_stride": 8, "convolutional_mellin": mellin}
    )
    model = build_model(acoustic_settings(config), 1, NUM_CLASSES, seed=2).eval()
    kinds = {type(module) for module in model.modules()}
    assert (MCorr1d if mellin else torch.nn.Conv1d) in kinds and torch.nn.Conv2d not in kinds
    samples = torch.randn(2, 100, 1, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([100, 37])
    with torch.no_grad():
        outputs, counts = model(samples, lengths)
        alone, _ = model(samples[1:, :37], lengths[1:])
    assert counts.tolist() == [13, 5]  # ceil(100 / 8), ceil(37 / 8)
    torch.testing.assert_close(outputs[1, :5], alone[0], rtol=1e-5, atol=1e-5)


def test_same_seed_same_parameters_and_global_rng_untouched():
    state = torch.get_rng_state()
    first = build_model(
        acoustic_settings(ModelConfig(**TINY, convolutional_mellin=True)), 9, NUM_CLASSES, seed=5
    )
    second = build_model(
        acoustic_settings(ModelConfig(**TINY, convolutional_mellin=True)), 9, NUM_CLASSES, seed=5
    )
    other = build_model(
        acoustic_settings(ModelConfig(**TINY, convolutional_mellin=True)), 9, NUM_CLASSES, seed=6
    )
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    pairs = zip(first.parameters(), other.parameters(), strict=True)
    assert not all(torch.equal(a, c) for a, c in pairs)


def test_wrong_feature_size_is_named():
    model = build_model(acoustic_settings(ModelConfig(**TINY)), 9, NUM_CLASSES, seed=0)
    with pytest.raises(ValueError, match=r"\(N, T, 9\)"):
        model(torch.zeros(2, 10, 8), torch.tensor([10, 10]))


@pytest.mark.parametrize("mellin", [False, True])
def test_both_kinds_of_model_learn_a_fixed_batch(mellin):
    # CTC on three utterances whose frames spell their phones: the loss must fall well below
    # its start within a few dozen Adam steps, for linear and Mellin convolutions alike.
    torch.manual_seed(0)
    prototypes = torch.randn(4, 6) * 2
    phones = [[0, 1, 2], [3, 1], [2, 0, 3, 1]]
    utterances = [torch.cat([prototypes[p].expand(6, 6) for p in seq]) for seq in phones]
    lengths = torch.tensor([len(u) for u in utterances])
    features = torch.nn.utils.rnn.pad_sequence(utterances, batch_first=True)
    targets = torch.tensor([p for seq in phones for p in seq])
    target_lengths = torch.tensor([len(seq) for seq in phones])
    config = ModelConfig(**{**TINY, "convolutional_mellin": mellin, "recurrent_size": 16})
    model = build_model(acoustic_settings(config), 6, NUM_CLASSES, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    ctc = torch.nn.CTCLoss(blank=BLANK_INDEX, zero_infinity=True)
    losses = []
    for _ in range(40):
        logits, counts = model(features, lengths)
        loss = ctc(logits.log_softmax(-1).transpose(0, 1), targets, counts, target_lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]


def test_input_normalization_standardizes_the_compressed_training_frames():
    import numpy as np

    config = ModelConfig(**TINY, use_log_compression=True)
    model = build_model(acoustic_settings(config), 4, NUM_CLASSES, seed=0)
    generator = np.random.default_rng(0)
    frames = generator.gamma(0.5, 0.01, size=(500, 4))  # power-like: positive, skewed, small
    model.fit_input_normalization(torch.from_numpy(frames).float())
    # reference in float64 numpy: log(|x| + e^-10), then per-bin mean and (unbiased) std
    compressed = np.log(np.abs(frames) + np.exp(-10.0))
    np.testing.assert_allclose(model.input_mean.numpy(), compressed.mean(0), rtol=1e-5)
    np.testing.assert_allclose(model.input_std.numpy(), compressed.std(0, ddof=1), rtol=1e-5)
    standardized = model.standardize(torch.from_numpy(frames).float()).detach().double()
    np.testing.assert_allclose(standardized.mean(0).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(standardized.std(0).numpy(), 1, atol=1e-4)
    # the statistics travel with the parameters
    assert {"input_mean", "input_std"} <= set(model.state_dict())
