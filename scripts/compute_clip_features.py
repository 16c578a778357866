"""Computes a keyword-spotting feature store (mfcc, melspec, spectrogram, raw) per partition.

Reads the clip manifests of scripts/prep_speech_commands.py (``input_path``) and writes
``<output_path>/<partition>.zarr`` (the feature-store layout of speechbed.features.cache; one
clip per entry, its class as its one token). Up-to-date stores are skipped, damaged ones
rebuilt; ``--force`` redoes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import pydantic
import torch
from pydantic import Field

from speechbed.code_versions import CODE_VERSIONS
from speechbed.errors import UserInputError
from speechbed.features.clip_build import build_clip_store
from speechbed.features.clip_settings import NAMED_CLIP_FEATURES, resolve_clip_feature
from speechbed.jobs import JobSchema
from speechbed.step_runner import JobContext, run_jobs_cli


class ComputeClipFeaturesJob(JobSchema):
    code_versions: ClassVar[dict[str, int]] = {"clip_features": CODE_VERSIONS["clip_features"]}

    input_path: Path = Field(description="clip manifest folder (scripts/prep_speech_commands.py)")
    partitions: list[str] = Field(
        ["train", "dev", "test"],
        min_length=1,
        description="manifests to compute (noise: the training noise)",
    )
    feature: str | dict[str, Any] = Field(
        description=f"a clip feature name ({', '.join(NAMED_CLIP_FEATURES)}) or explicit settings with 'kind'"
    )
    output_path: Path = Field(description="folder that receives <partition>.zarr")
    device: Literal["cpu", "cuda"] = Field("cpu", description="where the features are computed")
    batch_size: int = Field(64, ge=1, description="clips computed together")
    num_threads: int | None = Field(1, ge=1, description="torch CPU threads (null: torch's choice)")

    @pydantic.field_validator("feature")
    @classmethod
    def _known_feature(cls, value: str | dict[str, Any]) -> str | dict[str, Any]:
        try:
            resolve_clip_feature(value)
        except UserInputError as error:
            raise ValueError(str(error)) from None
        return value

    def lineage_paths(self) -> tuple[list[Path], list[Path]]:
        inputs = [self.input_path / f"{p}.jsonl" for p in self.partitions] + [
            self.input_path / "classes.txt"
        ]
        return inputs, [self.output_path / f"{p}.zarr" for p in self.partitions]


def run(job: ComputeClipFeaturesJob, context: JobContext) -> None:
    if job.num_threads is not None:
        torch.set_num_threads(job.num_threads)
    for partition in job.partitions:
        result = build_clip_store(
            job.input_path,
            partition,
            job.feature,
            job.output_path,
            job.device,
            job.batch_size,
            context.force,
        )
        if result.skipped:
            print(f"{partition}: {result.path} is up to date, skipped")
        else:
            damaged = f"damaged ({result.damage}), rebuilt: " if result.damage else ""
            print(
                f"{partition}: {damaged}{result.num_clips} clips -> {result.path} ({result.seconds:.1f} s)"
            )


if __name__ == "__main__":
    raise SystemExit(run_jobs_cli(ComputeClipFeaturesJob, run, __doc__))
