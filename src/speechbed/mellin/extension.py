"""Loads (building on first use) the compiled Mellin extension from csrc/; placeholder until built.

Called by speechbed.mellin.dispatch.
"""

from __future__ import annotations

import torch


def preferred_on(device: torch.device) -> bool:
    return False


def require(device: torch.device) -> None:
    raise RuntimeError("the compiled Mellin extension is not available yet")
