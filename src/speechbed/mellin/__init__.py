"""Mellin correlations: functional ops, size helpers and layers, with a compiled extension when built.

Imported by the acoustic models (speechbed.models) and the Mellin tests and benchmark.
"""

from speechbed.mellin.errors import MellinArgumentError
from speechbed.mellin.functional import mcorr1d, mcorrlcorr, snd2col, spec2col
from speechbed.mellin.modules import MCorr1d, MCorrLCorr
from speechbed.mellin.sizes import (
    lconv_support_size,
    lconv_valid_size,
    lcorr_support_size,
    lcorr_valid_size,
    mconv_support_size,
    mconv_valid_size,
    mcorr_support_size,
    mcorr_valid_size,
)

__all__ = [
    "MCorr1d",
    "MCorrLCorr",
    "MellinArgumentError",
    "lconv_support_size",
    "lconv_valid_size",
    "lcorr_support_size",
    "lcorr_valid_size",
    "mconv_support_size",
    "mconv_valid_size",
    "mcorr1d",
    "mcorr_support_size",
    "mcorr_valid_size",
    "mcorrlcorr",
    "snd2col",
    "spec2col",
]
