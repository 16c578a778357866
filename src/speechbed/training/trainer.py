"""The one training loop: epochs over a task's batches, dev metric, LR schedule, early stopping.

Built and run by speechbed.training.loop.train_run for every task (speechbed.training.task):
the task supplies batches, model, loss and dev metric; small collaborators keep the rest
(``GradientStep``, ``LearningRateSchedule``, ``WeightAverage``, ``EarlyStopping``,
``RunLog``, ``Checkpointer`` and its ``RetentionPolicy``).
"""

from __future__ import annotations

import math
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from speechbed.errors import UserInputError
from speechbed.run_folder import RunFolder
from speechbed.training.checkpoints import (
    Checkpointer,
    CheckpointStore,
    GeneratorState,
    GlobalRandomStates,
    RetentionPolicy,
)
from speechbed.training.config import RunConfig
from speechbed.training.distributed import (
    ALONE,
    RANK_SEED_STRIDE,
    ProcessGroup,
    RankRandomStates,
    rank_loader,
    splits_across_ranks,
    steps_per_epoch,
)
from speechbed.training.ema import WeightAverage
from speechbed.training.optimization import (
    GradientStep,
    NonFiniteGradients,
    StepOutcome,
    make_optimizer,
)
from speechbed.training.run_log import RunLog, best_epoch
from speechbed.training.schedules import make_schedule
from speechbed.training.stopping import EarlyStopping
from speechbed.training.task import Task

#: The exit status of a run stopped by SIGUSR1 (EX_TEMPFAIL: start it again to resume).
STOPPED_EXIT_CODE = 75


class TrainingDiverged(UserInputError):
    """The gradients of an optimiser step became infinite or NaN (without mixed precision).

    The run stops before that step: its newest checkpoint is the last complete epoch's, and
    its weights are still finite. Started again with the same settings it would diverge
    again; a lower learning rate, ``training.max_grad_norm`` or another seed change the
    settings, so ``--force`` (or another run_dir) starts it over.
    """

    def __init__(self, run_name: str, norm: float, step: int, epoch: int, batch: int) -> None:
        newest = f"epoch {epoch - 1}'s" if epoch > 1 else "none (the first epoch)"
        super().__init__(
            f"{run_name}: the total gradient norm is {norm} at optimiser step {step} (epoch "
            f"{epoch}, batch {batch}); stopped before that step (newest checkpoint: {newest}). "
            "Lower training.log10_learning_rate or set training.max_grad_norm, then train it "
            "again with --force"
        )
        self.norm, self.step, self.epoch, self.batch = norm, step, epoch, batch


def check_global_batch_size(config: RunConfig, processes: int = 1) -> None:
    """``training.global_batch_size``, when set, must be the batch size times accumulation
    times the processes that train together."""
    wanted = config.training.global_batch_size
    batch, accumulation = config.data.batch_size, config.training.gradient_accumulation
    if wanted is not None and wanted != batch * accumulation * processes:
        raise UserInputError(
            f"training.global_batch_size is {wanted}, but data.batch_size {batch} x "
            f"training.gradient_accumulation {accumulation} x {processes} training "
            f"process(es) is {batch * accumulation * processes}; change one of them"
        )


class TrainingStopped(SystemExit):
    """SIGUSR1 asked the run to stop (Slurm's warning before a time limit or preemption).

    It ends the process with ``STOPPED_EXIT_CODE`` once the current batch is done. The
    unfinished epoch is dropped: the newest checkpoint is the last complete epoch's, from
    which a restart resumes exactly (a mid-epoch checkpoint could not be resumed exactly).
    """

    def __init__(self, epoch: int) -> None:
        super().__init__(STOPPED_EXIT_CODE)
        self.epoch = epoch


def resolve_device(name: str, section: str = "training") -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"{section}.device is 'cuda' but torch sees no CUDA device; use 'cpu'")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _with_last(items: Iterable[Any]) -> Iterator[tuple[Any, bool]]:
    """Each item with whether it is the last (one item read ahead)."""
    iterator = iter(items)
    try:
        current = next(iterator)
    except StopIteration:
        return
    for following in iterator:
        yield current, False
        current = following
    yield current, True


class Trainer:
    """One run's training state and its epochs; ``checkpoint_metadata`` goes into each checkpoint.

    Everything random is seeded here from the run's training seed, in a fixed order: the
    global generators, then the loader's and the augmentation's own generators; the model's
    initialisation draws from the model seed alone. A checkpoint restores all of it.
    """

    def __init__(
        self,
        config: RunConfig,
        task: Task,
        run: RunFolder,
        checkpoint_metadata: dict[str, Any],
        progress: bool = True,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        group: ProcessGroup = ALONE,
    ) -> None:
        self.config, self.task, self.run, self.progress = config, task, run, progress
        # data-parallel ranks (speechbed.training.distributed): only rank 0 writes and prints
        self.group = group
        # Called with each epoch's hist.csv row once its checkpoint is saved (the search
        # reports dev PER to optuna here; an exception it raises ends the run after that epoch).
        self.on_epoch = on_epoch
        training = self.training = config.training
        self.device = resolve_device(training.device)
        check_global_batch_size(config, group.world_size)
        if training.num_threads is not None:
            torch.set_num_threads(training.num_threads)
        seed = config.training_seed
        seed_everything(seed)
        loader_generator = torch.Generator().manual_seed(seed + 1)
        self.augmentation = torch.Generator().manual_seed(seed + 2)
        data = config.data
        train_loader = task.open_loader(
            data.train_partition, shuffle=True, seed=seed, generator=loader_generator
        )
        # every rank's batches (this rank's loader holds its share of them)
        self.all_batches = train_loader
        self.train_loader = rank_loader(train_loader, group)
        # a loader that reads one rank's part itself: each rank's own groups (GradientStep)
        rank_local = splits_across_ranks(train_loader)
        self.dev_loader = task.open_loader(
            data.dev_partition, shuffle=False, generator=torch.Generator()
        )
        built = task.build_model(train_loader)
        if group.rank > 0:  # its own dropout and augmentation draws (rank 0's: one process's)
            seed_everything(seed + RANK_SEED_STRIDE * group.rank)
            self.augmentation.manual_seed(seed + 2 + RANK_SEED_STRIDE * group.rank)
        self.rank_states = RankRandomStates(group, self.augmentation) if group.parallel else None
        self.model = built.model.to(self.device)
        self.model_description = built.description
        self.optimizer = make_optimizer(training, self.model, task.parameter_groups(self.model))
        #: optimiser steps per epoch (every epoch has as many batches)
        self.steps_per_epoch = steps_per_epoch(train_loader, training.gradient_accumulation, group)
        self.schedule = make_schedule(
            training, self.optimizer, task.lower_is_better, self.steps_per_epoch
        )
        self.average = (
            None if training.ema_decay is None else WeightAverage(self.model, training.ema_decay)
        )
        self.retention = RetentionPolicy(
            training.keep_best, training.save_frequency, tuple(training.keep_epochs)
        )
        self.stopper = EarlyStopping(
            training.early_stopping_patience,
            training.early_stopping_threshold,
            training.early_stopping_burnin,
            task.lower_is_better,
        )
        self.mixed_precision = self.device.type == "cuda" and training.mixed_precision
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.mixed_precision)
        self.step = GradientStep(
            self.optimizer,
            self.scaler,
            training.gradient_accumulation,
            training.max_grad_norm,
            group,
            rank_local,
        )
        self.log = RunLog(run, task.metric, group.writes)
        self.stopped = False
        self.stop_requested = False  # set by SIGUSR1 while fit runs
        self.checkpoint_metadata = {**checkpoint_metadata, **self.model_description}
        self.store = CheckpointStore(run)
        self.checkpointer = Checkpointer(
            self.store,
            {
                "model": self.model,
                "optimizer": self.optimizer,
                "scheduler": self.schedule,
                "ema": self.average,
                "early_stopping": self.stopper,
                "scaler": self.scaler,
                "loader_generator": GeneratorState(loader_generator),
                "augmentation_generator": GeneratorState(self.augmentation),
                "random_states": GlobalRandomStates(),
                "rank_random_states": self.rank_states,  # after the above: a rank's own
                "history": self.log,
            },
        )

    def resume(self, checkpoint: dict[str, Any]) -> None:
        """Continue after the checkpoint's epoch, exactly where the run was then."""
        self.checkpointer.restore(checkpoint)
        self.stopped = checkpoint["stopped"]

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.log.history

    def best_epoch(self) -> int:
        return best_epoch(self.history, self.task.metric, self.task.lower_is_better)

    def fit(self) -> None:
        """Train epochs until ``num_epochs`` or early stopping."""
        self.log.open(len(self.history) * self.steps_per_epoch)
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGUSR1, self._request_stop)
        try:
            epoch = len(self.history)
            while not self.stopped and epoch < self.training.num_epochs:
                epoch += 1
                self.run_epoch(epoch)
        finally:
            if previous is not None:
                signal.signal(signal.SIGUSR1, previous)
            self.log.close()

    def _request_stop(self, number: int, frame: object) -> None:
        self.stop_requested = True
        self.step.stop_wanted = True

    def _stop_if_requested(self, epoch: int, outcome: StepOutcome | None) -> None:
        if self.group.parallel:  # the ranks stop together, at the step that carried a vote
            stopping = outcome is not None and outcome.stop
        else:
            stopping = self.stop_requested
        if stopping:
            print(
                f"{self.config.info.name}: SIGUSR1: stopping in epoch {epoch}; started again, "
                f"the run resumes after epoch {epoch - 1}, its newest checkpoint",
                flush=True,
            )
            raise TrainingStopped(epoch)

    def run_epoch(self, epoch: int) -> None:
        """Train, measure dev, adapt the schedule, log, checkpoint."""
        training, task = self.training, self.task
        started = time.perf_counter()
        self.train_loader.batch_sampler.set_epoch(epoch)
        learning_rate = self.optimizer.param_groups[0]["lr"]
        loss, max_norm = self.train_epoch(
            f"{self.config.info.name} epoch {epoch}/{training.num_epochs}", epoch
        )
        value = self.dev_metric()
        self.schedule.after_epoch(epoch, value)
        self.stopped = self.stopper.update(epoch, value)
        row = {
            "epoch": epoch,
            "loss": loss,
            task.metric: value,
            "learning_rate": learning_rate,
            "seconds": round(time.perf_counter() - started, 3),
            "max_grad_norm": max_norm,
        }
        self.log.add(row)
        if self.rank_states is not None:
            self.rank_states.gather()
        if not self.group.writes:
            return
        print(
            f"{self.config.info.name} epoch {epoch}: loss {loss:.4f}, "
            f"{task.describe_metric(value)}, lr {learning_rate:.3g}, {row['seconds']:.1f} s"
            + (" (early stop)" if self.stopped else "")
        )
        self.checkpointer.save(epoch, {**self.checkpoint_metadata, "stopped": self.stopped})
        if training.keep_last_and_best_only:
            self.store.prune(self.retention.kept(self.history, task.metric, task.lower_is_better))
        if self.on_epoch is not None:
            self.on_epoch(row)

    def dev_metric(self) -> float:
        """The task's dev metric, of the averaged weights when there is an average."""
        if self.average is None:
            return self.task.dev_metric(self.model, self.dev_loader, self.device)
        with self.average.swapped_into(self.model):
            return self.task.dev_metric(self.model, self.dev_loader, self.device)

    def best_weights(self, checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The weights a checkpoint's epoch is scored by: the average when there is one."""
        return checkpoint["model"] if checkpoint.get("ema") is None else checkpoint["ema"]

    def train_epoch(self, description: str, epoch: int) -> tuple[float, float]:
        """One pass over the training batches: the item-weighted mean loss and the largest
        finite gradient norm of its steps (NaN when it had none)."""
        task, model, device = self.task, self.model, self.device
        model.train()
        total_loss, total_items = 0.0, 0
        self.epoch_max_norm = math.nan
        # of this epoch, over all ranks (known for a sampler's batches, not read otherwise)
        num_batches = 0 if self.step.rank_local else len(self.all_batches)
        step = (epoch - 1) * self.steps_per_epoch
        group_losses: list[float] = []
        # in a log file (no terminal) a bar redrawn every few seconds would bury the epoch lines
        bar = tqdm(
            self.train_loader,
            desc=description,
            unit="batch",
            leave=False,
            disable=not (self.progress and self.group.writes),
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
        )
        for index, (batch, last) in enumerate(_with_last(bar)):
            batch = task.augment(batch, self.augmentation)
            with torch.autocast(device.type, dtype=torch.float16, enabled=self.mixed_precision):
                outputs = task.forward(model, batch, device)
            loss = task.loss(outputs, batch, device)
            learning_rate = self.optimizer.param_groups[0]["lr"]
            batch_number = index * self.group.world_size + self.group.rank + 1
            try:
                outcome = self.step(loss, index, num_batches, last)
            except NonFiniteGradients as error:
                name = self.config.info.name
                raise TrainingDiverged(name, error.norm, step + 1, epoch, batch_number) from None
            batch_loss = loss.item()
            group_losses.append(batch_loss)
            if outcome is not None:
                step += 1
                self._after_step(outcome, step, learning_rate, group_losses)
                group_losses = []
            items = task.batch_size(batch)
            total_loss += batch_loss * items
            total_items += items
            bar.set_postfix(loss=f"{total_loss / total_items:.3f}")
            self._stop_if_requested(epoch, outcome)
        try:
            # steps of a rank with no batch left while the others take theirs
            for outcome in self.step.finish(num_batches):
                step += 1
                self._after_step(outcome, step, self.optimizer.param_groups[0]["lr"], [])
                self._stop_if_requested(epoch, outcome)
        except NonFiniteGradients as error:
            name = self.config.info.name
            raise TrainingDiverged(name, error.norm, step + 1, epoch, num_batches) from None
        total_loss, total_items = self.group.sum(total_loss, total_items)
        return total_loss / max(total_items, 1), self.epoch_max_norm

    def _after_step(
        self, outcome: StepOutcome, step: int, learning_rate: float, losses: list[float]
    ) -> None:
        """Step the schedule and the weight average; log the step's scalars."""
        self.schedule.after_step()
        scalars = {"step/learning_rate": learning_rate}
        if losses:
            scalars["step/loss"] = sum(losses) / len(losses)
        if outcome.taken:  # a step the grad scaler skipped has no norm to show
            scalars["step/grad_norm"] = outcome.norm
            if not outcome.norm <= self.epoch_max_norm:  # also when that is still NaN
                self.epoch_max_norm = outcome.norm
            if self.average is not None:
                self.average.update(self.model)
        self.log.add_step(step, scalars)
