"""Integer index maps of the Mellin axis, built once per (sizes, parameters, device) and cached.

Used by the vectorized torch path in speechbed.mellin.torch_path.
"""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=256)
def mellin_source_rows(
    input_size: int,
    output_size: int,
    kernel_size: int,
    s: int,
    d: int,
    p: int,
    device: torch.device,
) -> torch.Tensor:
    """Source index of every (output position t, tap k) pair, flattened t-major.

    Entry ``t * kernel_size + k`` is ``(t + s)(k + d)/(p + 1) - 1`` when that is an integer
    inside ``[0, input_size)``; otherwise it is ``input_size``, which callers point at an
    appended row of zeros.
    """
    t = torch.arange(output_size, dtype=torch.int64).unsqueeze(1)
    k = torch.arange(kernel_size, dtype=torch.int64).unsqueeze(0)
    product = (t + s) * (k + d)
    source = torch.div(product, p + 1, rounding_mode="floor") - 1
    # product >= s*d >= 1, so a divisible product gives a source >= 0
    valid = (product % (p + 1) == 0) & (source < input_size)
    source = torch.where(valid, source, torch.full_like(source, input_size))
    return source.reshape(-1).to(device)
