"""Tests of CTC decoding (greedy, prefix beam search) and phone error rates."""

from __future__ import annotations

import itertools
import math

import editdistance
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from speechbed.corpora.phones import PHONES_48
from speechbed.decoding import (
    ErrorCounts,
    edit_counts,
    greedy_decode,
    labelling_log_probability,
    prefix_beam_search,
    total_error_counts,
    transcribe,
)
from speechbed.models import build_model
from speechbed.tasks.ctc_phones import (
    NUM_CLASSES,
    acoustic_settings,
    ids_to_phones_39,
    phone_error_counts,
)
from speechbed.tasks.ctc_phones.config import AcousticModelConfig as ModelConfig

# --------------------------------------------------------------------------- error rates


@pytest.mark.parametrize(
    ("reference", "hypothesis", "expected"),
    [
        # b -> x substituted, d deleted: a b c d / a x c
        ("abcd", "axc", ErrorCounts(1, 1, 0, 4)),
        # c inserted at the end
        ("ab", "abc", ErrorCounts(0, 0, 1, 2)),
        # reversal of three: the middle matches, both ends are substituted
        ("abc", "cba", ErrorCounts(2, 0, 0, 3)),
        # empty hypothesis: every reference token deleted
        ("abc", "", ErrorCounts(0, 3, 0, 3)),
        # empty reference: every hypothesis token inserted
        ("", "ab", ErrorCounts(0, 0, 2, 0)),
        # shifted by one: delete the leading a, insert a trailing d (cost 2 < 3 substitutions)
        ("abc", "bcd", ErrorCounts(0, 1, 1, 3)),
    ],
)
def test_edit_counts_on_hand_worked_examples(reference, hypothesis, expected):
    assert edit_counts(list(reference), list(hypothesis)) == expected


def test_corpus_error_rate_sums_counts_before_dividing():
    # (1 sub + 1 del over 4) and (1 ins over 2): 3 errors over 6 phones, not the mean of 1/2 and 1/2
    total = total_error_counts([("abcd", "axc"), ("ab", "abc")])
    assert total == ErrorCounts(1, 1, 1, 6)
    assert total.error_rate == pytest.approx(0.5)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 4), max_size=12),
    st.lists(st.integers(0, 4), max_size=12),
)
def test_edit_counts_total_matches_editdistance_library(reference, hypothesis):
    counts = edit_counts(reference, hypothesis)
    assert counts.errors == editdistance.eval(reference, hypothesis)
    # the split is a real alignment: lengths balance
    assert len(reference) - counts.deletions + counts.insertions == len(hypothesis)


def test_phone_error_counts_fold_48_to_39():
    index = {phone: position for position, phone in enumerate(PHONES_48)}
    # in the 39 set, ao folds to aa and epi to sil: these hypotheses are all correct
    reference = {"u1": [index["aa"], index["sil"]]}
    hypothesis = {"u1": [index["ao"], index["epi"]]}
    assert ids_to_phones_39(hypothesis["u1"]) == ["aa", "sil"]
    assert phone_error_counts(reference, hypothesis) == ErrorCounts(0, 0, 0, 2)
    # a missing hypothesis counts as empty: two deletions
    assert phone_error_counts(reference, {}) == ErrorCounts(0, 2, 0, 2)


# --------------------------------------------------------------------------- greedy


def test_greedy_merges_repeats_and_drops_blanks():
    blank = 3
    # best path a a _ a b b _ _ (then padding frames past the length) -> a a b
    path = [0, 0, 3, 0, 1, 1, 3, 3, 2, 2]
    scores = torch.full((1, len(path), 4), -10.0)
    scores[0, torch.arange(len(path)), torch.tensor(path)] = 0.0
    assert greedy_decode(scores, torch.tensor([8]), blank) == [[0, 0, 1]]
    assert greedy_decode(scores, torch.tensor([0]), blank) == [[]]


# --------------------------------------------------------------------------- prefix beam search


def _labelling_log_probability(log_probs: np.ndarray, labels: list[int], blank: int) -> float:
    """log P(labels) by torch's CTC forward algorithm, the independent reference."""
    loss = torch.nn.functional.ctc_loss(
        torch.from_numpy(log_probs)[:, None, :],
        torch.tensor([labels], dtype=torch.long) if labels else torch.zeros(1, 0, dtype=torch.long),
        torch.tensor([log_probs.shape[0]]),
        torch.tensor([len(labels)]),
        blank=blank,
        reduction="sum",
        zero_infinity=False,
    )
    return -float(loss)


def _random_log_probs(generator: np.random.Generator, frames: int, labels: int, sharpness: float):
    logits = generator.normal(size=(frames, labels)) * sharpness
    return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)


def _brute_force_best(log_probs: np.ndarray, blank: int) -> tuple[tuple[int, ...], float]:
    """Sum the probability of every path into its labelling, return the most probable labelling."""
    frames, labels = log_probs.shape
    totals: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(labels), repeat=frames):
        collapsed = [
            label
            for position, label in enumerate(path)
            if position == 0 or label != path[position - 1]
        ]
        labelling = tuple(label for label in collapsed if label != blank)
        score = sum(log_probs[t, label] for t, label in enumerate(path))
        totals[labelling] = np.logaddexp(totals.get(labelling, -np.inf), score)
    best = max(totals, key=totals.get)
    return best, totals[best]


@pytest.mark.parametrize("seed", range(12))
def test_full_beam_matches_brute_force_on_tiny_vocabulary(seed):
    generator = np.random.default_rng(seed)
    frames, labels, blank = 6, 3, 2  # 3^6 = 729 paths over labels {0, 1} and a blank
    log_probs = _random_log_probs(generator, frames, labels, sharpness=1.0)
    expected, expected_score = _brute_force_best(log_probs, blank)
    # a beam wider than every prefix of length <= 6 over two labels (127) prunes nothing
    found, score = prefix_beam_search(log_probs, beam_width=200, blank=blank)
    assert tuple(found) == expected
    assert score == pytest.approx(expected_score, abs=1e-9)
    assert score == pytest.approx(_labelling_log_probability(log_probs, found, blank), abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 25), st.integers(2, 8))
def test_beam_one_equals_greedy_on_peaky_posteriors(seed, frames, labels):
    # Beam 1 keeps one prefix but sums its paths, so it can part from the best path when frames
    # are flat (see the next test). Worked through case by case, the two agree whenever every
    # frame's top class is above 1/sqrt(2), as trained CTC models' peaky outputs are.
    generator = np.random.default_rng(seed)
    blank = labels - 1
    winners = generator.integers(0, labels, size=frames)
    probabilities = generator.dirichlet(np.ones(labels), size=frames) * 0.28
    probabilities[np.arange(frames), winners] += 0.72
    log_probs = np.log(probabilities)
    greedy = greedy_decode(torch.from_numpy(log_probs)[None], torch.tensor([frames]), blank)[0]
    found, _ = prefix_beam_search(log_probs, beam_width=1, blank=blank)
    assert found == greedy


def test_beam_one_sums_paths_where_greedy_takes_the_best_one():
    # Three frames over {a, blank}: P(a) = .6, .45, .6. Best path a _ a -> "aa" (greedy), with
    # P("aa") = .6 * .55 * .6 = .198. Beam 1 keeps "a" after frame one, stays on "a" at frame two
    # (.6, no blank-ended mass to extend from), and at frame three staying (.6 * .4 + .27 * .6 = .402)
    # beats extending to "aa" (.33 * .6 = .198). "a" is the better answer: its six paths
    # aaa aa_ a__ _aa _a_ __a sum to .162 + .108 + .132 + .108 + .072 + .132 = .714.
    log_probs = np.log(np.array([[0.6, 0.4], [0.45, 0.55], [0.6, 0.4]]))
    greedy = greedy_decode(torch.from_numpy(log_probs)[None], torch.tensor([3]), 1)[0]
    found, score = prefix_beam_search(log_probs, beam_width=1, blank=1)
    assert greedy == [0, 0]
    assert found == [0]
    assert math.exp(score) == pytest.approx(0.714)  # rescored exactly, not the kept .402
    assert math.exp(_labelling_log_probability(log_probs, greedy, 1)) == pytest.approx(0.198)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 20), st.integers(2, 6), st.sampled_from([2, 4, 16]))
def test_wider_beam_is_never_less_probable_than_greedy(seed, frames, labels, beam_width):
    generator = np.random.default_rng(seed)
    blank = 0
    log_probs = _random_log_probs(generator, frames, labels, sharpness=2.0)
    greedy = greedy_decode(torch.from_numpy(log_probs)[None], torch.tensor([frames]), blank)[0]
    found, score = prefix_beam_search(log_probs, beam_width=beam_width, blank=blank)
    greedy_score = _labelling_log_probability(log_probs, greedy, blank)
    assert score == pytest.approx(_labelling_log_probability(log_probs, found, blank), abs=1e-6)
    assert score >= greedy_score - 1e-9


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 15), st.integers(2, 5), st.integers(0, 6))
def test_exact_rescoring_matches_torch_ctc_forward(seed, frames, labels, length):
    generator = np.random.default_rng(seed)
    blank = labels - 1
    log_probs = _random_log_probs(generator, frames, labels, sharpness=1.5)
    # repeats included: they need a blank between them, which the forward pass must respect
    target = generator.integers(0, labels - 1, size=length).tolist()
    expected = _labelling_log_probability(log_probs, target, blank)
    found = labelling_log_probability(log_probs, target, blank)
    if math.isinf(expected):
        assert math.isinf(found) and found < 0
    else:
        assert found == pytest.approx(expected, abs=1e-6)


def test_beam_width_must_be_positive():
    with pytest.raises(ValueError, match="beam_width"):
        prefix_beam_search(np.zeros((2, 3)), 0, 0)


# --------------------------------------------------------------------------- batch-size invariance


def test_greedy_transcripts_and_per_do_not_depend_on_batch_size():
    config = ModelConfig(
        window_size=4,
        window_stride=2,
        convolutional_layers=1,
        convolutional_initial_channels=2,
        recurrent_size=8,
        recurrent_layers=1,
    )
    model = build_model(acoustic_settings(config), 5, NUM_CLASSES, seed=3)
    generator = torch.Generator().manual_seed(0)
    lengths = [13, 4, 9, 17, 1]
    utterances = [torch.randn(length, 5, generator=generator) for length in lengths]
    targets = [torch.randint(0, 48, (length // 3 + 1,), generator=generator) for length in lengths]

    def batches(size):
        for start in range(0, len(lengths), size):
            chunk = range(start, min(start + size, len(lengths)))
            longest = max(lengths[index] for index in chunk)
            features = torch.stack(
                [
                    torch.nn.functional.pad(utterances[i], (0, 0, 0, longest - lengths[i]))
                    for i in chunk
                ]
            )
            yield (
                features,
                torch.tensor([lengths[i] for i in chunk]),
                torch.cat([targets[i] for i in chunk]),
                torch.tensor([len(targets[i]) for i in chunk]),
                [f"utt{i}" for i in chunk],
            )

    one_by_one = transcribe(model, batches(1))
    all_at_once = transcribe(model, batches(5))
    in_pairs = transcribe(model, batches(2))
    assert one_by_one == all_at_once == in_pairs
    hypotheses, references = one_by_one
    assert phone_error_counts(references, hypotheses) == phone_error_counts(*reversed(in_pairs))
    assert math.isfinite(phone_error_counts(references, hypotheses).error_rate)


# --------------------------------------------------------------------------- evaluate.py


def test_evaluate_script_writes_trn_files_and_results(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    from speechbed.features.cache import FeatureStoreWriter
    from speechbed.training.config import RunConfig
    from speechbed.training.loop import train_run

    generator = np.random.default_rng(0)
    cache = tmp_path / "cache"
    for partition, count in (("train", 4), ("dev", 3), ("test", 2)):
        lengths = generator.integers(6, 15, size=count).tolist()
        with FeatureStoreWriter(
            cache / f"{partition}.zarr",
            [f"{partition}{i}" for i in range(count)],
            lengths,
            3,
            [generator.integers(0, 48, size=3).tolist() for _ in range(count)],
            {},
        ) as writer:
            writer.write(0, [generator.normal(size=(n, 3)).astype(np.float32) for n in lengths])
            writer.commit()
    config = {
        "info": {"name": "e", "run_dir": str(tmp_path / "run")},
        "data": {"cache_directory": str(cache), "batch_size": 2},
        "model": {"window_size": 3, "window_stride": 1, "convolutional_layers": 1,
                  "convolutional_initial_channels": 2, "recurrent_size": 4, "recurrent_layers": 1},
        "training": {"num_epochs": 1},
        "evaluation": {"beam_width": 3, "batch_size": 2},
    }  # fmt: skip
    train_run(RunConfig.model_validate(config), progress=False)
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump(config))
    script = Path(__file__).resolve().parents[1] / "scripts" / "evaluate.py"
    subprocess.run([sys.executable, str(script), "-y", str(path)], check=True, capture_output=True)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["epoch"] == 1 and results["beam_width"] == 3
    for role, count in (("dev", 3), ("test", 2)):
        assert results[role]["utterances"] == count
        hypotheses = (tmp_path / "run" / f"{role}.hyp.trn").read_text().splitlines()
        references = (tmp_path / "run" / f"{role}.ref.trn").read_text().splitlines()
        assert [line.rsplit(" ", 1)[-1] for line in references] == [
            f"({role}{i})" for i in range(count)
        ]
        assert len(hypotheses) == count
        # recount from the trn files with the independent library
        pairs = [
            (ref.rsplit(" ", 1)[0].split(), hyp.rsplit(" ", 1)[0].split())
            for ref, hyp in zip(references, hypotheses, strict=True)
        ]
        errors = sum(editdistance.eval(r, h) for r, h in pairs)
        phones = sum(len(r) for r, _ in pairs)
        assert results[role]["errors"] == errors
        assert results[role]["reference_phones"] == phones == 3 * count
        assert results[f"{role}_per"] == pytest.approx(errors / phones)
    again = subprocess.run(
        [sys.executable, str(script), "-y", str(path)], check=True, capture_output=True, text=True
    )
    assert "up to date; skipped" in again.stdout
