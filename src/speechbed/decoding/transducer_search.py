"""Greedy decoding of an RNN transducer, batched, with a cap on the tokens emitted per frame.

Called by the rnnt task (speechbed.tasks.rnnt) for its dev metric and evaluation. Knows no
model class: it drives anything with the three methods of ``TransducerDecoder``.
"""

from __future__ import annotations

from typing import Protocol

import torch

#: The prediction network's recurrent state: tensors whose dimension 1 is the batch (as
#: ``torch.nn.LSTM``'s ``(h, c)``), or None before the first token.
PredictionState = tuple[torch.Tensor, ...] | None


class TransducerDecoder(Protocol):
    """What greedy search needs of a transducer (speechbed.models.rnnt.RnntModel has it)."""

    def predict(
        self, tokens: torch.Tensor | None, state: PredictionState, batch_size: int
    ) -> tuple[torch.Tensor, PredictionState]:
        """(batch, P) prediction output after ``tokens`` (batch,) long, or None for the start."""

    def join(self, encoded: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        """Joint logits (..., classes) of encoder and prediction vectors that broadcast."""


def _keep_where(
    changed: torch.Tensor, new: PredictionState, old: PredictionState
) -> PredictionState:
    """``new`` state for the rows where ``changed``, ``old`` elsewhere (batch in dimension 1)."""
    if old is None:
        return new
    return tuple(
        torch.where(changed.view(1, -1, *[1] * (part.dim() - 2)), part, previous)
        for part, previous in zip(new, old, strict=True)
    )


def transducer_greedy_search(
    decoder: TransducerDecoder,
    encoded: torch.Tensor,
    lengths: torch.Tensor,
    blank: int,
    max_symbols_per_step: int | None = 30,
    max_symbols_per_sample: int | None = None,
) -> list[list[int]]:
    """The greedy transcript (token ids) of each utterance of a (B, T, H) encoder output.

    At each frame, the most probable class is taken: a token is emitted and the prediction
    network advances on it, staying on the frame; blank moves to the next frame. After
    ``max_symbols_per_step`` tokens on one frame (None: no limit) the search moves on, as if
    blank had won. Frames at or past an utterance's length are not read. An utterance that
    has emitted ``max_symbols_per_sample`` tokens (None: no limit) emits no more.
    """
    if max_symbols_per_step is not None and max_symbols_per_step < 1:
        raise ValueError(f"max_symbols_per_step must be at least 1, got {max_symbols_per_step}")
    if max_symbols_per_sample is not None and max_symbols_per_sample < 1:
        raise ValueError(f"max_symbols_per_sample must be at least 1, got {max_symbols_per_sample}")
    batch, max_time = encoded.shape[0], encoded.shape[1]
    lengths = lengths.to(encoded.device)
    hypotheses: list[list[int]] = [[] for _ in range(batch)]
    totals = torch.zeros(batch, dtype=torch.long, device=encoded.device)  # tokens per utterance
    predicted, state = decoder.predict(None, None, batch)
    for time in range(max_time):
        frame = encoded[:, time]
        emitted = torch.zeros(batch, dtype=torch.long, device=encoded.device)
        open_rows = lengths > time
        if max_symbols_per_sample is not None:
            open_rows = open_rows & (totals < max_symbols_per_sample)
        while bool(open_rows.any()):
            best = decoder.join(frame, predicted).argmax(dim=-1)
            emits = open_rows & (best != blank)
            if not bool(emits.any()):
                break
            for row in emits.nonzero().flatten().tolist():
                hypotheses[row].append(int(best[row]))
            advanced, new_state = decoder.predict(best.masked_fill(~emits, 0), state, batch)
            predicted = torch.where(emits[:, None], advanced, predicted)
            state = _keep_where(emits, new_state, state)
            emitted += emits.long()
            totals += emits.long()
            open_rows = emits
            if max_symbols_per_step is not None:
                open_rows = open_rows & (emitted < max_symbols_per_step)
            if max_symbols_per_sample is not None:
                open_rows = open_rows & (totals < max_symbols_per_sample)
    return hypotheses
