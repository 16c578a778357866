"""A search worker: pull trials until the study has ``num_trials`` finished ones, training each.

Run by ``scripts/search.py -y FILE`` (one per pipeline job under ``make search``). A trial is a
real run of the project's trainer (``speechbed.training.loop.train_run``) in its own run folder
``${ARTIFACTS_DIRECTORY}/search/<study>/trials/NNNN``, reporting the dev metric every epoch for
pruning. Finished means complete or pruned, counted across every worker. A worker takes a new
trial only while finished + running trials are fewer than ``num_trials``; when two workers ask
at once, the trial numbered past ``num_trials`` live trials is failed at once as surplus (it
never trains), so the study never overshoots. A worker with nothing to take waits while others
run their trials, so that one whose worker dies (heartbeat stale) is retried by a live worker.
"""

from __future__ import annotations

import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from typing import Any

import optuna
import yaml
from optuna.storages import fail_stale_trials
from optuna.trial import TrialState

from speechbed.errors import UserInputError
from speechbed.outputs import write_text_atomic
from speechbed.run_folder import StudyFolder
from speechbed.search.search_file import Search
from speechbed.search.storage import describe_storage, open_storage
from speechbed.storage import repository_root, storage_directory

SURPLUS_ATTR = "speechbed:surplus"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: A worker whose trials fail this many times in a row (a bug, not bad luck) stops.
MAX_CONSECUTIVE_FAILURES = 3


@dataclass(frozen=True)
class WorkerSummary:
    trained: int
    study_finished: int
    best_value: float | None


def study_folder(search: Search) -> StudyFolder:
    return StudyFolder.of(storage_directory("ARTIFACTS_DIRECTORY", repository_root()), search.study)


def make_sampler(search: Search, worker: int = 0) -> optuna.samplers.BaseSampler:
    settings = search.settings
    # each worker its own stream: one seed in every worker would draw the same settings
    seed = None if settings.sampler_seed is None else settings.sampler_seed + worker
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if settings.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(
        seed=seed, multivariate=True, constant_liar=True, warn_independent_sampling=False
    )


def make_pruner(search: Search) -> optuna.pruners.BasePruner:
    settings = search.settings
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=settings.pruner_startup_trials,
            n_warmup_steps=settings.pruner_warmup_epochs,
        )
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=settings.training.num_epochs
        )
    return optuna.pruners.NopPruner()


def open_study(search: Search, create: bool = True, worker: int = 0) -> optuna.Study:
    """The study (created on first use), with the search's sampler and pruner."""
    folder = study_folder(search)
    storage = open_storage(search, folder.journal)
    if not create:
        try:
            return optuna.load_study(study_name=search.study, storage=storage)
        except KeyError:
            where = describe_storage(search.settings.storage, folder.journal)
            raise UserInputError(
                f"{search.source}: no study '{search.study}' in {where}; run the search first"
            ) from None
    return optuna.create_study(
        study_name=search.study,
        storage=storage,
        sampler=make_sampler(search, worker),
        pruner=make_pruner(search),
        direction="minimize",  # ctc_phones' dev PER; a task whose metric rises would flip it
        load_if_exists=True,
    )


def count(study: optuna.Study) -> dict[TrialState, int]:
    counts = dict.fromkeys(TrialState, 0)
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state] += 1
    return counts


def _is_surplus(study: optuna.Study, number: int, num_trials: int) -> bool:
    """Whether ``num_trials`` live (not failed) trials come before trial ``number``."""
    ahead = sum(
        1
        for trial in study.get_trials(deepcopy=False)
        if trial.number < number and trial.state != TrialState.FAIL
    )
    return ahead >= num_trials


class _Heartbeat:
    """optuna's heartbeat thread for one trial (none when the storage has no heartbeat)."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial) -> None:
        from optuna.storages._heartbeat import get_heartbeat_thread

        self.thread = get_heartbeat_thread(trial._trial_id, study._storage)

    def __enter__(self) -> None:
        self.thread.start()

    def __exit__(self, *exc: object) -> None:
        self.thread.join()


def _check_memory(search: Search, trial: optuna.Trial, config: Any) -> None:
    """Prune the trial when its pass at the largest batch peaks above the memory limit."""
    limit = search.settings.memory_limit_mib
    if limit is None:
        return
    from speechbed.search.memory import MIB, trial_memory_bytes

    needed = trial_memory_bytes(config) / MIB
    trial.set_user_attr("peak_memory_mib", round(needed, 3))
    print(
        f"trial {trial.number}: a pass at the largest batch peaks at {needed:.1f} MiB", flush=True
    )
    if needed > limit:
        trial.set_user_attr("pruned_because", "memory limit")
        raise optuna.TrialPruned(f"{needed:.1f} MiB at the largest batch > limit {limit:g} MiB")


def run_trial(search: Search, study: optuna.Study, trial: optuna.Trial) -> float:
    """Train one trial's run; raises ``optuna.TrialPruned`` when the pruner stops it."""
    import torch

    from speechbed.training.config import RunConfig
    from speechbed.training.loop import train_run

    params = {name: spec.suggest(trial, name) for name, spec in search.settings.space.items()}
    run = study_folder(search).trial(trial.number)
    retried = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(
        study._storage.get_trial(trial._trial_id)
    )
    config = search.run_config(params, f"{search.study}-trial-{trial.number:04d}", run.path)
    trial.set_user_attr("run_dir", str(run.path))
    if retried is not None:
        print(f"trial {trial.number}: retries trial {retried} (its worker stopped answering)")
    print(f"trial {trial.number}: {params}", flush=True)
    write_text_atomic(run.config, yaml.safe_dump(config, sort_keys=False))

    def report(row: dict[str, Any]) -> None:
        value, epoch = float(row["dev_per"]), int(row["epoch"])
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch}: dev PER {value:.4f}")

    try:
        with _Heartbeat(study, trial):
            run_config = RunConfig.model_validate(config)
            _check_memory(search, trial, run_config)
            summary = train_run(run_config, progress=False, on_epoch=report)
    except torch.OutOfMemoryError as error:
        trial.set_user_attr("pruned_because", "out of memory")
        raise optuna.TrialPruned("out of memory") from error
    trial.set_user_attr("best_epoch", summary.best_epoch)
    return summary.best_dev_per


def run_worker(search: Search, worker: int = 0, poll_seconds: float | None = None) -> WorkerSummary:
    """Take and train trials until the study has ``num_trials`` finished ones."""
    # heartbeats and stale-trial retries outside Study.optimize are what this loop is for
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    num_trials = search.settings.num_trials
    poll = poll_seconds or min(5.0, search.settings.heartbeat_seconds)
    study = open_study(search, worker=worker)
    where = describe_storage(search.settings.storage, study_folder(search).journal)
    print(f"study {search.study} in {where}: {num_trials} trial(s) wanted", flush=True)
    trained = failures = 0
    while True:
        fail_stale_trials(study)
        counts = count(study)
        finished = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
        if finished >= num_trials:
            break
        if finished + counts[TrialState.RUNNING] >= num_trials and not counts[TrialState.WAITING]:
            time.sleep(poll)  # the last trials run elsewhere; stay to retry one whose worker dies
            continue
        trial = study.ask()
        if _is_surplus(study, trial.number, num_trials):
            study._storage.set_trial_system_attr(trial._trial_id, SURPLUS_ATTR, True)
            study.tell(trial, state=TrialState.FAIL)
            continue
        try:
            value = run_trial(search, study, trial)
        except optuna.TrialPruned as pruned:
            print(f"trial {trial.number}: pruned ({pruned})", flush=True)
            study.tell(trial, state=TrialState.PRUNED)
            trained += 1
            failures = 0
        except Exception as error:  # noqa: BLE001 (recorded with the trial; the worker goes on)
            traceback.print_exc()
            trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:500])
            study.tell(trial, state=TrialState.FAIL)
            failures += 1
            print(f"trial {trial.number}: failed ({type(error).__name__})", file=sys.stderr)
            if failures >= MAX_CONSECUTIVE_FAILURES:
                raise UserInputError(
                    f"{failures} trials in a row failed (the last: {type(error).__name__}: "
                    f"{error}); see the tracebacks above"
                ) from None
        else:
            study.tell(trial, value)
            print(f"trial {trial.number}: dev PER {value:.4f}", flush=True)
            trained += 1
            failures = 0
    completed = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    best = min((t.value for t in completed if t.value is not None), default=None)
    print(
        f"study {search.study}: {finished} finished trial(s); this worker trained {trained}"
        + (f"; best dev PER {best:.4f}" if best is not None else ""),
        flush=True,
    )
    from speechbed.search.report import write_report

    report = write_report(study, study_folder(search))
    print(f"report: {', '.join(str(path) for path in report.files)}", flush=True)
    return WorkerSummary(trained, finished, best)
