"""Output-length formulas for Mellin and linear correlations and convolutions along one axis.

Used by speechbed.mellin.functional to size outputs, and by models to plan layer shapes.
"""

from __future__ import annotations

# Every helper takes (kernel_size, input_size, s, d, p, u): stride/shift s, dilation d,
# padding p and input dilation u; floor division; the result is clamped at 0.


def mcorr_valid_size(
    kernel_size: int, input_size: int, s: int = 1, d: int = 1, p: int = 0, u: int = 1
) -> int:
    """Outputs of a Mellin correlation whose every tap lands inside the input."""
    return max(0, (input_size + u - 1) * (p + 1) // (kernel_size + d - 1) - s + 1)


def mcorr_support_size(
    kernel_size: int, input_size: int, s: int = 1, d: int = 1, p: int = 0, u: int = 1
) -> int:
    """Outputs of a Mellin correlation with at least one tap inside the input."""
    return max(0, (input_size + u - 1) * (p + 1) // d - s + 1)


def mconv_valid_size(
    kernel_size: int, input_size: int, s: int = 1, d: int = 1, p: int = 0, u: int = 1
) -> int:
    """Outputs of a Mellin convolution whose every tap lands inside the input."""
    return max(0, d * (input_size + u - 1) // (p + 1) - s + 1)


def mconv_support_size(
    kernel_size: int, input_size: int, s: int = 1, d: int = 1, p: int = 0, u: int = 1
) -> int:
    """Outputs of a Mellin convolution with at least one tap inside the input."""
    return max(0, (kernel_size + d - 1) * (input_size + u - 1) // (p + 1) - s + 1)


def lcorr_valid_size(
    kernel_size: int, input_size: int, s: int = 1, d: int = 1, p: int = 0, u: int = 1
) -> int:
    """Outputs of a linear correlation (left padding p) whose every tap lands inside the input."""
    return max(0, (u * (input_size - 1) - d * (kernel_size - 1) + p) // s + 1)


def lcorr_support_size(
    kernel_size: int, input_size: int, s: int = 1, d: int = 1, p: int = 0, u: int = 1
) -> int:
    """Outputs of a linear correlation with at least one tap inside the input."""
    return max(0, (u * (input_size - 1) + p) // s + 1)


def lconv_valid_size(
    kernel_size: int, input_size: int, s: int = 1, d: int = 1, p: int = 0, u: int = 1
) -> int:
    """Outputs of a linear convolution whose every tap lands inside the input."""
    return max(0, (u * (input_size - 1) - p) // s + 1)


def lconv_support_size(
    kernel_size: int, input_size: int, s: int = 1, d: int = 1, p: int = 0, u: int = 1
) -> int:
    """Outputs of a linear convolution with at least one tap inside the input."""
    return max(0, (u * (input_size - 1) + d * (kernel_size - 1) - p) // s + 1)
