"""TIMIT-style phone recognition: CTC over the store's token list, scored as 39-phone PER.

The task ``ctc_phones`` (the default of a run config); see ``CtcPhonesTask`` and its run
config ``CtcPhonesRunConfig``. Names are imported on first use, so reading the run config
(``speechbed.tasks.ctc_phones.config``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BLANK_INDEX": "scoring",
    "NUM_CLASSES": "scoring",
    "ids_to_phones_39": "scoring",
    "phone_error_counts": "scoring",
    "trn_lines": "scoring",
    "CtcPhonesTask": "task",
    "acoustic_settings": "task",
    "AcousticModelConfig": "config",
    "CtcEvaluationConfig": "config",
    "CtcPhonesRunConfig": "config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
