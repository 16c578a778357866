"""The memory a trial needs: the peak of one forward and backward pass at its largest batch.

Called by ``speechbed.search.worker`` before a trial trains, when the search file sets
``memory_limit_mib``: a trial whose figure exceeds the limit is pruned (the original study's
GPU memory limit), without training.

The figure is the peak of the bytes held by tensors on the trial's device from the moment a
copy of the freshly built model is put there until the backward pass ends, above what the
device held before: parameters, the batch, activations kept for the backward pass, gradients
and the kernels' scratch tensors. Optimiser state is not included. On CUDA it is
``torch.cuda.max_memory_allocated`` (the caching allocator's live blocks, rounded up to its
512-byte granules; cuDNN's workspaces included). On the CPU it is read from the PyTorch
profiler's memory events (``profile_memory=True``): every allocation and free of PyTorch's CPU
allocator, in order, summed to their running peak; memory outside that allocator (Python
objects, NumPy arrays the data loader holds, oneDNN's private caches) is not counted.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from speechbed.training.config import RunConfig
    from speechbed.training.task import Task

MIB = 1 << 20


def peak_memory_bytes(work: Callable[[], object], device: torch.device) -> int:
    """The peak bytes of tensors allocated on ``device`` while ``work()`` runs, above the start."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        work()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    if device.type != "cpu":
        raise ValueError(f"cannot measure memory on a {device.type!r} device (cpu or cuda)")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        work()
    cpu = torch.autograd.DeviceType.CPU
    events = [
        event
        for event in profiler.profiler.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == cpu
    ]
    held = peak = 0
    for event in sorted(events, key=lambda event: event.start_ns()):
        held += event.nbytes()  # negative for a free
        peak = max(peak, held)
    return peak


def largest_batch(loader: DataLoader) -> Any:
    """The largest batch any epoch of ``loader`` can draw: its longest utterances, collated.

    The bucket sampler (``speechbed.features.loader.BucketBatchSampler``) batches utterances
    of similar length and pads each batch to its longest; with shuffling its length jitter
    moves the borders between batches, so the most frames a batch can hold is a full batch
    (``batch_size`` rows, or as many as ``max_frames`` allows) of the longest utterances.
    """
    sampler = loader.batch_sampler
    lengths = [int(length) for length in sampler.lengths]
    longest_first = sorted(range(len(lengths)), key=lambda index: -lengths[index])
    if sampler.batch_size is not None:
        rows = sampler.batch_size
    else:
        rows = max(1, sampler.max_frames // lengths[longest_first[0]])
    return loader.collate_fn([loader.dataset[index] for index in longest_first[:rows]])


def _copied(value: Any) -> Any:
    """``value`` with every tensor in it (tuples, lists, dicts) copied."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_copied(item) for item in value))
    if isinstance(value, tuple | list):
        return type(value)(_copied(item) for item in value)
    if isinstance(value, dict):
        return {key: _copied(item) for key, item in value.items()}
    return value


def pass_memory_bytes(
    task: Task,
    model: torch.nn.Module,
    batch: Any,
    device: torch.device,
    mixed_precision: bool = False,
) -> int:
    """The peak bytes on ``device`` of moving a copy of ``model`` and ``batch`` there and running
    one training forward and backward pass (``task.forward``, ``task.loss``) on them."""

    def one_pass() -> None:
        on_device = copy.deepcopy(model).to(device)
        on_device.train()
        # on the CPU, .to(device) is the batch itself: copy it, so that it is counted too
        inputs = _copied(batch) if device.type == "cpu" else batch
        with torch.autocast(device.type, dtype=torch.float16, enabled=mixed_precision):
            outputs = task.forward(on_device, inputs, device)
        task.loss(outputs, inputs, device).backward()

    return peak_memory_bytes(one_pass, device)


def trial_memory_bytes(config: RunConfig) -> int:
    """The peak bytes of a trial's forward and backward pass at its largest training batch, on
    its device (the model built as the trainer builds it)."""
    from speechbed.training.task import make_task
    from speechbed.training.trainer import resolve_device

    task = make_task(config)
    loader = task.open_loader(config.data.train_partition, shuffle=False)
    model = task.build_model(loader).model
    device = resolve_device(config.training.device)
    mixed_precision = device.type == "cuda" and config.training.mixed_precision
    figure = pass_memory_bytes(task, model, largest_batch(loader), device, mixed_precision)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the trial's training starts from an empty cache
    return figure
