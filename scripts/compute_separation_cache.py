"""Computes the separation cache: per partition, the STFT magnitudes of mixtures and sources.

Reads the mixture manifests written by scripts/prep_mixtures.py (``input_path``) and writes one
verified zarr store per partition, ``<output_path>/<partition>.zarr`` (layout in
speechbed.features.separation_store). A store whose settings and manifest are unchanged and
that passes its integrity check is skipped; a damaged one is rebuilt; ``--force`` redoes it.
The job schema is speechbed.features.separation_job.ComputeSeparationCacheJob.
"""

from __future__ import annotations

import torch

from speechbed.features.separation_job import ComputeSeparationCacheJob
from speechbed.features.separation_store import build_separation_store
from speechbed.step_runner import JobContext, run_jobs_cli


def run(job: ComputeSeparationCacheJob, context: JobContext) -> None:
    threads = torch.get_num_threads()
    if job.num_threads is not None:
        torch.set_num_threads(job.num_threads)
    try:
        for partition in job.partitions:
            _compute_partition(job, partition, context.force)
    finally:
        torch.set_num_threads(threads)


def _compute_partition(job: ComputeSeparationCacheJob, partition: str, force: bool) -> None:
    result = build_separation_store(
        job.input_path, partition, job.stft, job.output_path, force=force, verify=job.verify
    )
    for leftover in result.removed_partials:
        print(f"{partition}: removed {leftover}, left by a process that died")
    if result.skipped:
        print(f"{partition}: {result.path} is up to date, skipped")
        return
    damaged = f"damaged ({result.damage}), rebuilt: " if result.damage else ""
    print(
        f"{partition}: {damaged}{result.num_utterances} mixtures, {result.num_frames} frames "
        f"x {result.num_features} columns -> {result.path} ({result.seconds:.1f} s)"
    )


if __name__ == "__main__":
    raise SystemExit(run_jobs_cli(ComputeSeparationCacheJob, run, __doc__))
