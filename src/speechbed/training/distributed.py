"""Data-parallel training across the processes of a job: ranks, batch shards, gradient sums.

Used by the training loop and the trainer. A job started with ``WORLD_SIZE`` > 1 in its
environment (``torchrun --nproc-per-node N``, or Slurm tasks that set ``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``) joins one process group: Gloo on CPU,
NCCL on CUDA. Ranks take their batches in one of two ways:

- from a batch sampler (feature stores, manifests): every rank builds the same loader (same
  seed, same batch order) and trains on its shard of each global step's batches: with N ranks
  and ``gradient_accumulation`` k, a step takes N x k consecutive batches, batch i going to
  rank i mod N. Each batch's loss is divided by the step's batch count and the ranks'
  gradients are summed, so N ranks make the step one process makes with N x k accumulation.
- from a loader that splits itself over the ranks (``RankSplitLoader``: WebDataset shards,
  where each rank reads its own shards): each rank steps after k of its own batches; the
  ranks' batch counts ride in the gradient all-reduce and the sum is divided by the step's
  total, so a step is the mean over the batches the ranks took. Ranks may hold unequal numbers
  of batches: one that runs out takes empty steps until every rank has (a flag in the same
  all-reduce says whether any rank has more), so the collectives stay paired.

Only rank 0 writes (hist.csv, TensorBoard, checkpoints, model.pt); a rank that dies ends the
others at the next collective, after ``timeout_seconds``, with an error instead of a hang.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

import torch

from speechbed.training.checkpoints import capture_random_states, restore_random_states

#: Seconds a collective waits for the other ranks before it fails (a rank died or hangs).
DEFAULT_TIMEOUT_SECONDS = 600


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among the job's training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    def sum_gradients(
        self, params: Sequence[torch.nn.Parameter], extras: Sequence[float] = ()
    ) -> list[float]:
        """Replace every parameter's gradient by the sum over the ranks (a missing one is 0);
        returns the sums of the ranks' ``extras``, carried in the same all-reduce (how the
        ranks agree, at one step, to stop, and count the step's batches)."""
        if not self.parallel:
            return [float(value) for value in extras]
        for param in params:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
        flat = torch.cat([param.grad.reshape(-1) for param in params])
        flat = torch.cat([flat, flat.new_tensor(list(extras))])
        torch.distributed.all_reduce(flat)
        offset = 0
        for param in params:
            count = param.grad.numel()
            param.grad.copy_(flat[offset : offset + count].view_as(param.grad))
            offset += count
        return flat[offset:].tolist()

    def sum(self, *values: float) -> list[float]:
        """Each value summed over the ranks."""
        if not self.parallel:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable value), on every rank."""
        if not self.parallel:
            return value
        holder = [value]
        torch.distributed.broadcast_object_list(holder, src=0)
        return holder[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if not self.parallel:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, value)
        return gathered

    def barrier(self) -> None:
        if self.parallel:
            torch.distributed.barrier()

    def leave(self) -> None:
        """End this process's part in the group (every rank, once training is done)."""
        if self.parallel and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


#: Rank r > 0 seeds its dropout and augmentation draws with the run's seed + r x this.
RANK_SEED_STRIDE = 1_000_003


class RankRandomStates:
    """Each rank's own random states (global generators, augmentation) for its checkpoints.

    Ranks draw dropout and augmentation apart, so the checkpoint (written by rank 0) holds
    all of them, gathered by ``gather`` on every rank before rank 0 saves; a resumed rank
    takes its own back, and a data-parallel run resumes exactly too.
    """

    def __init__(self, group: ProcessGroup, augmentation: torch.Generator) -> None:
        self.group = group
        self.augmentation = augmentation
        self.gathered: list[dict[str, Any]] = []

    def gather(self) -> None:
        """Collect every rank's states now (a collective: every rank calls it)."""
        own = {"global": capture_random_states(), "augmentation": self.augmentation.get_state()}
        self.gathered = self.group.gather(own)

    def state_dict(self) -> list[dict[str, Any]]:
        return self.gathered

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        if len(states) != self.group.world_size:
            raise ValueError(
                f"the checkpoint holds the random states of {len(states)} ranks, not "
                f"{self.group.world_size}: resume with as many processes as it was trained with"
            )
        own = states[self.group.rank]
        restore_random_states(own["global"])
        self.augmentation.set_state(own["augmentation"])


#: The process group of a job that trains in one process.
ALONE = ProcessGroup()


def join_process_group(
    device: torch.device, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
) -> ProcessGroup:
    """The job's process group from its environment (``WORLD_SIZE`` unset or 1: this alone).

    On CUDA each rank takes the GPU of its ``LOCAL_RANK`` among those the job sees, before
    any model is built (``torch.device("cuda")`` then means that GPU).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return ALONE
    if device.type == "cuda":  # one GPU a rank: the job's visible GPUs in local rank order
        local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds))
    return ProcessGroup(torch.distributed.get_rank(), torch.distributed.get_world_size())


def idle_gpus_note(device: torch.device, group: ProcessGroup, visible: int) -> str | None:
    """What to say when a job sees more GPUs (``visible``) than it has training processes,
    each of which trains on one: the others would idle for the whole run."""
    if device.type != "cuda" or visible <= group.world_size:
        return None
    return (
        f"this job sees {visible} GPUs but trains in {group.world_size} process(es), one GPU "
        f"each: {visible - group.world_size} stay idle; set 'processes: {visible}' on its "
        f"pipeline step (a sweep's num_gpus={visible} does) to train on all of them"
    )


class ShardedBatches:
    """A batch sampler's batches of one rank: batch i when i mod world_size is its rank."""

    def __init__(self, batches: Any, group: ProcessGroup) -> None:
        self.batches = batches
        self.group = group

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        for index, batch in enumerate(self.batches):
            if index % self.group.world_size == self.group.rank:
                yield batch

    def __len__(self) -> int:
        total, group = len(self.batches), self.group
        return max(0, (total - group.rank + group.world_size - 1) // group.world_size)


@runtime_checkable
class RankSplitLoader(Protocol):
    """A training loader whose iteration reads only one rank's part of the epoch (shards).

    ``for_rank`` gives the loader of one rank; ``rank_batch_counts`` the batches each rank's
    loader yields in an epoch (every epoch has as many), which set the epoch's step count.
    """

    splits_across_ranks: bool

    def for_rank(self, rank: int, world_size: int) -> RankSplitLoader: ...

    def rank_batch_counts(self) -> list[int]: ...


def splits_across_ranks(loader: Any) -> bool:
    """Whether ``loader`` reads one rank's part of the epoch itself (a ``RankSplitLoader``)."""
    return bool(getattr(loader, "splits_across_ranks", False))


def rank_loader(loader: Any, group: ProcessGroup) -> Any:
    """The loader of this rank's batches (the loader itself for one process and a sampler)."""
    if splits_across_ranks(loader):
        return loader.for_rank(group.rank, group.world_size)
    if not group.parallel:
        return loader
    if loader.batch_sampler is None:
        raise ValueError("data-parallel training needs a training loader with a batch sampler")
    return torch.utils.data.DataLoader(
        loader.dataset,
        batch_sampler=ShardedBatches(loader.batch_sampler, group),
        collate_fn=loader.collate_fn,
        num_workers=loader.num_workers,
        generator=loader.generator,
    )


def steps_per_epoch(loader: Any, accumulation: int, group: ProcessGroup) -> int:
    """Optimiser steps an epoch of ``loader`` (every rank's batches) takes."""
    if splits_across_ranks(loader):
        counts = loader.for_rank(group.rank, group.world_size).rank_batch_counts()
        return max(-(-count // accumulation) for count in counts)
    return -(-len(loader) // (accumulation * group.world_size))
