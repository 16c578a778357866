"""The search's own cost per trial: its storage round trips, on the journal file and on
PostgreSQL, against the training of a tiny trial measured in the same run.

Run by ``make bench`` (benchmarks/run_all.py); ``.venv/bin/python benchmarks/run_all.py search``.
PostgreSQL is skipped, saying so, where it is missing (apt-get install postgresql); its server
is the tests' one (tests/postgres_server.py: loopback, a temporary folder, stopped by pid).

Each storage serves NUM_TRIALS trials through the calls a worker makes for one trial, in its
order (speechbed.search.worker): the loop's stale-trial check and count; ask, the surplus check,
the parameters' suggestions, the retry lookup and the run folder attribute; per epoch a
heartbeat, a report and the median pruner's question; the best epoch and tell. Nothing trains
between them, so what is timed is the storage. The baseline is one trial of the tests' tiny
model trained by ``train_run`` for EPOCHS epochs on the tests' tiny corpus (16 utterances).
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
import torch
from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials

from speechbed.storage import repository_root

ROOT = repository_root()
NUM_TRIALS = 100
EPOCHS = 2
PHASES = ("loop head", "ask + params", "epochs", "tell")


def _tests_module(name: str):
    """A module of tests/ (not a package: loaded by path, with tests/ importable)."""
    sys.path.insert(0, str(ROOT / "tests"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _trial_round_trips(search, study: optuna.Study, clock: dict[str, list[float]]) -> None:
    """One trial's storage calls, as a worker makes them, each phase timed into ``clock``."""
    from speechbed.search.worker import _is_surplus, count

    storage = study._storage

    def timed(phase: str, work: Callable[[], object]) -> object:
        start = time.perf_counter()
        result = work()
        clock[phase].append(time.perf_counter() - start)
        return result

    timed("loop head", lambda: (fail_stale_trials(study), count(study)))

    def ask() -> optuna.Trial:
        trial = study.ask()
        _is_surplus(study, trial.number, NUM_TRIALS + 1)
        for name, spec in search.settings.space.items():
            spec.suggest(trial, name)
        RetryHeartbeatStaleTrialCallback.retried_trial_number(storage.get_trial(trial._trial_id))
        trial.set_user_attr("run_dir", f"trials/{trial.number:04d}")
        return trial

    trial = timed("ask + params", ask)

    def epochs() -> None:
        for epoch in range(1, EPOCHS + 1):
            storage.record_heartbeat(trial._trial_id)
            trial.report(0.5 + 0.01 * (trial.number % 7), epoch)
            trial.should_prune()

    timed("epochs", epochs)
    timed("tell", lambda: (trial.set_user_attr("best_epoch", EPOCHS), study.tell(trial, 0.5)))


def _storage_cost(search) -> dict[str, dict[str, float]]:
    """Milliseconds per trial of each phase: the first and the last 20 of NUM_TRIALS."""
    from speechbed.search.worker import open_study

    study = open_study(search)
    clock: dict[str, list[float]] = {phase: [] for phase in PHASES}
    for _ in range(NUM_TRIALS):
        _trial_round_trips(search, study, clock)
    return {
        part: {
            phase: 1000 * statistics.mean(times[:20] if part == "first" else times[-20:])
            for phase, times in clock.items()
        }
        for part in ("first", "last")
    }


def _tiny_trial_seconds(search, folder: Path) -> float:
    """Wall time of one tiny trial's training (the second of two: the first warms up)."""
    from speechbed.training.config import RunConfig
    from speechbed.training.loop import train_run

    seconds = 0.0
    for attempt in range(2):
        config = search.run_config({}, f"tiny-{attempt}", folder / f"tiny-{attempt}")
        start = time.perf_counter()
        train_run(RunConfig.model_validate(config), progress=False)
        seconds = time.perf_counter() - start
    return seconds


def main() -> None:
    import contextlib
    import io

    from speechbed.search.search_file import load_search

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # the worker's own filters: heartbeats outside Study.optimize are what it is built on
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    test_search = _tests_module("test_search")
    postgres = _tests_module("postgres_server")
    with tempfile.TemporaryDirectory(prefix="bench-search-") as name:
        folder = Path(name)
        os.environ["ARTIFACTS_DIRECTORY"] = str(folder / "artifacts")
        cache = folder / "cache"
        for partition, size, seed in (("train", 16, 1), ("dev", 4, 2), ("test", 4, 3)):
            _tests_module("test_training").write_cache(cache / f"{partition}.zarr", size, seed)
        training = {**test_search.TINY["training"], "num_epochs": EPOCHS}
        settings = {"pruner": "median", "training": training, "heartbeat_seconds": 60}
        journal = load_search(test_search.search_file(folder, cache, study="journal", **settings))
        with contextlib.redirect_stdout(io.StringIO()):
            trial_seconds = _tiny_trial_seconds(journal, folder)
        costs = {"journal file": _storage_cost(journal)}
        skipped = None
        try:
            with postgres.postgres_database() as url:
                database = load_search(
                    test_search.search_file(folder, cache, study="pg", storage=url, **settings)
                )
                costs["PostgreSQL (loopback)"] = _storage_cost(database)
        except postgres.PostgresMissing as missing:
            skipped = str(missing)
    print(
        f"Storage round trips per trial ({EPOCHS} epochs: a heartbeat, a report and the median "
        f"pruner each), {NUM_TRIALS} trials in one study, one process"
    )
    print(
        f"{'storage':<24} {'trials':>7} "
        + " ".join(f"{phase:>13}" for phase in PHASES)
        + f" {'ms/trial':>9} {'of trial':>9}"
    )
    for label, parts in costs.items():
        for part, phases in parts.items():
            total = sum(phases.values())
            span = "1-20" if part == "first" else f"{NUM_TRIALS - 19}-{NUM_TRIALS}"
            print(
                f"{label:<24} {span:>7} "
                + " ".join(f"{phases[phase]:13.1f}" for phase in PHASES)
                + f" {total:9.1f} {total / 1000 / trial_seconds:8.2%}"
            )
    base = sum(costs["journal file"]["last"].values())
    for label, parts in costs.items():
        if label != "journal file":
            print(f"{label}: {sum(parts['last'].values()) / base:.1f}x the journal file's cost")
    print(
        f"baseline: one tiny trial (tests' tiny model, 16 utterances, {EPOCHS} epochs) trains in "
        f"{trial_seconds:.2f} s"
    )
    if skipped:
        print(f"PostgreSQL skipped: {skipped}")


if __name__ == "__main__":
    main()
