"""Computes a feature cache (fbank-81-10ms, sigbank-41-2ms, raw, or explicit settings) per partition.

Reads the manifests written by scripts/prep_timit.py (``input_path``) and writes one zarr v3
store per partition, ``<output_path>/<partition>.zarr`` (layout in speechbed.features.cache).
A store whose feature settings and manifest are unchanged is skipped; ``--force`` redoes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic
import torch
from pydantic import Field

from speechbed.errors import UserInputError
from speechbed.features.build import build_feature_cache, manifest_partitions
from speechbed.features.settings import (
    NAMED_FEATURES,
    FbankSettings,
    RawSettings,
    SigbankSettings,
    resolve_feature,
)
from speechbed.jobs import JobContext, JobSchema, run_jobs_cli

_EXPLICIT_KEYS = "; ".join(
    f"kind: {model.model_fields['kind'].default} with {', '.join(sorted(set(model.model_fields) - {'kind'}))}"
    for model in (FbankSettings, SigbankSettings, RawSettings)
)


class ComputeFeaturesJob(JobSchema):
    input_path: Path = Field(description="manifest folder (written by scripts/prep_timit.py)")
    output_path: Path = Field(description="folder that receives <partition>.zarr")
    feature: str | dict[str, Any] = Field(
        description=f"a feature name ({', '.join(NAMED_FEATURES)}) or a mapping of explicit "
        f"settings: {_EXPLICIT_KEYS}"
    )
    partitions: list[str] | None = Field(
        None, description="partitions to compute (default: every manifest in input_path)"
    )
    device: Literal["cpu", "cuda"] = Field("cpu", description="where the features are computed")
    batch_size: int = Field(16, ge=1, description="utterances computed together")
    num_threads: int | None = Field(
        1,
        ge=1,
        description="torch CPU threads; 1 is fastest for the small FFT blocks, and pipelines "
        "run several caches at once (null: torch's choice)",
    )

    @pydantic.field_validator("feature")
    @classmethod
    def _known_feature(cls, value: str | dict[str, Any]) -> str | dict[str, Any]:
        try:
            resolve_feature(value)
        except UserInputError as error:
            raise ValueError(str(error)) from None
        return value


def run(job: ComputeFeaturesJob, context: JobContext) -> None:
    threads = torch.get_num_threads()
    if job.num_threads is not None:
        torch.set_num_threads(job.num_threads)
    try:
        for partition in job.partitions or manifest_partitions(job.input_path):
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
    )
    if result.skipped:
        print(f"{partition}: {result.path} is up to date (same settings and manifest), skipped")
    else:
        print(
            f"{partition}: {result.num_utterances} utterances, {result.num_frames} frames x "
            f"{result.num_features} -> {result.path} ({result.seconds:.1f} s)"
        )


if __name__ == "__main__":
    raise SystemExit(run_jobs_cli(ComputeFeaturesJob, run, __doc__))
