"""Make the synthetic Speech Commands: the 35 words of v2 spoken by eSpeak NG voices, v2 layout.

Writes output_path/<word>/<speaker>_nohash_<n>.wav (1 s, 16 kHz), _background_noise_/,
validation_list.txt and testing_list.txt; scripts/prep_speech_commands.py reads it like the
real corpus. Skipped when it already exists with the same scale and seed; a killed run
resumes where it stopped.
"""

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from speechbed.code_versions import CODE_VERSIONS
from speechbed.corpora.synthetic_speech_commands import SCALES, make_synthetic_speech_commands
from speechbed.jobs import JobSchema, output_path
from speechbed.step_runner import JobContext, run_jobs_cli


class MakeSyntheticSpeechCommandsJob(JobSchema):
    code_versions: ClassVar[dict[str, int]] = {
        "synthetic_speech_commands": CODE_VERSIONS["synthetic_speech_commands"]
    }

    output_path: Path = output_path(
        description="corpus root to write (receives one folder per word)"
    )
    scale: str = Field(
        default="tiny",
        pattern="^(" + "|".join(SCALES) + ")$",
        description="speakers (train/dev/test) and keyword repetitions: "
        + "; ".join(
            f"{name} = {s.train_speakers}/{s.dev_speakers}/{s.test_speakers}, "
            f"keywords x{s.keyword_repeats}, noise {s.noise_seconds} s"
            for name, s in SCALES.items()
        ),
    )
    seed: int = Field(default=0, description="the same seed gives the same corpus, byte for byte")


def run(job: MakeSyntheticSpeechCommandsJob, context: JobContext) -> None:
    summary = make_synthetic_speech_commands(
        job.output_path, job.scale, job.seed, force=context.force
    )
    if summary is None:
        print(f"{job.output_path} already holds scale {job.scale}, seed {job.seed}; skipped")
        return
    speakers = ", ".join(f"{count} {name}" for name, count in summary["speakers"].items())
    print(f"wrote {job.output_path}: {summary['clips']} clips, speakers {speakers}")


if __name__ == "__main__":
    raise SystemExit(run_jobs_cli(MakeSyntheticSpeechCommandsJob, run, __doc__))
