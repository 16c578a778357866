"""Write a speech recognition manifest's utterances as WebDataset tar shards (.flac + .txt).

Reads the manifests (JSON, speechbed.corpora.asr_manifest) and their audio; writes
output_path/shards-000000.tar, ... and shards.json. Each shard is written atomically; an
interrupted job resumes at the first missing shard; --force rewrites them all.
"""

from speechbed.corpora.shards import WriteShardsJob, run_write_shards_job
from speechbed.step_runner import JobContext, run_jobs_cli


def run(job: WriteShardsJob, context: JobContext) -> None:
    summary = run_write_shards_job(job, force=context.force)
    print(
        f"write_shards: {summary.utterances} utterances in {summary.shards} shard(s), "
        f"{summary.written} written now: {summary.pattern}"
    )


if __name__ == "__main__":
    raise SystemExit(run_jobs_cli(WriteShardsJob, run, __doc__))
