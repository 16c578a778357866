"""Phone error rate of the ctc_phones task: token ids -> phone names -> 39 phones -> edit counts.

Used by the task for its dev metric and evaluation (and the trn files it writes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from speechbed.corpora.phones import PHONES_48, fold_48_to_39
from speechbed.decoding.error_rate import ErrorCounts, total_error_counts

#: Output classes with TIMIT's 48-phone token list: the phones, then the CTC blank.
NUM_CLASSES = len(PHONES_48) + 1
BLANK_INDEX = len(PHONES_48)


def ids_to_phones_39(ids: Sequence[int], token_list: Sequence[str] = PHONES_48) -> list[str]:
    """Token ids (indices into ``token_list``, 48 phones) folded to 39-phone names."""
    return fold_48_to_39(token_list[index] for index in ids)


def phone_error_counts(
    references: Mapping[str, Sequence[int]],
    hypotheses: Mapping[str, Sequence[int]],
    token_list: Sequence[str] = PHONES_48,
) -> ErrorCounts:
    """PER counts on 39 phones over every reference utterance (a missing hypothesis is empty)."""
    return total_error_counts(
        (
            ids_to_phones_39(reference, token_list),
            ids_to_phones_39(hypotheses.get(utt_id, []), token_list),
        )
        for utt_id, reference in references.items()
    )


def trn_lines(
    transcripts: Mapping[str, Sequence[int]], token_list: Sequence[str] = PHONES_48
) -> str:
    """``phones (utt_id)`` per utterance, 39-phone set, sorted by id (the sclite trn format)."""
    return "".join(
        f"{' '.join(ids_to_phones_39(transcripts[utt_id], token_list))} ({utt_id})\n"
        for utt_id in sorted(transcripts)
    )
