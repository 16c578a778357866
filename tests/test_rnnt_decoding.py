"""Transducer greedy search on hand-made joint outputs, and word error counts against jiwer."""

from __future__ import annotations

import random

import jiwer
import pytest
import torch

from speechbed.decoding import ErrorCounts, transducer_greedy_search, word_error_counts

BLANK = 0


class ScriptedTransducer:
    """A transducer whose joint picks ``script[b][t][u]`` (u: tokens emitted so far), else blank.

    The encoder output of frame t of utterance b is the vector (b, t); the prediction output
    and state hold u, advanced by one per token fed, so a state update on a wrong row shows.
    """

    def __init__(self, script: list[list[list[int]]], num_classes: int = 6) -> None:
        self.script = script
        self.num_classes = num_classes
        self.frames = max(len(utterance) for utterance in script)

    def encoded(self) -> torch.Tensor:
        batch = len(self.script)
        rows = torch.arange(batch).view(-1, 1).expand(batch, self.frames)
        times = torch.arange(self.frames).view(1, -1).expand(batch, self.frames)
        return torch.stack([rows, times], dim=-1).float()

    def predict(self, tokens, state, batch_size):
        if tokens is None:
            count = torch.zeros(1, batch_size, 1)
        else:
            assert tokens.shape == (batch_size,)
            count = state[0] + 1
        return count[0], (count,)

    def join(self, encoded, predicted):
        logits = torch.zeros(*encoded.shape[:-1], self.num_classes)
        for row in range(encoded.shape[0]):
            b, t, u = (int(x) for x in (*encoded[row], predicted[row, 0]))
            choices = self.script[b][t] if t < len(self.script[b]) else []
            logits[row, choices[u] if u < len(choices) else BLANK] = 1.0
        return logits


def per_utterance_greedy(model: ScriptedTransducer, row: int, length: int, cap: int | None):
    """The search written plainly for one utterance: u counts tokens, n those on this frame."""
    hypothesis: list[int] = []
    for t in range(length):
        emitted = 0
        while cap is None or emitted < cap:
            choices = model.script[row][t]
            best = choices[len(hypothesis)] if len(hypothesis) < len(choices) else BLANK
            if best == BLANK:
                break
            hypothesis.append(best)
            emitted += 1
    return hypothesis


def test_greedy_search_follows_a_hand_made_script():
    # utterance 0: frame 0 emits 3 then 1 (u = 0, 1) then blank; frame 1 blank at u = 2;
    # frame 2 emits 5 at u = 2. utterance 1: nothing until frame 1, which emits 2 and 2.
    script = [
        [[3, 1, 0], [0, 0, 0], [0, 0, 5, 0]],
        [[0], [2, 2, 0], [0, 0, 0]],
    ]
    model = ScriptedTransducer(script)
    hypotheses = transducer_greedy_search(model, model.encoded(), torch.tensor([3, 3]), BLANK, 30)
    assert hypotheses == [[3, 1, 5], [2, 2]]


def test_max_symbols_per_step_moves_on_and_the_next_frame_continues():
    # frame 0 would emit 4, 4, 4 (u = 0, 1, 2); with a cap of 2 the third comes at frame 1
    script = [[[4, 4, 4, 0], [4, 4, 4, 0]]]
    model = ScriptedTransducer(script)
    encoded, lengths = model.encoded(), torch.tensor([2])
    assert transducer_greedy_search(model, encoded, lengths, BLANK, 2) == [[4, 4, 4]]
    assert transducer_greedy_search(model, encoded, lengths, BLANK, 1) == [[4, 4]]
    assert transducer_greedy_search(model, encoded, lengths, BLANK, None) == [[4, 4, 4]]
    with pytest.raises(ValueError, match="max_symbols_per_step must be at least 1"):
        transducer_greedy_search(model, encoded, lengths, BLANK, 0)


def test_frames_past_an_utterances_length_are_not_read():
    script = [[[1, 0], [2, 3, 0]], [[0], [4, 0]]]
    model = ScriptedTransducer(script)
    hypotheses = transducer_greedy_search(model, model.encoded(), torch.tensor([2, 1]), BLANK)
    assert hypotheses == [[1, 3], []]


def test_batched_search_equals_one_utterance_at_a_time():
    rng = random.Random(3)
    script = [
        [[rng.choice([0, 0, 1, 2, 3, 4, 5]) for _ in range(12)] for _ in range(rng.randint(1, 9))]
        for _ in range(7)
    ]
    model = ScriptedTransducer(script)
    lengths = [max(1, len(utterance) - rng.randint(0, 2)) for utterance in script]
    for cap in (1, 3, None):
        batched = transducer_greedy_search(
            model, model.encoded(), torch.tensor(lengths), BLANK, cap
        )
        expected = [per_utterance_greedy(model, row, lengths[row], cap) for row in range(7)]
        assert batched == expected


# --------------------------------------------------------------------------- word error rate


@pytest.mark.parametrize(
    ("reference", "hypothesis", "expected"),
    [
        ("the cat sat on the mat", "the cat sat on the mat", ErrorCounts(0, 0, 0, 6)),
        ("the cat sat on the mat", "the bat sat on mat", ErrorCounts(1, 1, 0, 6)),
        ("a quick fox", "a very quick brown fox", ErrorCounts(0, 0, 2, 3)),
        ("one two three", "", ErrorCounts(0, 3, 0, 3)),
        ("  spaced   words\tand tabs ", "spaced words and tabs", ErrorCounts(0, 0, 0, 4)),
    ],
)
def test_word_error_counts_on_unambiguous_pairs_match_jiwer(reference, hypothesis, expected):
    counts = word_error_counts([(reference, hypothesis)])
    assert counts == expected
    if hypothesis:  # jiwer refuses an empty hypothesis, and splits at single spaces only
        output = jiwer.process_words(" ".join(reference.split()), " ".join(hypothesis.split()))
        assert (output.substitutions, output.deletions, output.insertions) == (
            counts.substitutions,
            counts.deletions,
            counts.insertions,
        )


def test_corpus_wer_matches_jiwer_on_random_sentences():
    """Totals and WER equal jiwer's; among equally short alignments the S/D/I split may differ
    (each library breaks ties its own way), but deletions - insertions is fixed by the lengths."""
    rng = random.Random(0)
    vocabulary = "a an the cat dog sat ran on under mat".split()
    pairs = []
    for _ in range(300):
        reference = " ".join(rng.choices(vocabulary, k=rng.randint(1, 12)))
        hypothesis = " ".join(rng.choices(vocabulary, k=rng.randint(1, 12)))
        pairs.append((reference, hypothesis))
        counts, output = word_error_counts([pairs[-1]]), jiwer.process_words(*pairs[-1])
        jiwer_errors = output.substitutions + output.deletions + output.insertions
        assert counts.errors == jiwer_errors
        assert counts.deletions - counts.insertions == output.deletions - output.insertions
    counts = word_error_counts(pairs)
    output = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
    assert counts.error_rate == pytest.approx(output.wer, rel=1e-12)
    assert counts.reference_length == output.hits + output.substitutions + output.deletions
