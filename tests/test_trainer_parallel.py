"""Tests of data-parallel training: two Gloo processes against one with twice the accumulation.

20 utterances in batches of 4 make 5 batches an epoch, so the epoch's last step has one
batch and the second rank takes a step with no batch of its own. Two epochs of a tiny
ctc_phones model, no dropout or augmentation (their draws differ between the layouts).
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_training import TINY_MODEL, write_cache

from speechbed.training.distributed import ALONE, ProcessGroup, ShardedBatches, idle_gpus_note

TRAIN = """
import sys, torch, yaml
torch.set_num_threads(1)
from speechbed.training.config import RunConfig
from speechbed.training.loop import train_run
train_run(RunConfig.model_validate(yaml.safe_load(open(sys.argv[1]))), progress=False)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_config(
    path: Path, run_dir: Path, cache: Path, accumulation: int, epochs: int = 2, **training
) -> Path:
    config = {
        "info": {"name": "parallel", "seed": 3, "run_dir": str(run_dir)},
        "data": {"cache_directory": str(cache), "batch_size": 4},
        "model": dict(TINY_MODEL),
        "training": {
            "num_epochs": epochs,
            "log10_learning_rate": -2,
            "num_threads": 1,
            "gradient_accumulation": accumulation,
            "max_grad_norm": 50.0,
            "ema_decay": 0.5,
            **training,
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def rank_environment(rank: int, ranks: int, port: int) -> dict[str, str]:
    """The environment of one of ``ranks`` Gloo processes on loopback (tests/ importable)."""
    tests = str(Path(__file__).resolve().parent)
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(ranks),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "GLOO_SOCKET_IFNAME": "lo",
    }


def start(config: Path, ranks: int) -> list[subprocess.Popen]:
    port = free_port()
    processes = []
    for rank in range(ranks):
        environment = rank_environment(rank, ranks, port)
        if ranks == 1:
            environment.pop("WORLD_SIZE")
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", TRAIN, str(config)],
                env=environment,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return processes


def train(config: Path, ranks: int) -> None:
    processes = start(config, ranks)
    for rank, process in enumerate(processes):
        output = process.communicate(timeout=300)[0]
        assert process.returncode == 0, f"rank {rank}:\n{output}"


def read_history(run_dir: Path) -> list[dict]:
    with open(run_dir / "hist.csv") as handle:
        return list(csv.DictReader(handle))


def test_two_ranks_train_as_one_process_with_twice_the_accumulation(tmp_path):
    cache = tmp_path / "cache"
    write_cache(cache / "train.zarr", 20, seed=1)
    write_cache(cache / "dev.zarr", 4, seed=2)
    train(write_config(tmp_path / "one.yml", tmp_path / "one", cache, 2), ranks=1)
    train(write_config(tmp_path / "two.yml", tmp_path / "two", cache, 1), ranks=2)
    one = torch.load(tmp_path / "one" / "model.pt", weights_only=False)
    two = torch.load(tmp_path / "two" / "model.pt", weights_only=False)
    assert one["epoch"] == two["epoch"]
    for name, value in one["model"].items():
        torch.testing.assert_close(two["model"][name], value, rtol=1e-4, atol=1e-5)
    history = {name: read_history(tmp_path / name) for name in ("one", "two")}
    for single, parallel in zip(history["one"], history["two"], strict=True):
        assert float(parallel["loss"]) == pytest.approx(float(single["loss"]), rel=1e-5)
        assert float(parallel["max_grad_norm"]) == pytest.approx(
            float(single["max_grad_norm"]), rel=1e-4
        )
        assert parallel["dev_per"] == single["dev_per"]
    # rank 0 alone wrote: one event file per TensorBoard folder, 3 steps an epoch logged once
    for folder in ("tensorboard", "tensorboard/steps"):
        assert len(list((tmp_path / "two" / folder).glob("events.out.tfevents.*"))) == 1


def test_sharded_batches_split_an_epoch_without_loss_or_repeat():
    class Batches(list):
        def set_epoch(self, epoch: int) -> None:
            pass

    batches = Batches([[index] for index in range(7)])
    shards = [ShardedBatches(batches, ProcessGroup(rank, 3)) for rank in range(3)]
    assert [len(shard) for shard in shards] == [3, 2, 2]
    assert [list(shard) for shard in shards] == [[[0], [3], [6]], [[1], [4]], [[2], [5]]]


@pytest.mark.slow
def test_a_rank_that_dies_ends_the_other_with_an_error_not_a_hang(tmp_path):
    cache = tmp_path / "cache"
    write_cache(cache / "train.zarr", 20, seed=1)
    write_cache(cache / "dev.zarr", 4, seed=2)
    config = write_config(tmp_path / "run.yml", tmp_path / "run", cache, 1, epochs=50)
    first, second = start(config, ranks=2)
    checkpoint = tmp_path / "run" / "checkpoints" / "epoch-0001.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists():
        assert first.poll() is None and time.monotonic() < deadline, "no first checkpoint"
        time.sleep(0.05)
    second.send_signal(signal.SIGKILL)
    second.wait()
    output = first.communicate(timeout=120)[0]
    assert first.returncode != 0
    assert "Connection closed by peer" in output or "remote worker" in output, output[-2000:]
    newest = sorted((tmp_path / "run" / "checkpoints").glob("epoch-*.pt"))[-1]
    assert torch.load(newest, weights_only=False)["epoch"] >= 1  # whole: a restart resumes


@pytest.mark.slow
def test_a_data_parallel_run_with_random_draws_resumes_exactly(tmp_path):
    cache = tmp_path / "cache"
    write_cache(cache / "train.zarr", 20, seed=1)
    write_cache(cache / "dev.zarr", 4, seed=2)
    noisy = {"dropout_prob": 0.2, "noise_eps": 0.1, "max_time_mask": 3, "num_time_mask": 1}
    config = write_config(
        tmp_path / "run.yml", tmp_path / "run", cache, 1, 3, keep_last_and_best_only=False, **noisy
    )
    train(config, ranks=2)
    checkpoints = tmp_path / "run" / "checkpoints"
    whole = torch.load(checkpoints / "epoch-0003.pt", weights_only=False)
    assert len(whole["rank_random_states"]) == 2
    # lose the last epoch, as a killed job would: both ranks resume after epoch 2
    (checkpoints / "epoch-0003.pt").unlink()
    (tmp_path / "run" / "model.pt").unlink()
    train(config, ranks=2)
    again = torch.load(checkpoints / "epoch-0003.pt", weights_only=False)
    for key in ("model", "ema"):
        for name, value in whole[key].items():
            assert torch.equal(value, again[key][name]), (key, name)


def test_sigusr1_to_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    # Slurm's time-limit warning may reach the ranks at different moments (here: one only);
    # the ranks agree through the gradient all-reduce and stop together, exit 75, no error.
    cache = tmp_path / "cache"
    write_cache(cache / "train.zarr", 20, seed=1)
    write_cache(cache / "dev.zarr", 4, seed=2)
    config = write_config(tmp_path / "run.yml", tmp_path / "run", cache, 1, 500)
    processes = start(config, ranks=2)
    stopped = stop_one_rank_after_an_epoch(processes, tmp_path / "run", rank=1)
    assert len(stopped) == 2 and stopped[0] == stopped[1], stopped


def stop_one_rank_after_an_epoch(
    processes: list[subprocess.Popen], run_dir: Path, rank: int
) -> list[str]:
    """Send SIGUSR1 to ``rank`` once the run has a checkpoint; check that every rank exits
    75 without an error; return their "SIGUSR1: stopping" lines."""
    deadline = time.monotonic() + 120
    while not list((run_dir / "checkpoints").glob("epoch-*.pt")):
        assert all(process.poll() is None for process in processes), "a rank ended early"
        assert time.monotonic() < deadline, "no epoch finished in time"
        time.sleep(0.05)
    processes[rank].send_signal(signal.SIGUSR1)
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    stopped = []
    for number, (process, output) in enumerate(zip(processes, outputs, strict=True)):
        assert process.returncode == 75, f"rank {number}:\n{output}"
        assert "Connection closed" not in output and "Traceback" not in output, output
        stopped += [line for line in output.splitlines() if "SIGUSR1: stopping" in line]
    return stopped


def test_a_job_that_sees_more_gpus_than_it_has_processes_is_told_so():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    note = idle_gpus_note(cuda, ALONE, visible=4)
    assert "sees 4 GPUs but trains in 1 process(es)" in note and "processes: 4" in note
    assert "3 stay idle" in note
    assert idle_gpus_note(cuda, ProcessGroup(1, 4), visible=4) is None
    assert idle_gpus_note(cuda, ALONE, visible=1) is None
    assert idle_gpus_note(cpu, ALONE, visible=0) is None
