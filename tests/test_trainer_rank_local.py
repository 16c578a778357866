"""Data-parallel steps of ranks that read their own batches (WebDataset shards, issue 17).

Ranks then hold unequal numbers of batches: each steps after ``accumulation`` of its own,
the step divides the summed gradient by the batches the ranks summed, and a rank out of
batches takes empty steps until every rank is. Checked against a float64 reference worked
step by step (the mean gradient over each step's batches), for two Gloo processes and one;
then a tiny RNN-T trained from uneven shards by two ranks, and the shard loader's predicted
per-rank batch counts against the batches each rank's loader really yields.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_rnnt_task import run_config, tone_corpus  # noqa: F401 (a fixture)
from test_trainer_parallel import (
    free_port,
    rank_environment,
    read_history,
    start,
    stop_one_rank_after_an_epoch,
)

from speechbed.corpora.asr_manifest import read_manifest
from speechbed.corpora.shards import write_shards
from speechbed.training.distributed import ALONE, ProcessGroup
from speechbed.training.optimization import GradientStep

LEARNING_RATE = 0.1
EPOCHS = 2

STEPS = """
import json, os, sys, torch
torch.set_num_threads(1)
from speechbed.training.distributed import join_process_group
from speechbed.training.optimization import GradientStep
from test_trainer_rank_local import train_rank_local
group = join_process_group(torch.device("cpu"))
case = json.loads(sys.argv[1])
weights, steps = train_rank_local(case["batches"][group.rank], case["accumulation"], group)
print("RESULT", json.dumps({"weights": weights, "steps": steps}), flush=True)
torch.distributed.destroy_process_group()
# A short Gloo script that took an optimizer step aborts at interpreter exit in about one
# run of seven with this torch ("terminate called without an active exception", after
# destroy_process_group too; the trainer's runs do not): leave once the result is out.
os._exit(0)
"""


def make_batches(count: int, seed: int) -> list[list[list[float]]]:
    """``count`` batches of 3 rows ``[x1, x2, y]``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, 3, generator=generator).tolist()


def _loss(model: torch.nn.Linear, batch: torch.Tensor) -> torch.Tensor:
    return ((model(batch[:, :2]).squeeze(1) - batch[:, 2]) ** 2).mean()


def train_rank_local(
    batches: list, accumulation: int, group: ProcessGroup
) -> tuple[list[float], list[int]]:
    """This rank's part of EPOCHS epochs through GradientStep(rank_local=True): the final
    weights and the steps taken in each epoch."""
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    stepper = GradientStep(optimizer, scaler, accumulation, group=group, rank_local=True)
    steps = []
    for _ in range(EPOCHS):
        taken = 0
        for index, batch in enumerate(batches):
            last = index == len(batches) - 1
            taken += stepper(_loss(model, torch.tensor(batch)), index, 0, last) is not None
        taken += len(list(stepper.finish(0)))
        steps.append(taken)
    weights = [*model.weight.reshape(-1).tolist(), *model.bias.tolist()]
    return weights, steps


def reference(rank_batches: list[list], accumulation: int) -> tuple[list[float], int]:
    """float64 SGD where step s takes the mean gradient over every rank's batches
    s*accumulation .. (s+1)*accumulation - 1 (those it has); the steps an epoch takes."""
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1).double()
    steps = max(-(-len(batches) // accumulation) for batches in rank_batches)
    for _ in range(EPOCHS):
        for step in range(steps):
            taken = [
                torch.tensor(batch, dtype=torch.float64)
                for batches in rank_batches
                for batch in batches[step * accumulation : (step + 1) * accumulation]
            ]
            if not taken:
                continue
            model.zero_grad()
            (sum(_loss(model, batch) for batch in taken) / len(taken)).backward()
            with torch.no_grad():
                for param in model.parameters():
                    param -= LEARNING_RATE * param.grad
    weights = [*model.weight.reshape(-1).tolist(), *model.bias.tolist()]
    return weights, steps


@pytest.mark.parametrize(
    ("counts", "accumulation"),
    [((5, 2), 2), ((1, 4), 1), ((3, 0), 2)],
    ids=["rank1-runs-out", "rank0-runs-out", "rank1-has-none"],
)
def test_two_ranks_with_unequal_batches_step_on_the_mean_of_each_steps_batches(
    tmp_path, counts, accumulation
):
    rank_batches = [make_batches(count, seed) for seed, count in enumerate(counts)]
    case = json.dumps({"batches": rank_batches, "accumulation": accumulation})
    port = free_port()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", STEPS, case],
            env=rank_environment(rank, 2, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    expected, steps = reference(rank_batches, accumulation)
    for rank, process in enumerate(processes):
        output = process.communicate(timeout=120)[0]
        assert process.returncode == 0, f"rank {rank}:\n{output}"
        result = json.loads(output.split("RESULT ", 1)[1])
        assert result["steps"] == [steps] * EPOCHS
        assert result["weights"] == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_one_process_takes_its_last_short_group_as_their_mean():
    batches = make_batches(5, seed=4)
    weights, steps = train_rank_local(batches, 2, ALONE)
    expected, expected_steps = reference([batches], 2)
    assert steps == [expected_steps] * EPOCHS == [3, 3]
    assert weights == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.fixture(scope="module")
def uneven_shards(tone_corpus):  # noqa: F811
    """The tone corpus's 6 training utterances in shards of 4 and 2."""
    entries = read_manifest(tone_corpus / "wav" / "train.json")
    shards = tone_corpus / "uneven-shards"
    write_shards(entries, tone_corpus / "wav", shards, 4, progress=False)
    return shards


def shard_run_file(corpus: Path, shards: Path, run_dir: Path, training: dict) -> Path:
    """The job file (beside ``run_dir``) of a tiny RNN-T run trained from ``shards``."""
    import yaml

    config = run_config(
        corpus,
        data={"train_shards": str(shards), "batch_size": 2, "shuffle_buffer": 2},
        training={"num_threads": 1, **training},
    )
    document = config.model_dump(mode="json")
    document["info"]["run_dir"] = str(run_dir)
    path = run_dir.with_suffix(".yml")
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize(
    ("ranks", "workers", "named_by"),
    [(1, 0, "folder"), (2, 0, "folder"), (2, 2, "folder"), (3, 1, "pattern")],
)
def test_each_ranks_loader_yields_the_batches_counted_for_it(
    tone_corpus,  # noqa: F811
    uneven_shards,
    ranks,
    workers,
    named_by,
):
    from speechbed.tasks.rnnt.task import RnntTask

    shards = uneven_shards
    if named_by == "pattern":
        shards = uneven_shards / "shards-{000000..000001}.tar"
    config = run_config(
        tone_corpus,
        data={"train_shards": str(shards), "batch_size": 2, "shuffle_buffer": 2,
              "num_workers": workers},
    )  # fmt: skip
    loader = RnntTask(config).open_loader("train", shuffle=True, seed=0)
    keys = []
    for rank in range(ranks):
        own = loader.for_rank(rank, ranks)
        own.set_epoch(1)
        batches = list(own)
        assert len(batches) == len(own) == own.rank_batch_counts()[rank]
        keys += [key for batch in batches for key in batch.utt_ids]
    assert len(keys) == len(set(keys)) == 6


def test_two_ranks_train_from_uneven_shards_in_step(tmp_path, tone_corpus, uneven_shards):  # noqa: F811
    """Rank 0 reads 4 utterances (2 batches), rank 1 reads 2 (1 batch): 2 steps an epoch."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    training = {"num_epochs": EPOCHS, "optimizer": "adam", "log10_learning_rate": -2.0}
    processes = start(shard_run_file(tone_corpus, uneven_shards, run_dir, training), 2)
    for rank, process in enumerate(processes):
        output = process.communicate(timeout=300)[0]
        assert process.returncode == 0, f"rank {rank}:\n{output}"
    assert [row["epoch"] for row in read_history(run_dir)] == ["1", "2"]
    (events,) = (run_dir / "tensorboard" / "steps").glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    steps = [event.step for event in accumulator.Scalars("step/learning_rate")]
    assert steps == [1, 2, 3, 4]
    assert (run_dir / "model.pt").is_file()


def test_sigusr1_to_the_rank_with_fewer_batches_stops_both_at_one_step(
    tmp_path,
    tone_corpus,  # noqa: F811
    uneven_shards,
):
    """Rank 1 spends the end of each epoch in empty steps; its vote still reaches rank 0."""
    run_dir = tmp_path / "run"
    path = shard_run_file(tone_corpus, uneven_shards, run_dir, {"num_epochs": 500})
    stopped = stop_one_rank_after_an_epoch(start(path, 2), run_dir, rank=1)
    assert len(stopped) == 2 and stopped[0] == stopped[1], stopped
