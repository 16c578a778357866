"""Settings of the separation cache (STFT of mixtures and sources) and the job that builds it.

Read by scripts/compute_separation_cache.py; the settings are recorded in every store and
rebuilt from it by the separation task (speechbed.tasks.separation). Free of torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from speechbed.code_versions import CODE_VERSIONS
from speechbed.corpora.manifest import manifest_path
from speechbed.jobs import JobSchema
from speechbed.lineage import digest

#: Bump when the separation cache's content changes for the same settings.
SEPARATION_CACHE_VERSION = CODE_VERSIONS["separation_cache"]


class SeparationFeatureSettings(JobSchema):
    """The short-time Fourier transform whose magnitudes the store holds."""

    kind: Literal["separation_stft"] = Field(
        "separation_stft", description="magnitudes of mixture and sources, and their samples"
    )
    sample_rate: int = Field(8000, ge=1000, description="expected sample rate of the audio (Hz)")
    window_ms: float = Field(32.0, gt=0, description="analysis window (and FFT) length, in ms")
    hop_ms: float = Field(8.0, gt=0, description="hop between frames, in ms")
    window: Literal["sqrt_hann", "hann"] = Field(
        "sqrt_hann", description="analysis (and synthesis) window"
    )

    @property
    def window_length(self) -> int:
        return round(self.window_ms * self.sample_rate / 1000)

    @property
    def hop_length(self) -> int:
        return round(self.hop_ms * self.sample_rate / 1000)

    @property
    def num_bins(self) -> int:
        return self.window_length // 2 + 1

    def name(self) -> str:
        """e.g. ``stft-32ms-8ms-8k``: the cache folder's usual name."""
        return f"stft-{self.window_ms:g}ms-{self.hop_ms:g}ms-{self.sample_rate // 1000}k"

    def settings_hash(self) -> str:
        """Digest of the settings and the cache code version (a store of others is rebuilt)."""
        return digest([self.model_dump_json(), f"separation cache {SEPARATION_CACHE_VERSION}"])


class ComputeSeparationCacheJob(JobSchema):
    """The STFT of every mixture of the partitions of one manifest folder, into <partition>.zarr."""

    code_versions: ClassVar[dict[str, int]] = {
        "separation_cache": CODE_VERSIONS["separation_cache"]
    }

    input_path: Path = Field(description="mixture manifest folder (scripts/prep_mixtures.py)")
    partitions: list[str] = Field(
        ["train", "dev", "test"], description="partitions to compute, each <partition>.jsonl"
    )
    output_path: Path = Field(description="folder that receives <partition>.zarr")
    stft: SeparationFeatureSettings = Field(
        default_factory=SeparationFeatureSettings, description="the transform"
    )
    num_threads: int | None = Field(
        1,
        ge=1,
        description="torch CPU threads; 1 is fastest for the small FFTs, above all on busy "
        "cores (null: torch's choice)",
    )
    verify: bool = Field(
        False,
        description="also read every chunk of an up-to-date store and check its checksum; a "
        "damaged store is rebuilt",
    )

    def lineage_paths(self) -> tuple[list[Path], list[Path]]:
        """Inputs: the partitions' manifests; outputs: their ``<output_path>/<partition>.zarr``."""
        return (
            [manifest_path(self.input_path, partition) for partition in self.partitions],
            [self.output_path / f"{partition}.zarr" for partition in self.partitions],
        )
