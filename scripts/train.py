"""Train the model of a run config's task (ctc_phones: a CTC acoustic model, linear or Mellin CNN + RNN).

Input: a run YAML (task, info, data, model, training, evaluation) whose data section points at
feature caches. Output, under info.run_dir: hist.csv, TensorBoard events, checkpoints/ and
model.pt (the best epoch by the task's dev metric, dev PER for ctc_phones). A killed run
restarted with the same command continues from its last complete epoch; a finished run is
skipped unless --force; a run trained on feature stores that have changed since is moved aside
(<run_dir>.stale-<time>) and trained again. A second trainer of the same run waits for the
first, then finds it trained.
"""

from speechbed.step_runner import JobContext, run_jobs_cli
from speechbed.training.loop import TrainingJob, train_run


def run(job: TrainingJob, context: JobContext) -> None:
    train_run(job, force=context.force, keep=[context.source])


if __name__ == "__main__":
    raise SystemExit(run_jobs_cli(TrainingJob, run, __doc__))
