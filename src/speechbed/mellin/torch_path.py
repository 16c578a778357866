"""The vectorized torch path of the Mellin ops: gather along the Mellin axis, then one strided conv.

Called by speechbed.mellin.dispatch after functional has checked the arguments; works on any
device and dtype, and autograd gives every gradient (index_select, pad and conv backward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from speechbed.mellin.index_maps import mellin_source_rows

# Layout trick: gathering, for every output position t and tap k, the input row at
# (t+s)(k+d)/(p+1)-1 (or a zero row) gives rows ordered t-major; a correlation with
# kernel K and stride K over those rows is then exactly the Mellin correlation (one
# conv2d for mcorrlcorr; one GEMM over channels-last rows for mcorr1d).


def gather_mellin_rows(
    input: torch.Tensor, kernel_size: int, output_size: int, s: int, d: int, p: int
) -> torch.Tensor:
    """Rows of ``input`` along dim 2 picked by the Mellin index map: (N, C, output_size * K, ...)."""
    input_size = input.shape[2]
    rows = mellin_source_rows(input_size, output_size, kernel_size, s, d, p, input.device)
    zero_row = (0, 0) * (input.dim() - 3) + (0, 1)
    return F.pad(input, zero_row).index_select(2, rows)


def pad_linear_axis(
    input: torch.Tensor, kernel_size: int, output_size: int, s: int, d: int, p: int
) -> torch.Tensor:
    """Pads (or trims) the last axis so that taps s*y + d*c - p of ``output_size`` outputs fit exactly."""
    needed = s * (output_size - 1) + d * (kernel_size - 1) + 1
    right = needed - p - input.shape[-1]
    padded = F.pad(input, (p, max(right, 0)))
    return padded[..., :needed] if right < 0 else padded


def mcorr1d(input, weight, bias, s: int, d: int, p: int, output_size: int) -> torch.Tensor:
    # Channels-last gather: rows (N, T_out*K, C) flatten to (N*T_out, K*C), so the whole op is
    # one GEMM; about twice as fast as conv1d with stride K on CPU.
    batch, channels, input_size = input.shape
    out_channels, _, kernel_size = weight.shape
    rows = mellin_source_rows(input_size, output_size, kernel_size, s, d, p, input.device)
    gathered = F.pad(input, (0, 1)).transpose(1, 2).index_select(1, rows)
    gathered = gathered.reshape(batch * output_size, kernel_size * channels)
    taps = weight.permute(2, 1, 0).reshape(kernel_size * channels, out_channels)
    output = gathered @ taps if bias is None else torch.addmm(bias, gathered, taps)
    return output.view(batch, output_size, out_channels).transpose(1, 2).contiguous()


def mcorrlcorr(input, weight, bias, s, d, p, output_size) -> torch.Tensor:
    kernel_x, kernel_y = weight.shape[2], weight.shape[3]
    gathered = gather_mellin_rows(input, kernel_x, output_size[0], s[0], d[0], p[0])
    gathered = pad_linear_axis(gathered, kernel_y, output_size[1], s[1], d[1], p[1])
    return F.conv2d(gathered, weight, bias, stride=(kernel_x, s[1]), dilation=(1, d[1]))


def snd2col(input, kernel_size: int, s: int, d: int, p: int, output_size: int) -> torch.Tensor:
    n, c = input.shape[:2]
    gathered = gather_mellin_rows(input, kernel_size, output_size, s, d, p)
    return gathered.view(n, c, output_size, kernel_size).transpose(2, 3)


def spec2col(input, kernel_size, s, d, p, output_size) -> torch.Tensor:
    n, c = input.shape[:2]
    (kernel_x, kernel_y), (out_x, out_y) = kernel_size, output_size
    gathered = gather_mellin_rows(input, kernel_x, out_x, s[0], d[0], p[0])
    gathered = pad_linear_axis(gathered, kernel_y, out_y, s[1], d[1], p[1])
    span = d[1] * (kernel_y - 1) + 1
    # (N, C, out_x*Kx, out_y, span) -> every d-th tap -> (N, C, out_x, Kx, out_y, Ky)
    windows = gathered.unfold(3, span, s[1])[..., :: d[1]]
    windows = windows.reshape(n, c, out_x, kernel_x, out_y, kernel_y)
    return windows.permute(0, 1, 3, 5, 2, 4)
