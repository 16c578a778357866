"""Prepare a LibriSpeech-layout corpus (real or synthetic): 16 kHz WAV and JSON manifests.

Reads input_path/<subset>/<speaker>/<chapter>/*.flac with their .trans.txt and writes
output_path/<subset>/<speaker>/<chapter>/<utterance>.wav and output_path/<subset>.json (the
Myrtle/MLPerf RNN-T manifest format, file names relative to output_path), converting in
parallel. WAV files
already there are kept, so a killed run continues where it stopped.
"""

from speechbed.corpora.librispeech import PrepLibriSpeechJob, prepare_librispeech
from speechbed.step_runner import JobContext, run_jobs_cli


def run(job: PrepLibriSpeechJob, context: JobContext) -> None:
    summaries = prepare_librispeech(job, force=context.force)
    for subset, summary in summaries.items():
        print(f"prep_librispeech: {summary.describe(subset)}")
    print(f"prep_librispeech: wrote {len(summaries)} manifest(s) in {job.output_path}")


if __name__ == "__main__":
    raise SystemExit(run_jobs_cli(PrepLibriSpeechJob, run, __doc__))
