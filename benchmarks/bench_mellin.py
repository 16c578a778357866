"""Forward+backward time of the Mellin ops against torch's conv2d/conv1d on the same tensors.

Run by `make bench` (benchmarks/run_all.py) or `.venv/bin/python benchmarks/run_all.py mellin`;
prints one table with every available path (torch, extension) and its ratio to the baseline.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from speechbed.mellin import extension, mcorr1d, mcorrlcorr

#: Rounds per case; in each round every candidate runs once (interleaved, so load hits all alike).
ROUNDS = 7


@dataclass(frozen=True)
class Case:
    name: str
    input_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    mellin: Callable[..., torch.Tensor]  # (input, weight, bias, path) -> output
    baseline: Callable[..., torch.Tensor]  # (input, weight, bias) -> output
    baseline_name: str


CASES = (
    Case(
        "mcorrlcorr p=(1,4) r=(1,4)",
        (256, 16, 8, 81),
        (16, 16, 3, 9),
        lambda x, w, b, path: mcorrlcorr(x, w, b, p=(1, 4), r=(1, 4), path=path),
        lambda x, w, b: F.conv2d(x, w, b, padding=(1, 4)),
        "conv2d padding=(1,4)",
    ),
    Case(
        "mcorr1d p=2 r=2",
        (32, 16, 4000),
        (32, 16, 5),
        lambda x, w, b, path: mcorr1d(x, w, b, p=2, r=2, path=path),
        lambda x, w, b: F.conv1d(x, w, b, padding=2),
        "conv1d padding=2",
    ),
)


def available_paths(device: torch.device) -> list[str]:
    paths = ["torch"]
    if extension.load() and extension.supports(device):
        paths.append("extension")
    return paths


def forward_backward_seconds(run: Callable[[], torch.Tensor], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run().sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure(case: Case, device: torch.device, paths: list[str]) -> dict[str, float]:
    """Best forward+backward seconds of the baseline and of each path, measured interleaved."""
    generator = torch.Generator().manual_seed(0)
    input = torch.randn(case.input_shape, generator=generator).to(device).requires_grad_()
    weight = torch.randn(case.weight_shape, generator=generator).to(device).requires_grad_()
    bias = torch.randn(case.weight_shape[0], generator=generator).to(device).requires_grad_()
    candidates = {"baseline": lambda: case.baseline(input, weight, bias)}
    for path in paths:
        candidates[path] = lambda path=path: case.mellin(input, weight, bias, path)
    best = {name: float("inf") for name in candidates}
    for round_index in range(ROUNDS + 1):
        for name, run in candidates.items():
            seconds = forward_backward_seconds(run, device)
            if round_index > 0:  # the first round warms up (index maps, allocator, kernels)
                best[name] = min(best[name], seconds)
    return best


def main() -> None:
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(
        f"forward+backward, best of {ROUNDS} interleaved rounds; torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads"
    )
    header = f"{'device':6} {'case':28} {'path':10} {'ms':>9} {'baseline':22} {'base ms':>9} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for device in devices:
        paths = available_paths(device)
        for case in CASES:
            best = measure(case, device, paths)
            for path in paths:
                print(
                    f"{device.type:6} {case.name:28} {path:10} {best[path] * 1e3:9.2f} "
                    f"{case.baseline_name:22} {best['baseline'] * 1e3:9.2f} {best[path] / best['baseline']:7.2f}"
                )


if __name__ == "__main__":
    main()
