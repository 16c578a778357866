"""Tests of the Mellin ops: hand-worked values, float64 gradcheck, paths, batches, modules, errors.

Every path (the vectorized torch path, and the compiled extension where it builds) is checked
against the values worked by hand from the formulas of issue 4 and against each other.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil

import pytest
import torch

from speechbed.mellin import (
    MCorr1d,
    MCorrLCorr,
    MellinArgumentError,
    lconv_support_size,
    lconv_valid_size,
    lcorr_support_size,
    lcorr_valid_size,
    mconv_support_size,
    mconv_valid_size,
    mcorr1d,
    mcorr_support_size,
    mcorr_valid_size,
    mcorrlcorr,
    snd2col,
    spec2col,
)

PATHS = ["torch", "extension"]
F64 = torch.float64


@pytest.fixture(scope="session")
def mellin_extension_built() -> bool:
    """Builds the compiled extension once (a build failure fails the tests); False without a compiler."""
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        return False
    from speechbed.mellin import extension

    extension.load(strict=True)
    return True


@pytest.fixture(params=PATHS)
def path(request, mellin_extension_built):
    """Each implementation in turn; the extension one needs the compiled extension."""
    if request.param == "extension" and not mellin_extension_built:
        pytest.skip("no C++ compiler here, so the Mellin extension cannot be built")
    return request.param


def ramp_1d() -> torch.Tensor:
    """g = [1, 2, 3, 4, 5, 6] as (N=1, C=1, T=6)."""
    return torch.arange(1.0, 7.0, dtype=F64).view(1, 1, 6)


def grid_2d(rows: int, cols: int) -> torch.Tensor:
    """g[x, y] = 10 x + y as (N=1, C=1, X=rows, Y=cols)."""
    x = torch.arange(rows, dtype=F64).view(rows, 1)
    y = torch.arange(cols, dtype=F64).view(1, cols)
    return (10 * x + y).view(1, 1, rows, cols)


# --- size helpers, worked by hand ----------------------------------------------------------


def test_size_helpers_hand_worked():
    # floor(8*2/3) - 1 + 1 = 5: the X axis of the benchmark case
    assert mcorr_valid_size(3, 8, 1, 1, 1) == 5
    # floor((6+2-1)*1/2) - 1 + 1 = 3
    assert mcorr_valid_size(2, 6, u=2) == 3
    # floor(6/(2+3-1)) - 2 + 1 = 0, and with s=3 it is -1, clamped to 0
    assert mcorr_valid_size(2, 6, s=2, d=3) == 0
    assert mcorr_valid_size(2, 6, s=3, d=3) == 0
    # floor(8*2/2) - 1 + 1 = 8
    assert mcorr_support_size(3, 8, 1, 2, 1) == 8
    # floor(3*10/2) - 2 + 1 = 14
    assert mconv_valid_size(3, 10, s=2, d=3, p=1) == 14
    # floor((3+2-1)*10/2) - 1 + 1 = 20
    assert mconv_support_size(3, 10, 1, 2, 1) == 20
    # (80 - 8 + 4)//1 + 1 = 77: the Y axis of the benchmark case
    assert lcorr_valid_size(9, 81, 1, 1, 4) == 77
    # (2*9 - 2 + 0)//1 + 1 = 17
    assert lcorr_valid_size(3, 10, u=2) == 17
    # (2 - 8)//1 + 1 = -5, clamped to 0
    assert lcorr_valid_size(9, 3) == 0
    # (9 + 1)//2 + 1 = 6
    assert lcorr_support_size(3, 10, 2, 1, 1) == 6
    # (9 - 1)//2 + 1 = 5
    assert lconv_valid_size(3, 10, 2, 1, 1) == 5
    # (9 + 2*2 - 0)//1 + 1 = 14
    assert lconv_support_size(3, 10, 1, 2, 0) == 14


# --- forward values, worked by hand --------------------------------------------------------


def test_mcorr1d_hand_worked_plain(path):
    # s=d=1, p=0: h[t] = f0 g[t] + f1 g[2t+1]; T_out = floor(6/2) = 3
    # t=0: 1 + 10*2 = 21; t=1: 2 + 10*4 = 42; t=2: 3 + 10*6 = 63
    weight = torch.tensor([[[1.0, 10.0]]], dtype=F64)
    output = mcorr1d(ramp_1d(), weight, path=path)
    assert output.tolist() == [[[21.0, 42.0, 63.0]]]


def test_mcorr1d_hand_worked_padded(path):
    # p=1, r=2: T_out = floor(6*2/2) + 2 = 8; tap k reads g[(t+1)(k+1)/2 - 1] when even
    # k=0 reads g[(t+1)/2 - 1] for odd t: t=1->g0=1, t=3->g1=2, t=5->g2=3, t=7->g3=4
    # k=1 reads g[t] for t < 6 (times 10): 10, 20, 30, 40, 50, 60, then 0, 0
    # sums: [10, 1+20, 30, 2+40, 50, 3+60, 0, 4]
    weight = torch.tensor([[[1.0, 10.0]]], dtype=F64)
    output = mcorr1d(ramp_1d(), weight, p=1, r=2, path=path)
    assert output.tolist() == [[[10.0, 21.0, 30.0, 42.0, 50.0, 63.0, 0.0, 4.0]]]


def test_mcorr1d_hand_worked_shift_dilation_bias(path):
    # s=2, d=3: valid size floor(6/4) - 2 + 1 = 0, r=2 gives T_out = 2
    # t=0: f0 g[(2)(3)-1] = g5 = 6, f1 g[2*4-1] = g7 is outside -> 6 + 0.5
    # t=1: g[3*3-1] = g8 and g[3*4-1] = g11 are outside -> 0 + 0.5
    weight = torch.tensor([[[1.0, 10.0]]], dtype=F64)
    bias = torch.tensor([0.5], dtype=F64)
    output = mcorr1d(ramp_1d(), weight, bias, s=2, d=3, r=2, path=path)
    assert output.tolist() == [[[6.5, 0.5]]]


def test_mcorrlcorr_hand_worked_left_padding(path):
    # g[x,y] = 10x + y on 3x4; f = [[1,2],[3,4]]; p=(0,1)
    # X_out = floor(3/2) = 1 (rows (0+1)(a+1)-1 = a); Y_out = (3 - 1 + 1) + 1 = 4 (cols y+c-1)
    # y=0: col -1 is 0; 2*g[0,0] + 4*g[1,0] = 0 + 40 = 40
    # y=1: (1*0 + 3*10) + (2*1 + 4*11) = 30 + 46 = 76
    # y=2: (1*1 + 3*11) + (2*2 + 4*12) = 34 + 52 = 86
    # y=3: (1*2 + 3*12) + (2*3 + 4*13) = 38 + 58 = 96
    weight = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=F64)
    output = mcorrlcorr(grid_2d(3, 4), weight, p=(0, 1), path=path)
    assert output.tolist() == [[[[40.0, 76.0, 86.0, 96.0]]]]


def test_mcorrlcorr_hand_worked_mellin_padding_and_linear_stride(path):
    # g[x,y] = 10x + y on 4x5; f = [[1,2],[3,4]]; s=(1,2), d=(1,2), p=(1,0), r=(0,1)
    # X_out = floor(4*2/2) - 1 + 1 = 4; Y_out = ((4 - 2)//2 + 1) + 1 = 3
    # rows (x+1)(a+1)/2 - 1: a=0 -> row 0 at x=1, row 1 at x=3 (none at x=0, 2); a=1 -> row x
    # cols 2y + 2c: y=0 -> 0, 2; y=1 -> 2, 4; y=2 -> 4, 6 (6 is outside)
    # x=0: 3 g[0,2y] + 4 g[0,2y+2]                 -> 0+8=8,   6+16=22,   12+0=12
    # x=1: g[0,2y] + 2 g[0,2y+2] + 3 g[1,2y] + 4 g[1,2y+2]
    #      -> 0+4+30+48=82, 2+8+36+56=102, 4+0+42+0=46
    # x=2: 3 g[2,2y] + 4 g[2,2y+2]                 -> 60+88=148, 66+96=162, 72+0=72
    # x=3: g[1,2y] + 2 g[1,2y+2] + 3 g[3,2y] + 4 g[3,2y+2]
    #      -> 10+24+90+128=252, 12+28+96+136=272, 14+0+102+0=116
    weight = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=F64)
    output = mcorrlcorr(grid_2d(4, 5), weight, s=(1, 2), d=(1, 2), p=(1, 0), r=(0, 1), path=path)
    expected = [[8.0, 22.0, 12.0], [82.0, 102.0, 46.0], [148.0, 162.0, 72.0], [252.0, 272.0, 116.0]]
    assert output.tolist() == [[expected]]


def test_snd2col_hand_worked():
    # K=2, s=d=1, p=0: gg[k=0, t] = g[t] = 1, 2, 3; gg[k=1, t] = g[2t+1] = 2, 4, 6
    columns = snd2col(ramp_1d(), 2)
    assert columns.shape == (1, 1, 2, 3)
    assert columns.tolist() == [[[[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]]]]


def test_spec2col_hand_worked():
    # the left-padding case above: taps (a, c) of output (0, y) read g[a, y + c - 1]
    columns = spec2col(grid_2d(3, 4), (2, 2), p=(0, 1))
    assert columns.shape == (1, 1, 2, 2, 1, 4)
    assert columns[0, 0, :, :, 0, 1].tolist() == [[0.0, 1.0], [10.0, 11.0]]
    assert columns[0, 0, :, :, 0, 0].tolist() == [[0.0, 0.0], [0.0, 10.0]]


def test_columns_times_weight_equal_the_ops():
    torch.manual_seed(0)
    signal, weight, bias = (
        torch.randn(2, 3, 13, dtype=F64),
        torch.randn(4, 3, 3, dtype=F64),
        torch.randn(4, dtype=F64),
    )
    columns = snd2col(signal, 3, s=2, d=1, p=3, r=2)
    expected = weight.flatten(1) @ columns.flatten(1, 2) + bias[:, None]
    torch.testing.assert_close(
        mcorr1d(signal, weight, bias, s=2, d=1, p=3, r=2, path="torch"), expected
    )
    spectrum, weight2 = torch.randn(2, 3, 9, 7, dtype=F64), torch.randn(4, 3, 2, 3, dtype=F64)
    columns = spec2col(spectrum, (2, 3), s=(2, 1), d=(1, 2), p=(1, 2), r=(2, 1))
    expected = torch.einsum("oiac,niacxy->noxy", weight2, columns) + bias[:, None, None]
    output = mcorrlcorr(
        spectrum, weight2, bias, s=(2, 1), d=(1, 2), p=(1, 2), r=(2, 1), path="torch"
    )
    torch.testing.assert_close(output, expected)


# --- gradients ---------------------------------------------------------------------------

GRID = list(itertools.product((1, 2, 3), (1, 2, 3), (0, 1, 3), (0, 2)))
# The whole grid is checked in gradcheck's fast mode (a random projection of the Jacobian,
# which a wrong gradient fails too); these combinations get the full Jacobian comparison.
FULL_CHECKS = {(1, 1, 0, 0), (2, 1, 1, 2), (1, 3, 3, 0), (3, 2, 1, 2)}


def second_axis(value: int, choices: tuple[int, ...]) -> int:
    """A different value for the linear axis, so the two axes are not tied."""
    return choices[(choices.index(value) + 1) % len(choices)]


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
def test_gradcheck_mcorr1d(path, with_bias):
    torch.manual_seed(1)
    for s, d, p, r in GRID:
        # T=12 keeps T_out >= 1 for s=d=3, p=0, r=0: floor(12/4) - 3 + 1 = 1
        signal = torch.randn(2, 2, 12, dtype=F64, requires_grad=True)
        weight = torch.randn(2, 2, 2, dtype=F64, requires_grad=True)
        bias = torch.randn(2, dtype=F64, requires_grad=True) if with_bias else None
        inputs = (signal, weight, bias) if with_bias else (signal, weight)

        def op(*tensors, s=s, d=d, p=p, r=r):
            return mcorr1d(*tensors, s=s, d=d, p=p, r=r, path=path)

        assert torch.autograd.gradcheck(op, inputs, fast_mode=(s, d, p, r) not in FULL_CHECKS), (
            s,
            d,
            p,
            r,
        )


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
def test_gradcheck_mcorrlcorr(path, with_bias):
    torch.manual_seed(2)
    for s0, d0, p0, r0 in GRID:
        s = (s0, second_axis(s0, (1, 2, 3)))
        d = (d0, second_axis(d0, (1, 2, 3)))
        p = (p0, second_axis(p0, (0, 1, 3)))
        r = (r0, second_axis(r0, (0, 2)))
        spectrum = torch.randn(1, 2, 12, 6, dtype=F64, requires_grad=True)
        weight = torch.randn(2, 2, 2, 2, dtype=F64, requires_grad=True)
        bias = torch.randn(2, dtype=F64, requires_grad=True) if with_bias else None
        inputs = (spectrum, weight, bias) if with_bias else (spectrum, weight)

        def op(*tensors, s=s, d=d, p=p, r=r):
            return mcorrlcorr(*tensors, s=s, d=d, p=p, r=r, path=path)

        assert torch.autograd.gradcheck(op, inputs, fast_mode=(s, d, p, r) not in FULL_CHECKS), (
            s,
            d,
            p,
            r,
        )


def test_gradcheck_snd2col_and_spec2col():
    torch.manual_seed(3)
    for s, d, p, r in GRID:
        fast = (s, d, p, r) not in FULL_CHECKS
        signal = torch.randn(1, 2, 12, dtype=F64, requires_grad=True)
        assert torch.autograd.gradcheck(
            lambda g, s=s, d=d, p=p, r=r: snd2col(g, 2, s, d, p, r), (signal,), fast_mode=fast
        )
        spectrum = torch.randn(1, 1, 12, 5, dtype=F64, requires_grad=True)
        pairs = (s, second_axis(s, (1, 2, 3))), (d, 1), (p, second_axis(p, (0, 1, 3))), (r, 2 - r)
        assert torch.autograd.gradcheck(
            lambda g, pairs=pairs: spec2col(g, (2, 2), *pairs), (spectrum,), fast_mode=fast
        )


# --- the definition, summed term by term ----------------------------------------------------


def mcorr1d_by_definition(signal, weight, bias, s, d, p, r):
    """h[n,o,t] = b[o] + sum_{i,k} f[o,i,k] g[n,i,(t+s)(k+d)/(p+1) - 1], one term at a time."""
    size, kernel = signal.shape[2], weight.shape[2]
    output = torch.zeros(
        signal.shape[0], weight.shape[0], mcorr_valid_size(kernel, size, s, d, p) + r, dtype=F64
    )
    for t in range(output.shape[2]):
        for k in range(kernel):
            product = (t + s) * (k + d)
            if product % (p + 1) == 0 and product // (p + 1) - 1 < size:
                output[:, :, t] += signal[:, :, product // (p + 1) - 1] @ weight[:, :, k].T
    return output + bias[None, :, None]


def mcorrlcorr_by_definition(spectrum, weight, bias, s, d, p, r):
    """h[n,o,x,y] = b[o] + sum f[o,i,a,c] g[n,i,(x+s0)(a+d0)/(p0+1) - 1, s1 y + d1 c - p1]."""
    (size_x, size_y), (kernel_x, kernel_y) = spectrum.shape[2:], weight.shape[2:]
    out_x = mcorr_valid_size(kernel_x, size_x, s[0], d[0], p[0]) + r[0]
    out_y = lcorr_valid_size(kernel_y, size_y, s[1], d[1], p[1]) + r[1]
    output = torch.zeros(spectrum.shape[0], weight.shape[0], out_x, out_y, dtype=F64)
    for x, y, a, c in itertools.product(
        range(out_x), range(out_y), range(kernel_x), range(kernel_y)
    ):
        product = (x + s[0]) * (a + d[0])
        row, column = product // (p[0] + 1) - 1, s[1] * y + d[1] * c - p[1]
        if product % (p[0] + 1) == 0 and row < size_x and 0 <= column < size_y:
            output[:, :, x, y] += spectrum[:, :, row, column] @ weight[:, :, a, c].T
    return output + bias[None, :, None, None]


def test_ops_equal_the_definition_over_the_grid(path):
    torch.manual_seed(13)
    for s, d, p, r in GRID:
        signal, weight, bias = (
            torch.randn(2, 3, 12, dtype=F64),
            torch.randn(2, 3, 2, dtype=F64),
            torch.randn(2, dtype=F64),
        )
        expected = mcorr1d_by_definition(signal, weight, bias, s, d, p, r)
        torch.testing.assert_close(mcorr1d(signal, weight, bias, s, d, p, r, path=path), expected)
    for s, d, p, r in GRID[::3]:
        pairs = (
            (s, second_axis(s, (1, 2, 3))),
            (d, second_axis(d, (1, 2, 3))),
            (p, second_axis(p, (0, 1, 3))),
            (r, 2 - r),
        )
        spectrum, weight = torch.randn(2, 2, 12, 6, dtype=F64), torch.randn(2, 2, 2, 3, dtype=F64)
        expected = mcorrlcorr_by_definition(spectrum, weight, bias, *pairs)
        torch.testing.assert_close(mcorrlcorr(spectrum, weight, bias, *pairs, path=path), expected)


# --- paths agree; batches ----------------------------------------------------------------


def test_paths_agree_on_random_inputs(mellin_extension_built):
    if not mellin_extension_built:
        pytest.skip("no C++ compiler here, so the Mellin extension cannot be built")
    torch.manual_seed(4)
    for dtype, tolerance in ((torch.float32, 1e-4), (F64, 1e-10)):
        for s, d, p, r in GRID[::5]:
            signal = torch.randn(3, 4, 30, dtype=dtype)
            weight, bias = torch.randn(5, 4, 3, dtype=dtype), torch.randn(5, dtype=dtype)
            outputs = [mcorr1d(signal, weight, bias, s, d, p, r, path=name) for name in PATHS]
            torch.testing.assert_close(outputs[0], outputs[1], atol=tolerance, rtol=tolerance)
            spectrum, weight2 = (
                torch.randn(3, 4, 11, 9, dtype=dtype),
                torch.randn(5, 4, 3, 2, dtype=dtype),
            )
            pairs = (s, 1), (d, 2), (p, 1), (r, 1)
            outputs = [mcorrlcorr(spectrum, weight2, bias, *pairs, path=name) for name in PATHS]
            torch.testing.assert_close(outputs[0], outputs[1], atol=tolerance, rtol=tolerance)


def test_batch_equals_examples_one_by_one(path):
    torch.manual_seed(5)
    signal, weight, bias = (
        torch.randn(4, 3, 25, dtype=F64),
        torch.randn(2, 3, 4, dtype=F64),
        torch.randn(2, dtype=F64),
    )
    whole = mcorr1d(signal, weight, bias, s=2, d=1, p=1, r=2, path=path)
    for n in range(4):
        one = mcorr1d(signal[n : n + 1], weight, bias, s=2, d=1, p=1, r=2, path=path)
        torch.testing.assert_close(whole[n : n + 1], one)
    spectrum, weight2 = torch.randn(4, 3, 10, 8, dtype=F64), torch.randn(2, 3, 3, 3, dtype=F64)
    whole = mcorrlcorr(spectrum, weight2, bias, p=(1, 1), r=(1, 1), path=path)
    for n in range(4):
        one = mcorrlcorr(spectrum[n : n + 1], weight2, bias, p=(1, 1), r=(1, 1), path=path)
        torch.testing.assert_close(whole[n : n + 1], one)


def test_padding_p1_interleaves_the_plain_op():
    # With p=1, output t reads g[(t+1)(k+1)/2 - 1]; for odd t = 2u+1 that is g[(u+1)(k+1) - 1],
    # exactly what the p=0 op reads at output u. So the odd outputs of the p=1 op are the p=0 op.
    torch.manual_seed(6)
    signal, weight = torch.randn(1, 2, 20, dtype=F64), torch.randn(3, 2, 3, dtype=F64)
    padded = mcorr1d(signal, weight, p=1, path="torch")
    plain = mcorr1d(signal, weight, p=0, path="torch")
    torch.testing.assert_close(padded[..., 1::2][..., : plain.shape[-1]], plain)


# --- modules -----------------------------------------------------------------------------


def test_mcorr1d_module_shapes_init_and_repr():
    torch.manual_seed(7)
    layer = MCorr1d(16, 32, 5, p=2, r=2)
    assert layer.weight.shape == (32, 16, 5) and layer.bias.shape == (32,)
    bound = 1 / math.sqrt(16 * 5)
    assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound
    # uniform on +-bound spreads out: the largest magnitude is close to the bound
    assert layer.weight.abs().max() > 0.9 * bound
    output = layer(torch.randn(2, 16, 40))
    assert output.shape == (2, 32, mcorr_valid_size(5, 40, 1, 1, 2) + 2)
    assert repr(layer) == "MCorr1d(16, 32, kernel_size=5, p=2, r=2)"
    assert MCorr1d(3, 4, 2, bias=False).bias is None


def test_mcorrlcorr_module_shapes_init_and_repr():
    torch.manual_seed(8)
    layer = MCorrLCorr(16, 16, (3, 9), p=(1, 4), r=(1, 4))
    assert layer.weight.shape == (16, 16, 3, 9)
    bound = 1 / math.sqrt(16 * 3 * 9)
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
    output = layer(torch.randn(2, 16, 8, 81))
    assert output.shape == (2, 16, 6, 81)
    assert repr(layer) == "MCorrLCorr(16, 16, kernel_size=(3, 9), p=(1, 4), r=(1, 4))"
    output.sum().backward()
    assert layer.weight.grad is not None and layer.bias.grad is not None


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: mcorr1d(torch.randn(2, 3), torch.randn(4, 3, 2)), "input must be (N, C_in, T)"),
        (
            lambda: mcorr1d(torch.randn(1, 3, 9), torch.randn(4, 3)),
            "weight must be (C_out, C_in, K)",
        ),
        (lambda: mcorr1d(torch.randn(1, 3, 9), torch.randn(4, 2, 2)), "input channels"),
        (
            lambda: mcorr1d(torch.randn(1, 3, 9), torch.randn(4, 3, 2), torch.randn(3)),
            "bias must have shape (4,)",
        ),
        (lambda: mcorr1d(torch.randn(1, 3, 9), torch.randn(4, 3, 2), s=0), "s must be >= 1"),
        (lambda: mcorr1d(torch.randn(1, 3, 9), torch.randn(4, 3, 2), d=-1), "d must be >= 1"),
        (lambda: mcorr1d(torch.randn(1, 3, 9), torch.randn(4, 3, 2), p=-1), "p must be >= 0"),
        (lambda: mcorr1d(torch.randn(1, 3, 9), torch.randn(4, 3, 2), r=-2), "r must be >= 0"),
        (lambda: mcorr1d(torch.randn(1, 3, 2), torch.randn(4, 3, 5), s=3), "output would be empty"),
        (
            lambda: mcorr1d(torch.randn(1, 3, 9), torch.randn(4, 3, 2).double()),
            "weight is torch.float64",
        ),
        (
            lambda: mcorrlcorr(torch.randn(1, 3, 9), torch.randn(4, 3, 2, 2)),
            "input must be (N, C_in, X, Y)",
        ),
        (
            lambda: mcorr1d(
                torch.ones(1, 3, 9, dtype=torch.int64), torch.ones(4, 3, 2, dtype=torch.int64)
            ),
            "input must be a floating-point tensor, got torch.int64",
        ),
        (
            lambda: mcorrlcorr(torch.randn(1, 3, 9, 9), torch.randn(4, 3, 2, 2), p=(1, 2, 3)),
            "p must be an int or a pair",
        ),
        (
            lambda: mcorrlcorr(torch.randn(1, 3, 9, 2), torch.randn(4, 3, 2, 5)),
            "output would be empty",
        ),
        (
            lambda: mcorrlcorr(torch.randn(1, 3, 9, 9), torch.randn(4, 3, 0, 2)),
            "weight sizes must be positive",
        ),
        (lambda: snd2col(torch.randn(1, 3, 9), 0), "kernel sizes must be positive"),
        (lambda: spec2col(torch.randn(1, 3, 9, 9), (2, 0)), "kernel sizes must be positive"),
        (
            lambda: mcorr1d(torch.randn(1, 3, 9), torch.randn(4, 3, 2), path="fast"),
            "one of auto, torch, extension",
        ),
        (lambda: MCorr1d(0, 3, 2), "in_channels must be a positive int"),
        (lambda: MCorrLCorr(3, 3, (2, 0)), "kernel_size must be positive"),
    ],
)
def test_errors_name_the_argument(call, words):
    with pytest.raises(MellinArgumentError) as caught:
        call()
    assert words in str(caught.value)


def test_mixed_devices_are_refused():
    weight = torch.randn(4, 3, 2, device="meta")
    with pytest.raises(MellinArgumentError, match="weight is on meta but input is on cpu"):
        mcorr1d(torch.randn(1, 3, 9), weight)


def test_environment_variable_chooses_the_path(monkeypatch):
    monkeypatch.setenv("SPEECHBED_MELLIN_PATH", "nonsense")
    with pytest.raises(MellinArgumentError, match="SPEECHBED_MELLIN_PATH must be one of"):
        mcorr1d(torch.randn(1, 3, 9), torch.randn(4, 3, 2))
    monkeypatch.setenv("SPEECHBED_MELLIN_PATH", "torch")
    assert mcorr1d(torch.randn(1, 3, 9), torch.randn(4, 3, 2)).shape == (1, 4, 4)


def test_second_derivatives_on_the_torch_path_and_a_clear_refusal_on_the_extension(
    mellin_extension_built,
):
    torch.manual_seed(12)
    spectrum = torch.randn(1, 2, 9, 5, dtype=F64, requires_grad=True)
    weight = torch.randn(2, 2, 2, 2, dtype=F64, requires_grad=True)

    def op(g, f):
        return mcorrlcorr(g, f, s=(2, 1), p=(1, 1), r=(1, 0), path="torch")

    assert torch.autograd.gradgradcheck(op, (spectrum, weight))
    if not mellin_extension_built:
        pytest.skip("no C++ compiler here, so the Mellin extension cannot be built")
    output = mcorrlcorr(spectrum, weight, p=(1, 1), path="extension")
    with pytest.raises(RuntimeError, match="no second derivatives"):
        torch.autograd.grad(output.sum(), spectrum, create_graph=True)
