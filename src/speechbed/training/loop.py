"""Training a run for any task: skip, resume, refuse or move aside a run folder, then train it.

``scripts/train.py`` calls ``train_run``; the run config's ``task`` picks the recipe
(speechbed.training.task). A killed run restarted with the same config continues from its
last complete epoch and ends with the parameters an uninterrupted run would have. A run
trained on other data (or by other training code) is moved aside and trained afresh (see
speechbed.training.run_lineage); a run of other settings is refused.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from speechbed.errors import UserInputError
from speechbed.lineage import FINGERPRINT_FILE
from speechbed.outputs import make_folder
from speechbed.run_folder import RunFolder
from speechbed.training.checkpoints import CheckpointStore, remove_dead_leftovers
from speechbed.training.config import RunConfig
from speechbed.training.distributed import ProcessGroup, idle_gpus_note, join_process_group
from speechbed.training.model_file import load_model_record, mark_trained, save_model_record
from speechbed.training.run_lineage import TRAINING_CODE_VERSION, RunIdentity, move_run_aside
from speechbed.training.task import make_task
from speechbed.training.trainer import Trainer, resolve_device

#: What a rank-0 action returns.
T = TypeVar("T")


class TrainingJob(RunConfig):
    """The run config as the job of scripts/train.py: reads the train and dev stores and the
    task's other training inputs (``training_inputs``), writes the run.

    Its outputs are the run folder (whose lock, ``.<run_dir name>.lock`` beside it, makes a
    second trainer of the same run wait, then find it trained) and ``model.pt``.
    """

    code_versions: ClassVar[dict[str, int]] = {"training": TRAINING_CODE_VERSION}

    def lineage_paths(self) -> tuple[list[Path], list[Path]]:
        data, run = self.data, RunFolder(Path(self.info.run_dir))
        stores = [data.source(data.train_partition), data.source(data.dev_partition)]
        return [*stores, *self.training_inputs().values()], [run.path, run.model]


@dataclass(frozen=True)
class TrainingSummary:
    """What a finished (or skipped) run reports: the best epoch and its dev metric."""

    best_epoch: int
    best_dev_per: float
    epochs_run: int
    skipped: bool


def training_fingerprint(config: RunConfig) -> str:
    """What a run's parameters depend on: its settings, its train/dev stores and the code."""
    return RunIdentity.of(config).fingerprint


def _clear_run(run: RunFolder) -> None:
    shutil.rmtree(run.checkpoints, ignore_errors=True)
    shutil.rmtree(run.tensorboard, ignore_errors=True)
    for path in (run.model, run.history, run.path / FINGERPRINT_FILE):
        path.unlink(missing_ok=True)


def _prepare_run(
    config: RunConfig, identity: RunIdentity, force: bool, keep: Iterable[Path]
) -> TrainingSummary | None:
    """Make the run folder ready to train in (rank 0 alone): the summary of a run found
    trained (skipped), else None. Refuses other settings, moves stale runs aside."""
    run = RunFolder(Path(config.info.run_dir))
    make_folder(run.path)
    store = CheckpointStore(run)
    if force:
        _clear_run(run)
    saved, state = load_model_record(run.model), store.latest()
    differences = [
        difference
        for recorded in (saved, state)
        if recorded is not None and (difference := identity.difference(recorded, config))
    ]
    if any(other_settings for other_settings, _ in differences):
        raise UserInputError(
            f"info.run_dir {run.path} holds a run trained with other settings; "
            "use another run_dir, or --force to start this run over"
        )
    if differences:
        stale = move_run_aside(run.path, keep)
        print(f"{run.path}: {differences[0][1]}; moved it to {stale.name}; training afresh")
        saved = None
    if saved is not None:
        if not (run.path / FINGERPRINT_FILE).is_file():
            mark_trained(run, identity)
        print(f"{run.path}: already trained (best epoch {saved['epoch']}); skipped")
        metric = make_task(config).metric
        return TrainingSummary(saved["epoch"], saved[metric], 0, skipped=True)
    (run.path / FINGERPRINT_FILE).unlink(missing_ok=True)  # not trained until model.pt is saved
    remove_dead_leftovers(run.path)
    remove_dead_leftovers(run.checkpoints)
    return None


def _on_rank_zero(group: ProcessGroup, config: RunConfig, doing: str, action: Callable[[], T]) -> T:
    """``action()`` on rank 0, its outcome shared: the other ranks get its value, or stop
    with an error when it failed (instead of waiting for a rank that will never go on)."""
    if not group.writes:
        done, value = group.share(None)
        if not done:
            raise UserInputError(
                f"{config.info.name}: rank 0 could not {doing} (see its error); rank "
                f"{group.rank} stops"
            )
        return value
    try:
        value = action()
    except BaseException:
        group.share((False, None))
        raise
    group.share((True, value))
    return value


def train_run(
    config: RunConfig,
    force: bool = False,
    progress: bool = True,
    keep: Iterable[Path] = (),
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainingSummary:
    """Train (or continue training) the run described by ``config`` and save its best model.

    A run folder trained on other data or by other training code is moved aside (the files
    of ``keep`` in it, such as its job file, are copied back) and the run starts afresh.
    ``on_epoch`` receives each trained epoch's ``hist.csv`` row (the search's pruning hook).
    Started as several processes (``WORLD_SIZE`` > 1, speechbed.training.distributed), the
    ranks train it together and rank 0 alone prepares the folder and writes.
    """
    run = RunFolder(Path(config.info.run_dir))
    task = make_task(config)
    device = resolve_device(config.training.device)
    group = join_process_group(device)
    if group.writes and (note := idle_gpus_note(device, group, torch.cuda.device_count())):
        print(f"{config.info.name}: {note}", flush=True)
    identity = RunIdentity.of(config)
    skipped = _on_rank_zero(
        group, config, "prepare the run", lambda: _prepare_run(config, identity, force, keep)
    )
    if skipped is not None:
        return skipped
    store = CheckpointStore(run)
    state = store.latest()
    trainer = Trainer(config, task, run, identity.record(), progress, on_epoch, group)
    if state is not None:
        trainer.resume(state)
        if group.writes:
            print(f"{run.path}: resuming after epoch {state['epoch']}")
    trainer.fit()
    best = trainer.best_epoch()
    value = trainer.history[best - 1][task.metric]
    summary = TrainingSummary(best, value, len(trainer.history), skipped=False)

    def save() -> None:
        save_model_record(
            run,
            trainer.best_weights(store.load(best)),
            trainer.model_description,
            {"epoch": best, task.metric: value, **identity.record(), "run_name": config.info.name},
        )
        mark_trained(run, identity)
        print(f"{config.info.name}: best epoch {best}, {task.describe_metric(value)}")

    # the other ranks end once model.pt is written, or fail with rank 0
    _on_rank_zero(group, config, "save the model", save)
    group.leave()
    return summary
