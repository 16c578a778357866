"""CTC decoding (greedy, prefix beam search), running a model over batches, transducer greedy
search, and error rates.

Called by tasks (speechbed.tasks) for their dev metric and evaluation. Imports nothing above
it: no label set, no training code.
"""

from speechbed.decoding.ctc_search import (
    beam_decode,
    greedy_decode,
    labelling_log_probability,
    prefix_beam_search,
)
from speechbed.decoding.error_rate import (
    ErrorCounts,
    edit_counts,
    total_error_counts,
    word_error_counts,
)
from speechbed.decoding.transcribe import transcribe
from speechbed.decoding.transducer_search import TransducerDecoder, transducer_greedy_search

__all__ = [
    "ErrorCounts",
    "TransducerDecoder",
    "beam_decode",
    "edit_counts",
    "greedy_decode",
    "labelling_log_probability",
    "prefix_beam_search",
    "total_error_counts",
    "transcribe",
    "transducer_greedy_search",
    "word_error_counts",
]
