"""Prepare a Common Voice language folder: 16 kHz WAV and JSON manifests per split.

Reads input_path/{train,dev,test}.tsv and the MP3 clips they list in input_path/clips/, and
writes output_path/<split>/<xx>/<clip>.wav (256 folders <xx>) and output_path/<split>.json
(the Myrtle/MLPerf RNN-T manifest format, file names relative to output_path), converting in
parallel. WAV files
already there are kept, so a killed run continues where it stopped.
"""

from speechbed.corpora.commonvoice import PrepCommonVoiceJob, prepare_commonvoice
from speechbed.step_runner import JobContext, run_jobs_cli


def run(job: PrepCommonVoiceJob, context: JobContext) -> None:
    summaries = prepare_commonvoice(job, force=context.force)
    for split, summary in summaries.items():
        print(f"prep_commonvoice: {summary.describe(split)}")
    print(f"prep_commonvoice: wrote {len(summaries)} manifest(s) in {job.output_path}")


if __name__ == "__main__":
    raise SystemExit(run_jobs_cli(PrepCommonVoiceJob, run, __doc__))
