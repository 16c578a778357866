"""Make two-speaker mixtures of the synthetic TIMIT (wsj0-2mix layout, deterministic per seed).

Reads the prepared corpus's manifests (scripts/prep_timit.py) and writes
output_path/wav<k>k/max/{tr,cv,tt}/{mix,s1,s2[,noise]}/*.wav (speechbed.corpora.synthetic_mixtures);
scripts/prep_mixtures.py then reads it with ``layout: wsj0_2mix``. Skipped when the output
already holds the same settings and manifests.
"""

from pathlib import Path
from typing import ClassVar, Literal

import pydantic
from pydantic import Field

from speechbed.code_versions import CODE_VERSIONS
from speechbed.corpora.synthetic_mixtures import SCALES, MixingSettings, make_mixtures
from speechbed.jobs import JobSchema, input_path, output_path
from speechbed.step_runner import JobContext, run_jobs_cli


class MakeMixturesJob(JobSchema):
    code_versions: ClassVar[dict[str, int]] = {
        "separation_mixtures": CODE_VERSIONS["separation_mixtures"]
    }

    input_path: Path = input_path(
        description="manifest folder of the synthetic TIMIT (train/dev/test.jsonl)"
    )
    output_path: Path = output_path(description="root of the mixtures (wsj0-2mix layout)")
    scale: Literal["tiny", "small"] = Field(
        "tiny",
        description="mixtures per partition: "
        + "; ".join(
            f"{name} = " + ", ".join(f"{n} {p}" for p, n in counts.items())
            for name, counts in SCALES.items()
        ),
    )
    seed: int = Field(0, description="the same seed gives the same mixtures, byte for byte")
    sample_rate: Literal[8000, 16000] = Field(8000, description="sample rate of the mixtures (Hz)")
    relative_level_db: tuple[float, float] = Field(
        (-5.0, 5.0), description="range of the second speaker's level over the first's (dB)"
    )
    max_offset_seconds: float = Field(
        0.5, ge=0.0, description="the second speaker starts up to this late (seconds)"
    )
    noise_snr_db: tuple[float, float] | None = Field(
        None, description="range of the speech-to-white-noise ratio (dB); null: no noise"
    )

    @pydantic.field_validator("relative_level_db", "noise_snr_db")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and value[0] > value[1]:
            raise ValueError(f"[{value[0]}, {value[1]}]: the low end comes first")
        return value


def run(job: MakeMixturesJob, context: JobContext) -> None:
    settings = MixingSettings(
        scale=job.scale,
        seed=job.seed,
        sample_rate=job.sample_rate,
        relative_level_db=job.relative_level_db,
        max_offset_seconds=job.max_offset_seconds,
        noise_snr_db=job.noise_snr_db,
    )
    if make_mixtures(job.input_path, job.output_path, settings, force=context.force) is None:
        print(f"make_mixtures: {job.output_path} already holds these mixtures; skipped")
        return
    counts = ", ".join(f"{n} {p}" for p, n in SCALES[job.scale].items())
    print(f"make_mixtures: wrote {job.output_path} (up to {counts} mixtures)")


if __name__ == "__main__":
    raise SystemExit(run_jobs_cli(MakeMixturesJob, run, __doc__))
