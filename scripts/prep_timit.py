"""Prepare TIMIT (real or synthetic, LDC layout): standard partitions as JSON Lines manifests.

Reads input_path (the LDC root: TRAIN/ and TEST/, names in either case) and writes
output_path/{train,dev,test}.jsonl plus tokens_48.txt. Skipped when the corpus is unchanged;
a second writer of the same output folder waits for the first, then skips.
"""

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from speechbed.corpora.timit import PREP_VERSION, TIMIT_COUNTS, prepare_timit
from speechbed.jobs import JobSchema, input_path, output_path
from speechbed.step_runner import JobContext, run_jobs_cli


class PrepTimitJob(JobSchema):
    code_versions: ClassVar[dict[str, int]] = {"prep_timit": PREP_VERSION}

    input_path: Path = input_path(description="LDC TIMIT root (the folder holding TRAIN and TEST)")
    output_path: Path = output_path(
        description="manifest folder: receives <partition>.jsonl, tokens_48.txt"
    )
    strict: bool = Field(
        default=False,
        description="assert the real corpus's counts (train/dev/test = "
        + "/".join(str(count) for count in TIMIT_COUNTS.values())
        + "); false checks the structure only",
    )


def run(job: PrepTimitJob, context: JobContext) -> None:
    counts = prepare_timit(job.input_path, job.output_path, strict=job.strict, force=context.force)
    if counts is None:
        print(f"prep_timit: {job.output_path} is up to date with {job.input_path}; skipped")
        return
    summary = ", ".join(f"{name} {count}" for name, count in counts.items())
    print(f"prep_timit: wrote {job.output_path} ({summary} utterances)")


if __name__ == "__main__":
    raise SystemExit(run_jobs_cli(PrepTimitJob, run, __doc__))
