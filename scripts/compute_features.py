"""Computes a feature cache (fbank-81-10ms, sigbank-41-2ms, raw, or explicit settings) per partition.

Reads the manifests written by scripts/prep_timit.py (``input_path``) and writes one zarr v3
store per partition, ``<output_path>/<partition>.zarr`` (layout in speechbed.features.cache).
A store whose feature settings and manifest are unchanged and that passes its integrity check
(speechbed.features.integrity) is skipped; a damaged one is rebuilt; ``--force`` redoes it;
``verify: true`` also reads every chunk of a skipped store and checks its checksum.
The job schema is speechbed.features.compute_job.ComputeFeaturesJob.
"""

from __future__ import annotations

import torch

from speechbed.features.build import build_feature_cache
from speechbed.features.compute_job import ComputeFeaturesJob
from speechbed.step_runner import JobContext, run_jobs_cli


def run(job: ComputeFeaturesJob, context: JobContext) -> None:
    threads = torch.get_num_threads()
    if job.num_threads is not None:
        torch.set_num_threads(job.num_threads)
    try:
        for partition in job.partition_names():
            _compute_partition(job, partition, context.force)
    finally:
        torch.set_num_threads(threads)


def _compute_partition(job: ComputeFeaturesJob, partition: str, force: bool) -> None:
    result = build_feature_cache(
        job.input_path,
        partition,
        job.feature,
        job.output_path,
        device=job.device,
        batch_size=job.batch_size,
        force=force,
        verify=job.verify,
    )
    for leftover in result.removed_partials:
        print(f"{partition}: removed {leftover}, left by a process that died")
    if result.skipped:
        checked = f", {result.verified_chunks} chunks verified" if job.verify else ""
        print(
            f"{partition}: {result.path} is up to date (same settings and manifest{checked}), "
            "skipped"
        )
        return
    damaged = f"damaged ({result.damage}), rebuilt: " if result.damage else ""
    print(
        f"{partition}: {damaged}{result.num_utterances} utterances, {result.num_frames} frames x "
        f"{result.num_features} -> {result.path} ({result.seconds:.1f} s)"
    )


if __name__ == "__main__":
    raise SystemExit(run_jobs_cli(ComputeFeaturesJob, run, __doc__))
