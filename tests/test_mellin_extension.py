"""Tests of the compiled Mellin extension's loader (prebuilt, rebuild, fallback) and of its GPU paths.

The CPU kernels' values and gradients are checked in test_mellin.py; GPU tests need CUDA.
"""

from __future__ import annotations

import os
import shutil
import warnings

import pytest
import torch

from speechbed.mellin import dispatch, extension, mcorr1d, mcorrlcorr, spec2col
from speechbed.mellin.extension import MellinExtensionUnavailable
from speechbed.mellin.torch_path import gather_mellin_rows, pad_linear_axis

F64 = torch.float64
needs_compiler = pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "c++")) is None,
    reason="no C++ compiler to build the extension",
)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def fresh_loader(monkeypatch):
    """The loader as in a new process (nothing loaded yet), restored afterwards."""
    monkeypatch.setattr(extension, "_state", {})
    monkeypatch.setattr(dispatch, "_agreement", {})


@needs_compiler
def test_prebuilt_library_loads_without_a_compiler(fresh_loader, monkeypatch):
    extension.build()
    assert extension.is_prebuilt()
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    monkeypatch.setattr(extension, "_state", {})
    assert extension.load(strict=True)
    signal, weight = torch.randn(1, 2, 9, dtype=F64), torch.randn(3, 2, 2, dtype=F64)
    torch.testing.assert_close(
        mcorr1d(signal, weight, path="extension"), mcorr1d(signal, weight, path="torch")
    )


@needs_compiler
def test_changed_sources_are_not_taken_for_prebuilt(tmp_path, monkeypatch):
    extension.build()
    copy = tmp_path / "csrc"
    shutil.copytree(extension.SOURCE_DIRECTORY, copy)
    monkeypatch.setenv("SPEECHBED_MELLIN_BUILD_DIR", str(extension.build_directory()))
    monkeypatch.setattr(extension, "SOURCE_DIRECTORY", copy)
    assert extension.is_prebuilt()
    with open(copy / "mellin_cpu.h", "a") as header:
        header.write("\n// edited\n")
    assert not extension.is_prebuilt()


def test_without_a_compiler_falls_back_with_one_warning(fresh_loader, tmp_path, monkeypatch):
    monkeypatch.setenv("SPEECHBED_MELLIN_BUILD_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler found.*vectorized torch path"):
        assert not extension.load()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not extension.load()  # said once only
        signal, weight = torch.randn(1, 2, 9), torch.randn(3, 2, 2)
        assert mcorr1d(signal, weight, path="auto").shape == (1, 3, 4)
    with pytest.raises(MellinExtensionUnavailable, match="no C\\+\\+ compiler found"):
        mcorr1d(signal, weight, path="extension")


def test_command_line_reports_the_build_state(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SPEECHBED_MELLIN_BUILD_DIR", str(tmp_path))
    monkeypatch.setattr("sys.argv", ["extension"])
    assert extension.main() == 0
    assert "not built" in capsys.readouterr().out


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("path", ["torch", "extension"])
def test_gpu_paths_match_the_cpu(path, dtype):
    torch.manual_seed(9)
    tolerance = 1e-4 if dtype == torch.float32 else 1e-10
    signal, weight, bias = (
        torch.randn(3, 4, 50, dtype=dtype),
        torch.randn(5, 4, 3, dtype=dtype),
        torch.randn(5, dtype=dtype),
    )
    for s, d, p, r in [(1, 1, 0, 0), (2, 1, 1, 2), (1, 3, 3, 0), (3, 2, 1, 2)]:
        expected = mcorr1d(signal, weight, bias, s, d, p, r, path="torch")
        output = mcorr1d(signal.cuda(), weight.cuda(), bias.cuda(), s, d, p, r, path=path)
        torch.testing.assert_close(output.cpu(), expected, atol=tolerance, rtol=tolerance)
        spectrum, weight2 = (
            torch.randn(3, 4, 11, 20, dtype=dtype),
            torch.randn(5, 4, 3, 4, dtype=dtype),
        )
        pairs = (s, 1), (d, 2), (p, 1), (r, 2)
        expected = mcorrlcorr(spectrum, weight2, bias, *pairs, path="torch")
        output = mcorrlcorr(spectrum.cuda(), weight2.cuda(), bias.cuda(), *pairs, path=path)
        torch.testing.assert_close(output.cpu(), expected, atol=tolerance, rtol=tolerance)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("path", ["torch", "extension"])
def test_gpu_gradcheck(path):
    torch.manual_seed(10)
    for s, d, p, r in [(1, 1, 0, 0), (2, 1, 1, 2), (1, 3, 3, 0)]:
        spectrum = torch.randn(2, 2, 12, 6, dtype=F64, device="cuda", requires_grad=True)
        weight = torch.randn(2, 2, 2, 3, dtype=F64, device="cuda", requires_grad=True)
        bias = torch.randn(2, dtype=F64, device="cuda", requires_grad=True)

        def op(*tensors, s=s, d=d, p=p, r=r):
            return mcorrlcorr(*tensors, s=(s, 1), d=(d, 2), p=(p, 1), r=(r, 0), path=path)

        assert torch.autograd.gradcheck(op, (spectrum, weight, bias))


def torch_mellin_rows(spectrum, kernel_size, s, d, p, size):
    """R of csrc/mellin_index.h from the torch path: (N * X_out, Kx * C, padded Y)."""
    n, c = spectrum.shape[:2]
    gathered = gather_mellin_rows(spectrum, kernel_size[0], size[0], s[0], d[0], p[0])
    gathered = pad_linear_axis(gathered, kernel_size[1], size[1], s[1], d[1], p[1])
    gathered = gathered.view(n, c, size[0], kernel_size[0], -1)
    return gathered.permute(0, 2, 3, 1, 4).reshape(n * size[0], kernel_size[0] * c, -1)


@needs_compiler
@pytest.mark.parametrize("elementwise", [False, True], ids=["row_kernels", "cuda_bodies_on_cpu"])
def test_extension_mellin_rows_and_adjoint_match_the_torch_gather(elementwise):
    # R must equal the torch path's gather; its adjoint must satisfy <R(g), h> == <g, adjoint(h)>.
    extension.load(strict=True)
    torch.manual_seed(11)
    cases = [
        ((1, 1), (1, 1), (0, 0), (0, 0)),
        ((2, 3), (3, 2), (1, 3), (2, 1)),
        ((3, 2), (1, 3), (3, 9), (2, 2)),
    ]
    for s, d, p, r in cases:
        spectrum = torch.randn(2, 3, 13, 7, dtype=F64)
        size = tuple(spec2col(spectrum, (2, 3), s, d, p, r).shape[-2:])
        arguments = ([2, 3], list(s), list(d), list(p), list(size), elementwise)
        rows = torch.ops.speechbed_mellin.mellin_rows(spectrum, *arguments)
        torch.testing.assert_close(rows, torch_mellin_rows(spectrum, (2, 3), s, d, p, size))
        probe = torch.randn_like(rows)
        adjoint = torch.ops.speechbed_mellin.mellin_rows_adjoint(
            probe, list(spectrum.shape), *arguments
        )
        torch.testing.assert_close((rows * probe).sum(), (spectrum * adjoint).sum())


@needs_compiler
def test_self_check_agrees_on_cpu_and_a_disagreeing_device_falls_back(fresh_loader, monkeypatch):
    assert dispatch.agrees_with_torch_path(torch.device("cpu"))
    assert not dispatch.preferred_on(torch.device("cpu"))  # auto keeps the torch path on CPU
    # a CUDA build whose results differ from the torch path is refused, with a warning, once
    monkeypatch.setattr(extension, "with_cuda", lambda: True)
    monkeypatch.setattr(dispatch, "agrees_with_torch_path", lambda device: False)
    with pytest.warns(RuntimeWarning, match="differ from the torch path"):
        assert not dispatch.preferred_on(torch.device("cuda"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not dispatch.preferred_on(torch.device("cuda"))
