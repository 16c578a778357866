"""Computes a feature cache (fbank-81-10ms, sigbank-41-2ms, raw, or explicit settings) per partition.

Reads the manifests written by scripts/prep_timit.py (``input_path``) and writes one zarr v3
store per partition, ``<output_path>/<partition>.zarr`` (layout in speechbed.features.cache).
A store whose feature settings and manifest are unchanged and that passes its integrity check
(speechbed.features.integrity) is skipped; a damaged one is rebuilt; ``--force`` redoes it;
``verify: true`` also reads every chunk of a skipped store and checks its checksum.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import pydantic
import torch
from pydantic import Field

from speechbed.corpora.manifest import manifest_path
from speechbed.errors import UserInputError
from speechbed.features.build import build_feature_cache, manifest_partitions, store_path
from speechbed.features.settings import (
    FEATURE_CODE_VERSION,
    NAMED_FEATURES,
    FbankSettings,
    RawSettings,
    SigbankSettings,
    resolve_feature,
)
from speechbed.jobs import JobSchema
from speechbed.step_runner import JobContext, run_jobs_cli

_EXPLICIT_KEYS = "; ".join(
    f"kind: {model.model_fields['kind'].default} with {', '.join(sorted(set(model.model_fields) - {'kind'}))}"
    for model in (FbankSettings, SigbankSettings, RawSettings)
)


class ComputeFeaturesJob(JobSchema):
    code_versions: ClassVar[dict[str, int]] = {"features": FEATURE_CODE_VERSION}

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
    verify: bool = Field(
        False,
        description="also read every chunk of an up-to-date store and check its checksum "
        "(opening always checks that every chunk is there with its size); a damaged store "
        "is rebuilt",
    )

    @pydantic.field_validator("feature")
    @classmethod
    def _known_feature(cls, value: str | dict[str, Any]) -> str | dict[str, Any]:
        try:
            resolve_feature(value)
        except UserInputError as error:
            raise ValueError(str(error)) from None
        return value

    def partition_names(self) -> list[str]:
        """The partitions this job computes: ``partitions``, or every manifest in input_path."""
        return self.partitions or manifest_partitions(self.input_path)

    def lineage_paths(self) -> tuple[list[Path], list[Path]]:
        """Inputs: the partitions' manifests; outputs: their ``<output_path>/<partition>.zarr``."""
        partitions = self.partition_names()
        return (
            [manifest_path(self.input_path, partition) for partition in partitions],
            [store_path(self.output_path, partition) for partition in partitions],
        )


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
