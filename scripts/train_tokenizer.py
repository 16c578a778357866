"""Train the RNN-T recipe's sentencepiece tokenizer on a training partition's transcripts.

Reads the manifests (JSON, speechbed.corpora.asr_manifest) and writes output_path/
{tokenizer.model, tokenizer.vocab, tokenizer.json}; runs copy tokenizer.model. Deterministic
(the same transcripts and settings give the same bytes); skipped while the folder holds a
tokenizer of the same settings and transcripts.
"""

from speechbed.corpora.tokenizer import TrainTokenizerJob, run_tokenizer_job
from speechbed.step_runner import JobContext, run_jobs_cli


def run(job: TrainTokenizerJob, context: JobContext) -> None:
    tokenizer = run_tokenizer_job(job, force=context.force)
    if tokenizer is None:
        print(f"train_tokenizer: {job.output_path} is up to date; skipped")
        return
    print(
        f"train_tokenizer: wrote {job.output_path} ({tokenizer.vocab_size} {job.model_type} pieces)"
    )


if __name__ == "__main__":
    raise SystemExit(run_jobs_cli(TrainTokenizerJob, run, __doc__))
