"""Tests of the search's memory-limit prune: the CPU measurement against sizes worked out by
hand, the largest batch of the bucket sampler, and a tiny search whose big model is pruned for
memory (without training) while the small ones train."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from optuna.trial import TrialState
from test_search import TINY, environ, search_file  # noqa: F401 (environ: a fixture)

from speechbed.features.loader import BucketBatchSampler
from speechbed.search.memory import MIB, largest_batch, peak_memory_bytes, trial_memory_bytes
from speechbed.search.search_file import load_search
from speechbed.search.worker import open_study, run_worker
from speechbed.training.config import RunConfig

FLOAT = 4  # bytes


def test_cpu_peak_of_a_linear_layer_matches_the_hand_count():
    torch.manual_seed(0)
    n, rows = 384, 96
    weight, inputs = torch.randn(n, n), torch.randn(rows, n)

    def one_pass() -> None:
        layer = torch.nn.Linear(n, n, bias=False)  # weight: n*n floats
        with torch.no_grad():
            layer.weight.copy_(weight)
        x = inputs.clone()  # rows*n
        y = layer(x)  # rows*n, kept
        y.sum().backward()  # the loss and its seed gradient (1 float each), weight.grad n*n

    figure = peak_memory_bytes(one_pass, torch.device("cpu"))
    # Everything above is alive at the end of the backward pass; the backward of the matrix
    # product may also materialise the output's gradient (rows*n, an expanded 1 otherwise).
    least = FLOAT * (2 * n * n + 2 * rows * n + 2)
    assert least <= figure <= least + FLOAT * rows * n, (figure, least)

    def freed_between() -> None:
        for _ in range(3):
            torch.ones(1000, 1000)  # 4 MB, freed at once: the peak is one of them, not three

    assert peak_memory_bytes(freed_between, torch.device("cpu")) == 4_000_000


class _Utterances:
    """Items that are their own index, for a collate that returns the indices."""

    def __getitem__(self, index: int) -> int:
        return index


def test_the_largest_batch_is_a_full_batch_of_the_longest_utterances():
    lengths = np.array([5, 50, 7, 40, 9, 45, 3])
    sampler = BucketBatchSampler(lengths, batch_size=2, shuffle=False)
    loader = torch.utils.data.DataLoader(_Utterances(), batch_sampler=sampler, collate_fn=sorted)
    # unshuffled, the longest utterance (1) ends alone in the last batch; with shuffling's
    # jitter it can share one with the next longest (5): 2 x 50 padded frames
    assert list(sampler)[-1] == [1]
    assert largest_batch(loader) == [1, 5]
    sampler.batch_size, sampler.max_frames = None, 150  # rows: 150 // 50
    assert largest_batch(loader) == [1, 3, 5]


@pytest.mark.usefixtures("environ")  # the study folder under tmp_path
def test_a_model_over_the_memory_limit_is_pruned_without_training(tmp_path, cache_directory):
    sizes = (8, 32, 512)
    settings = {
        "num_trials": 3,
        "space": {"model.recurrent_size": {"choice": list(sizes)}},
        "training": {**TINY["training"], "num_epochs": 1},
    }
    search = load_search(search_file(tmp_path, cache_directory, **settings))
    measured = {
        size: trial_memory_bytes(
            RunConfig.model_validate(
                search.run_config({"model.recurrent_size": size}, "m", tmp_path / "m")
            )
        )
        / MIB
        for size in sizes
    }
    assert measured[8] < measured[32] < measured[512], measured
    limit = (measured[32] * measured[512]) ** 0.5
    path = search_file(tmp_path, cache_directory, memory_limit_mib=limit, **settings)
    search = load_search(path)
    study = open_study(search)
    for size in (512, 8, 32):
        study.enqueue_trial({"model.recurrent_size": size})
    run_worker(search, poll_seconds=0.2)
    trials = {t.params["model.recurrent_size"]: t for t in open_study(search).get_trials()}
    assert len(trials) == 3
    big = trials[512]
    assert big.state == TrialState.PRUNED and big.user_attrs["pruned_because"] == "memory limit"
    assert big.intermediate_values == {}  # pruned before its first epoch
    run_dir = tmp_path / "artifacts/search/tiny/trials" / f"{big.number:04d}"
    assert not (run_dir / "model.pt").exists() and not (run_dir / "hist.csv").exists()
    for size in (8, 32):
        assert trials[size].state == TrialState.COMPLETE, trials[size].user_attrs
        assert trials[size].user_attrs["peak_memory_mib"] < limit
    recorded = [trials[size].user_attrs["peak_memory_mib"] for size in sizes]
    # the same measurement in the worker (a few KiB of lazily made buffers may differ)
    assert recorded == pytest.approx([measured[size] for size in sizes], rel=0.1)
    assert recorded[2] > limit
