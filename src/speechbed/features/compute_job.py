"""The job schema of ``build_feature_cache``: which manifests, partitions and feature to compute.

Read by ``scripts/compute_features.py`` (one job per entry of its job file); the sweep builds its
``cache.yml`` from it. Kept free of torch so that the sweep and the pipeline stay light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import pydantic
from pydantic import Field

from speechbed.corpora.manifest import manifest_path
from speechbed.errors import UserInputError
from speechbed.features.settings import (
    FEATURE_CODE_VERSION,
    NAMED_FEATURES,
    FbankSettings,
    RawSettings,
    SigbankSettings,
    resolve_feature,
)
from speechbed.jobs import JobSchema

_EXPLICIT_KEYS = "; ".join(
    f"kind: {model.model_fields['kind'].default} with {', '.join(sorted(set(model.model_fields) - {'kind'}))}"
    for model in (FbankSettings, SigbankSettings, RawSettings)
)


class ComputeFeaturesJob(JobSchema):
    """One feature over the partitions of one manifest folder, each into ``<partition>.zarr``."""

    code_versions: ClassVar[dict[str, int]] = {"features": FEATURE_CODE_VERSION}

    input_path: Path = Field(description="manifest folder (written by scripts/prep_timit.py)")
    partitions: list[str] | None = Field(
        None, description="partitions to compute (default: every manifest in input_path)"
    )
    feature: str | dict[str, Any] = Field(
        description=f"a feature name ({', '.join(NAMED_FEATURES)}) or a mapping of explicit "
        f"settings: {_EXPLICIT_KEYS}"
    )
    output_path: Path = Field(description="folder that receives <partition>.zarr")
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
        # Imported here: the builder needs torch, and this schema is read where torch is not.
        from speechbed.features.build import manifest_partitions

        return self.partitions or manifest_partitions(self.input_path)

    def lineage_paths(self) -> tuple[list[Path], list[Path]]:
        """Inputs: the partitions' manifests; outputs: their ``<output_path>/<partition>.zarr``."""
        from speechbed.features.build import store_path

        partitions = self.partition_names()
        return (
            [manifest_path(self.input_path, partition) for partition in partitions],
            [store_path(self.output_path, partition) for partition in partitions],
        )
