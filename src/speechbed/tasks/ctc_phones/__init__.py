"""TIMIT-style phone recognition: CTC over the store's token list, scored as 39-phone PER.

The task ``ctc_phones`` (the default of a run config); see ``CtcPhonesTask``.
"""

from speechbed.tasks.ctc_phones.scoring import (
    BLANK_INDEX,
    NUM_CLASSES,
    ids_to_phones_39,
    phone_error_counts,
    trn_lines,
)
from speechbed.tasks.ctc_phones.task import CtcPhonesTask, acoustic_settings

__all__ = [
    "BLANK_INDEX",
    "NUM_CLASSES",
    "CtcPhonesTask",
    "acoustic_settings",
    "ids_to_phones_39",
    "phone_error_counts",
    "trn_lines",
]
