"""CTC decoding (greedy, prefix beam search) and phone error rates on the 39-phone set.

Called by training for the dev PER and by ``scripts/evaluate.py``.
"""

from speechbed.decoding.ctc_search import (
    beam_decode,
    greedy_decode,
    labelling_log_probability,
    prefix_beam_search,
)
from speechbed.decoding.error_rate import ErrorCounts, edit_counts, total_error_counts
from speechbed.decoding.transcribe import ids_to_phones_39, phone_error_counts, transcribe

__all__ = [
    "ErrorCounts",
    "beam_decode",
    "edit_counts",
    "greedy_decode",
    "ids_to_phones_39",
    "labelling_log_probability",
    "phone_error_counts",
    "prefix_beam_search",
    "total_error_counts",
    "transcribe",
]
