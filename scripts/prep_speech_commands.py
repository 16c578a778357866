"""Prepare Speech Commands (real v2 or synthetic): keyword-spotting manifests per partition.

Reads input_path (word folders, validation_list.txt, testing_list.txt, _background_noise_/)
and writes output_path/{train,dev,test}.jsonl (keywords, unknown, silence), noise.jsonl (the
training noise for augmentation) and classes.txt. Skipped when the corpus and settings are
unchanged.
"""

from pathlib import Path
from typing import ClassVar

import pydantic
from pydantic import Field

from speechbed.code_versions import CODE_VERSIONS
from speechbed.corpora.speech_commands import KEYWORDS, WORDS_V2, prepare_speech_commands
from speechbed.jobs import JobSchema, input_path, output_path
from speechbed.step_runner import JobContext, run_jobs_cli


class PrepSpeechCommandsJob(JobSchema):
    code_versions: ClassVar[dict[str, int]] = {
        "prep_speech_commands": CODE_VERSIONS["prep_speech_commands"]
    }

    input_path: Path = input_path(description="Speech Commands v2 root (one folder per word)")
    output_path: Path = output_path(
        description="manifest folder: receives <partition>.jsonl, noise.jsonl, classes.txt"
    )
    keywords: list[str] = Field(
        default=list(KEYWORDS),
        min_length=1,
        description=f"the keyword classes, words of v2 ({' '.join(WORDS_V2)})",
    )
    silence_proportion: float = Field(
        0.1, ge=0.0, le=10.0, description="silence clips per keyword clip of a partition"
    )
    unknown_proportion: float = Field(
        0.1, ge=0.0, le=10.0, description="unknown clips (other words) per keyword clip"
    )
    seed: int = Field(0, description="seed of the unknown and silence draws")

    @pydantic.field_validator("keywords")
    @classmethod
    def _words_of_v2(cls, value: list[str]) -> list[str]:
        unknown = [word for word in value if word not in WORDS_V2]
        if unknown or len(set(value)) != len(value):
            raise ValueError(
                f"need distinct words of Speech Commands v2; {unknown or 'repeated words'}"
            )
        return value


def run(job: PrepSpeechCommandsJob, context: JobContext) -> None:
    counts = prepare_speech_commands(
        job.input_path,
        job.output_path,
        job.keywords,
        job.silence_proportion,
        job.unknown_proportion,
        job.seed,
        force=context.force,
    )
    if counts is None:
        print(f"{job.output_path} is up to date with {job.input_path}; skipped")
        return
    for partition, by_class in counts.items():
        print(
            f"{partition}: {sum(by_class.values())} clips ({', '.join(f'{k} {v}' for k, v in by_class.items())})"
        )


if __name__ == "__main__":
    raise SystemExit(run_jobs_cli(PrepSpeechCommandsJob, run, __doc__))
