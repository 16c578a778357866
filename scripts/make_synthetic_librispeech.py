"""Make the synthetic LibriSpeech: grammar sentences spoken by eSpeak NG voices in LibriSpeech's layout.

Writes output_path/{train-clean-100,dev-clean,test-clean}/<speaker>/<chapter>/ with FLAC
files (16 kHz) and .trans.txt transcripts, plus SPEAKERS.TXT and CHAPTERS.TXT;
scripts/prep_librispeech.py reads it like the real corpus. Deterministic per scale and seed;
skipped when complete; a killed run continues where it stopped.
"""

from speechbed.corpora.synthetic_librispeech import (
    MakeSyntheticLibriSpeechJob,
    make_synthetic_librispeech,
)
from speechbed.step_runner import JobContext, run_jobs_cli


def run(job: MakeSyntheticLibriSpeechJob, context: JobContext) -> None:
    summary = make_synthetic_librispeech(
        job.output_path, job.scale, job.seed, job.workers, force=context.force
    )
    if summary is None:
        print(
            f"make_synthetic_librispeech: {job.output_path} already holds scale {job.scale}, "
            f"seed {job.seed}; skipped"
        )
        return
    subsets = ", ".join(
        f"{name} {s['utterances']} utterances ({s['speakers']} speakers, {s['hours']} h)"
        for name, s in summary["subsets"].items()
    )
    print(
        f"make_synthetic_librispeech: wrote {job.output_path}: {subsets}; "
        f"{summary['vocabulary']} words"
    )


if __name__ == "__main__":
    raise SystemExit(run_jobs_cli(MakeSyntheticLibriSpeechJob, run, __doc__))
