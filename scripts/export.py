"""Export a trained keyword spotter to ONNX and int8, check them with ONNX Runtime, measure costs.

Input: the run YAML that scripts/train.py trained (task kws; its ``evaluation.backend``
section: int8 on or off, calibration clips from train, latency clips). Output, under
``<info.run_dir>/deployment/``: model.onnx, model.int8.onnx and deployment.json: per backend
(torch, onnx, int8) the test accuracy, the largest logit difference from torch, the size,
parameters and multiply-accumulates per 1 s clip (torch), and CPU latency per clip at batch 1
(one thread). A summary table is printed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from speechbed.errors import UserInputError
from speechbed.outputs import write_text_atomic
from speechbed.run_folder import RunFolder
from speechbed.step_runner import JobContext, run_jobs_cli
from speechbed.training.config import RunConfig
from speechbed.training.model_file import load_trained_model
from speechbed.training.task import make_task


class ExportJob(RunConfig):
    """The run config as the job of scripts/export.py: reads model.pt and the test and train
    stores, writes ``<run_dir>/deployment``."""

    def lineage_paths(self) -> tuple[list[Path], list[Path]]:
        run = RunFolder(Path(self.info.run_dir))
        data = self.data
        return [run.model, data.source(data.test_partition)], [run.path / "deployment"]


def run(job: ExportJob, context: JobContext) -> None:
    if job.task != "kws":
        raise UserInputError(f"scripts/export.py exports kws runs; this run's task is {job.task!r}")
    from speechbed.deployment.backends import deployment_report
    from speechbed.tasks.kws.data import ClipStore

    torch.set_num_threads(1)  # latency per clip as one core serves it
    task = make_task(job)
    run_folder = RunFolder(Path(job.info.run_dir))
    model, _ = load_trained_model(task, run_folder)
    data = job.data
    test = ClipStore(data.feature_store(data.test_partition))
    calibration = ClipStore(data.feature_store(data.train_partition)).values
    backend = job.evaluation.backend.model_copy(update={"onnx": True})
    folder = run_folder.path / "deployment"
    report = deployment_report(
        model, test.values, test.labels.numpy(), calibration, backend, folder, backend.latency_clips
    )
    write_text_atomic(folder / "deployment.json", json.dumps(report, indent=2) + "\n")
    costs = report["torch"]
    print(
        f"{job.info.name}: {costs['parameters']} parameters, {costs['macs_per_clip'] / 1e6:.2f} M "
        f"MACs per 1 s clip; {data.test_partition} ({report['clips']} clips):"
    )
    print(f"  {'backend':8} {'accuracy':>9} {'max |diff|':>11} {'size':>9} {'latency':>10}")
    for name in ("torch", "onnx", "int8"):
        if name in report:
            entry = report[name]
            size = entry.get("bytes", entry.get("bytes_float32", 0))
            difference = entry.get("max_abs_difference", 0.0)
            print(
                f"  {name:8} {100 * entry['accuracy']:8.2f}% {difference:11.2e} {size / 1024:7.1f}kB "
                f"{entry['latency']['median_ms']:8.3f}ms"
            )


if __name__ == "__main__":
    raise SystemExit(run_jobs_cli(ExportJob, run, __doc__))
