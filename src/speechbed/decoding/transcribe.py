"""Running a CTC model over batches: hypotheses and references per utterance id.

Called by tasks (speechbed.tasks): greedy for the dev metric each epoch, greedy or beam search
at evaluation. Knows no label set: ids in, ids out.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from speechbed.decoding.ctc_search import beam_decode, greedy_decode


def transcribe(
    model: torch.nn.Module,
    batches: Iterable[tuple],
    beam_width: int = 0,
    device: str | torch.device = "cpu",
    blank: int | None = None,
) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Hypotheses and references (token ids) per utterance id, in eval mode without gradients.

    ``batches`` yields (features, lengths, targets, target_lengths, utt_ids) with the targets
    concatenated; ``model(features, lengths)`` gives (N, T, V) logits and output lengths.
    ``beam_width`` 0 decodes greedily, else by prefix beam search; ``blank`` is the CTC blank's
    index (None: the last class, V - 1).
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
                index = log_probs.shape[-1] - 1 if blank is None else blank
                if beam_width == 0:
                    decoded = greedy_decode(log_probs, counts, index)
                else:
                    decoded = beam_decode(log_probs, counts, beam_width, index)
                pieces = torch.split(targets.cpu(), target_lengths.cpu().tolist())
                for utt_id, hypothesis, reference in zip(utt_ids, decoded, pieces, strict=True):
                    hypotheses[utt_id] = hypothesis
                    references[utt_id] = reference.tolist()
    finally:
        model.train(was_training)
    return hypotheses, references
