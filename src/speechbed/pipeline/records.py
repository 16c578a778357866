"""What happened to each job of a pipeline run: its status and record, and the run's exit code.

The scheduler fills the records; the display shows them and the command line exits with ``exit_code``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum

from speechbed.pipeline.plan import PlannedJob


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # done by an earlier run
    INTERRUPTED = "interrupted"
    NOT_STARTED = "not started"  # held back by a failure or an interruption


@dataclass
class JobRecord:
    """What happened to one job in this run."""

    job: PlannedJob
    status: JobStatus = JobStatus.PENDING
    devices: list[int] = field(default_factory=list)
    started: float | None = None
    ended: float | None = None
    returncode: int | None = None
    note: str = ""
    reason: str = ""  # why it runs rather than being skipped

    @property
    def seconds(self) -> float:
        if self.started is None:
            return 0.0
        return (self.ended if self.ended is not None else time.monotonic()) - self.started

    def note_suffix(self) -> str:
        return f" ({self.note})" if self.note else ""


def exit_code(records: list[JobRecord], interrupted_by: int | None) -> int:
    """0 when every job is done or skipped; 128+signal after an interruption; else 1."""
    if interrupted_by is not None:
        return 128 + interrupted_by
    ok = all(record.status in (JobStatus.DONE, JobStatus.SKIPPED) for record in records)
    return 0 if ok else 1
