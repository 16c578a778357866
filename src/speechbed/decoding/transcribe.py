"""Running an acoustic model over batches and scoring its hypotheses as 39-phone PER.

Called by training (greedy dev PER each epoch) and by ``scripts/evaluate.py`` (greedy or beam).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch

from speechbed.corpora.phones import PHONES_48, fold_48_to_39
from speechbed.decoding.ctc_search import beam_decode, greedy_decode
from speechbed.decoding.error_rate import ErrorCounts, total_error_counts

BLANK_INDEX = len(PHONES_48)


def transcribe(
    model: torch.nn.Module,
    batches: Iterable[tuple],
    beam_width: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Hypotheses and references (48-phone ids) per utterance id, in eval mode without gradients.

    ``batches`` yields (features, lengths, targets, target_lengths, utt_ids) with the targets
    concatenated; ``beam_width`` 0 decodes greedily, else by prefix beam search.
    """
    hypotheses: dict[str, list[int]] = {}
    references: dict[str, list[int]] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for features, lengths, targets, target_lengths, utt_ids in batches:
                logits, counts = model(features.to(device), lengths.to(device))
                log_probs = torch.log_softmax(logits.float(), dim=-1)
                if beam_width == 0:
                    decoded = greedy_decode(log_probs, counts, BLANK_INDEX)
                else:
                    decoded = beam_decode(log_probs, counts, beam_width, BLANK_INDEX)
                pieces = torch.split(targets.cpu(), target_lengths.cpu().tolist())
                for utt_id, hypothesis, reference in zip(utt_ids, decoded, pieces, strict=True):
                    hypotheses[utt_id] = hypothesis
                    references[utt_id] = reference.tolist()
    finally:
        model.train(was_training)
    return hypotheses, references


def ids_to_phones_39(ids: Sequence[int]) -> list[str]:
    """48-phone token ids folded to 39-phone names (the scoring set)."""
    return fold_48_to_39(PHONES_48[index] for index in ids)


def phone_error_counts(
    references: Mapping[str, Sequence[int]], hypotheses: Mapping[str, Sequence[int]]
) -> ErrorCounts:
    """PER counts on 39 phones over every reference utterance (a missing hypothesis is empty)."""
    return total_error_counts(
        (ids_to_phones_39(reference), ids_to_phones_39(hypotheses.get(utt_id, [])))
        for utt_id, reference in references.items()
    )
