"""Prepare a two-speaker mixture corpus (wsj0-2mix or Libri2Mix layout) as mixture manifests.

Reads input_path (the layout's root) and writes output_path/{train,dev,test}.jsonl, one
(mixture, sources) tuple per line (speechbed.corpora.mixtures); the separation cache
(scripts/compute_separation_cache.py) reads them.
"""

from pathlib import Path
from typing import Literal

from pydantic import Field

from speechbed.corpora.libri2mix import TRAIN_SPLITS, prepare_libri2mix
from speechbed.corpora.wsj0_2mix import prepare_wsj0_2mix
from speechbed.jobs import JobSchema, input_path, output_path
from speechbed.step_runner import JobContext, run_jobs_cli


class PrepMixturesJob(JobSchema):
    layout: Literal["wsj0_2mix", "libri2mix"] = Field(
        description="wsj0_2mix: wav<k>k/<mode>/{tr,cv,tt}/{mix,s1,s2}; libri2mix: "
        "wav<k>k/<mode>/{train-100,train-360,dev,test}/{mix_clean,mix_both,s1,s2,noise}"
    )
    input_path: Path = input_path(description="the layout's root (holding wav8k/ or wav16k/)")
    output_path: Path = output_path(description="manifest folder: receives <partition>.jsonl")
    sample_rate: Literal[8000, 16000] = Field(8000, description="wav8k or wav16k (Hz)")
    mode: Literal["min", "max"] = Field(
        "min", description="min: mixtures end with the shorter source; max: with the longer"
    )
    mixture: Literal["mix_clean", "mix_both"] = Field(
        "mix_clean", description="libri2mix only: the clean mixtures or those with noise"
    )
    train_splits: list[str] = Field(
        ["train-100"],
        description=f"libri2mix only: training splits gathered into train ({', '.join(TRAIN_SPLITS)})",
    )


def run(job: PrepMixturesJob, context: JobContext) -> None:
    if job.layout == "wsj0_2mix":
        counts = prepare_wsj0_2mix(job.input_path, job.output_path, job.sample_rate, job.mode)
    else:
        counts = prepare_libri2mix(
            job.input_path,
            job.output_path,
            job.sample_rate,
            job.mode,
            job.mixture,
            job.train_splits,
        )
    summary = ", ".join(f"{partition} {count}" for partition, count in counts.items())
    print(f"prep_mixtures: wrote {job.output_path} ({summary} mixtures)")


if __name__ == "__main__":
    raise SystemExit(run_jobs_cli(PrepMixturesJob, run, __doc__))
