"""Score a trained run with its task (ctc_phones: decode dev and test, PER on 39 phones).

Input: the run YAML that scripts/train.py trained (its evaluation section picks the beam width
and partitions). Output, under info.run_dir: results.json (for ctc_phones: PER with its counts,
beam width, epoch, decoding time) and the task's files (ctc_phones: <dev|test>.hyp.trn and
.ref.trn, 39 phones, ``phones (utt_id)``). A run whose results match its model, its settings
and the feature stores (results.json records their fingerprints as data_fingerprints) is
skipped unless --force; a model trained on a dev store that has changed since is refused
(train it again).
"""

from speechbed.step_runner import JobContext, run_jobs_cli
from speechbed.training.evaluation import EvaluationJob, evaluate_run


def run(job: EvaluationJob, context: JobContext) -> None:
    evaluate_run(job, force=context.force)


if __name__ == "__main__":
    raise SystemExit(run_jobs_cli(EvaluationJob, run, __doc__))
