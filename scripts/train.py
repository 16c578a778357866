"""Train a CTC acoustic model (linear or Mellin CNN + RNN) as a run config describes.

Input: a run YAML (info, data, model, training, evaluation) whose data section points at
feature caches. Output, under info.run_dir: hist.csv, TensorBoard events, checkpoints/ and
model.pt (the best epoch by dev PER). A killed run restarted with the same command continues
from its last complete epoch; a finished run is skipped unless --force.
"""

from speechbed.jobs import JobContext, run_jobs_cli
from speechbed.training.config import RunConfig
from speechbed.training.loop import train_run


def run(job: RunConfig, context: JobContext) -> None:
    train_run(job, force=context.force)


if __name__ == "__main__":
    raise SystemExit(run_jobs_cli(RunConfig, run, __doc__))
