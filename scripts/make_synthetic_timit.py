"""Make the synthetic TIMIT: an LDC-layout corpus spoken by eSpeak NG with sample-accurate alignments.

Writes output_path/{TRAIN,TEST}/DR<n>/<speaker>/<prompt>.{WAV,PHN,WRD,TXT} (SPHERE audio,
16 kHz); scripts/prep_timit.py reads it like the real corpus. Skipped when it already exists
with the same scale and seed; a second writer of the same output waits for the first, then
skips.
"""

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from speechbed.corpora.synthetic import GENERATOR_VERSION, SCALES, make_synthetic_timit
from speechbed.jobs import JobSchema, output_path
from speechbed.step_runner import JobContext, run_jobs_cli


class MakeSyntheticTimitJob(JobSchema):
    code_versions: ClassVar[dict[str, int]] = {"synthetic_timit": GENERATOR_VERSION}

    output_path: Path = output_path(description="corpus root to write (receives TRAIN/ and TEST/)")
    scale: Literal["tiny", "small", "full"] = Field(
        default="tiny",
        description="speakers: "
        + "; ".join(
            f"{name} = {s.train_speakers} train, {s.dev_speakers} dev, {s.core_speakers} core test"
            + (f", {s.other_test_speakers} other test" if s.other_test_speakers else "")
            for name, s in SCALES.items()
        )
        + " (10 sentences each)",
    )
    seed: int = Field(default=0, description="the same seed gives the same corpus, byte for byte")


def run(job: MakeSyntheticTimitJob, context: JobContext) -> None:
    summary = make_synthetic_timit(job.output_path, job.scale, job.seed, force=context.force)
    if summary is None:
        print(
            f"make_synthetic_timit: {job.output_path} already holds scale {job.scale}, "
            f"seed {job.seed}; skipped"
        )
        return
    speakers = ", ".join(f"{count} {split}" for split, count in summary["speakers"].items())
    print(
        f"make_synthetic_timit: wrote {job.output_path}: {summary['utterances']} utterances, "
        f"{summary['hours']} h, speakers {speakers}"
    )


if __name__ == "__main__":
    raise SystemExit(run_jobs_cli(MakeSyntheticTimitJob, run, __doc__))
