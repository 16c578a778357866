"""The GPU inventory a pipeline may lease: --gpus, SPEECHBED_GPUS, CUDA_VISIBLE_DEVICES, nvidia-smi.

Called once by the pipeline command line before planning.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping

from speechbed.errors import UserInputError


def parse_gpu_list(text: str, source: str) -> list[int]:
    """``"0,1, 3"`` -> ``[0, 1, 3]``; empty text is no GPUs. Ids are any distinct integers."""
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            if text.strip():
                raise UserInputError(f"{source}: {text!r} has an empty GPU id; write e.g. 0,1,2")
            continue
        try:
            device = int(part)
        except ValueError:
            raise UserInputError(
                f"{source}: GPU id {part!r} in {text!r} is not an integer; write e.g. 0,1,2"
            ) from None
        if device < 0:
            raise UserInputError(f"{source}: GPU id {device} is negative")
        if device in ids:
            raise UserInputError(f"{source}: GPU id {device} is listed twice in {text!r}")
        ids.append(device)
    return ids


def _nvidia_smi_ids() -> list[int]:
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return []
    try:
        listing = subprocess.run(
            [executable, "-L"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if listing.returncode != 0:
        return []
    return [
        index for index, line in enumerate(listing.stdout.splitlines()) if line.startswith("GPU ")
    ]


def discover_gpus(requested: str | None, environ: Mapping[str, str]) -> tuple[list[int], str]:
    """The GPU ids and where they came from; the first source that is set wins."""
    if requested is not None:
        return parse_gpu_list(requested, "--gpus"), "--gpus"
    for variable in ("SPEECHBED_GPUS", "CUDA_VISIBLE_DEVICES"):
        value = environ.get(variable, "")
        if value.strip():
            return parse_gpu_list(value, variable), variable
    ids = _nvidia_smi_ids()
    return ids, ("nvidia-smi -L" if ids else "none found")
