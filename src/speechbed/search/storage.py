"""Where a study lives: the embedded journal file or a database, both with trial heartbeats.

Opened by ``speechbed.search.worker`` and ``speechbed.search.results``; ``describe_storage`` and
``check_parallel_storage`` are what ``make search`` prints and checks before it starts workers.

Both kinds record a heartbeat for each running trial; a trial silent for the grace period
(its worker was killed) is failed by the next worker that looks, and optuna's
``RetryHeartbeatStaleTrialCallback`` enqueues it again with the same settings, up to
``max_retries`` times. A database URL is never printed whole: it may hold a password.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import (
    JournalStorage,
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
)
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from speechbed.errors import UserInputError
from speechbed.outputs import make_folder
from speechbed.search.search_file import JOURNAL, Search

HEARTBEAT_ATTR = "speechbed:heartbeat"
#: Times a worker opens a database whose tables another worker is creating at that moment.
SCHEMA_ATTEMPTS = 5
StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


def describe_storage(url: str, journal: Path) -> str:
    """The storage as it may be printed: the journal's path, or a database without credentials."""
    if url == JOURNAL:
        return f"journal file {journal}"
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:  # noqa: BLE001 (a malformed URL is described, never printed)
        return "a database (SEARCH_STORAGE; its URL is not shown)"
    where = f" on {parsed.host}" + (f":{parsed.port}" if parsed.port else "") if parsed.host else ""
    return f"{parsed.get_backend_name()} database {parsed.database or ''}{where}".rstrip()


def check_parallel_storage(url: str, num_workers: int) -> None:
    """Refuse SQLite for several workers, saying why."""
    if num_workers > 1 and url.startswith("sqlite"):
        raise UserInputError(
            f"storage: SQLite cannot serve {num_workers} parallel workers: it locks the whole "
            "database file for every write, so workers fail with 'database is locked' and lose "
            "trials (and it is unsafe on network file systems); leave storage at 'journal' for "
            "workers on one machine, or use PostgreSQL (SEARCH_STORAGE) for several machines"
        )


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """optuna's journal storage with the heartbeat its database storage has.

    A heartbeat is the wall-clock time in a trial system attribute, appended to the journal;
    the journal holds one machine's workers, so their clocks agree.
    """

    def __init__(
        self, path: Path, heartbeat_interval: int, grace_period: int, callback: StaleCallback
    ) -> None:
        super().__init__(JournalFileBackend(str(path)))
        self._heartbeat_interval = heartbeat_interval
        self._grace_period = grace_period
        self._stale_callback = callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = trial.system_attrs.get(HEARTBEAT_ATTR)
            if beat is None and trial.datetime_start is not None:
                beat = trial.datetime_start.timestamp()
            if beat is not None and now - float(beat) > self._grace_period:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
        return self._stale_callback


def open_storage(search: Search, journal: Path) -> optuna.storages.BaseStorage:
    """The study's storage, with heartbeats and bounded retries of trials whose worker died."""
    settings = search.settings
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    retry = RetryHeartbeatStaleTrialCallback(max_retry=settings.max_retries)
    if settings.storage == JOURNAL:
        make_folder(journal.parent)
        return HeartbeatJournalStorage(journal, settings.heartbeat_seconds, settings.grace, retry)
    from sqlalchemy.exc import IntegrityError

    try:
        for attempt in range(1, SCHEMA_ATTEMPTS + 1):
            try:
                return RDBStorage(
                    settings.storage,
                    heartbeat_interval=settings.heartbeat_seconds,
                    grace_period=settings.grace,
                    heartbeat_stale_trial_callback=retry,
                )
            except IntegrityError:
                # workers opening a fresh database at once race to create optuna's tables;
                # the loser finds them made when it tries again
                if attempt == SCHEMA_ATTEMPTS:
                    raise
                time.sleep(0.5 * attempt)
        raise AssertionError("unreachable")
    except Exception as error:  # noqa: BLE001 (its message may quote the URL)
        raise UserInputError(
            f"{search.source}: storage: cannot open {describe_storage(settings.storage, journal)}: "
            f"{type(error).__name__} (check SEARCH_STORAGE and that the server is up)"
        ) from None
