"""Barriers as segments: which segment runs now, and asking again whether its jobs are done.

Used by the scheduler only; it owns the job records, this reads and marks them.

Jobs are split into segments at ``blocking`` jobs: plain jobs after b barriers are segment
2b, the barrier itself 2b+1. A segment starts only when every earlier one finished. Whether
a job is done is asked when the scheduler is made and again when its segment becomes
current, since a job upstream may have rewritten its inputs in this run.
"""

from __future__ import annotations

from speechbed.pipeline.plan import PlannedJob
from speechbed.pipeline.records import JobRecord, JobStatus
from speechbed.pipeline.state import JobState

_UNFINISHED = (JobStatus.PENDING, JobStatus.RUNNING)


def segment_numbers(jobs: list[PlannedJob]) -> list[int]:
    """Segment number per job: 2b for plain jobs after b barriers, 2b+1 for the barrier itself."""
    numbers, barriers = [], 0
    for job in jobs:
        if job.blocking:
            numbers.append(2 * barriers + 1)
            barriers += 1
        else:
            numbers.append(2 * barriers)
    return numbers


class Segments:
    """The segments of one pipeline run, over the scheduler's job records."""

    def __init__(self, records: list[JobRecord], state: JobState, force: bool) -> None:
        self.records = records
        self.state = state
        self.force = force
        self.numbers = segment_numbers([record.job for record in records])
        for record in records:
            reason = "--force" if force else state.why_run(record.job.key)
            if reason is None:
                record.status = JobStatus.SKIPPED
            else:
                record.reason = reason
        self._checked = {min(self.numbers, default=0)}

    def current(self) -> int | None:
        """The first segment with a job pending or running (asking again, segment by segment)."""
        for segment in sorted(set(self.numbers)):
            self._recheck(segment)
            if any(
                self.numbers[index] == segment and record.status in _UNFINISHED
                for index, record in enumerate(self.records)
            ):
                return segment
        return None

    def pending_in(self, job: PlannedJob) -> list[PlannedJob]:
        """The jobs of ``job``'s segment still to start (``job`` too, before it starts)."""
        segment = self.numbers[job.index]
        return [
            record.job
            for index, record in enumerate(self.records)
            if self.numbers[index] == segment and record.status == JobStatus.PENDING
        ]

    def later(self, segment: int) -> list[int]:
        return sorted(number for number in set(self.numbers) if number > segment)

    def _recheck(self, segment: int) -> None:
        if segment in self._checked:
            return
        self._checked.add(segment)
        if self.force:
            return
        for index, record in enumerate(self.records):
            if self.numbers[index] != segment or record.status not in (
                JobStatus.PENDING,
                JobStatus.SKIPPED,
            ):
                continue
            reason = self.state.why_run(record.job.key)
            record.status = JobStatus.SKIPPED if reason is None else JobStatus.PENDING
            record.reason = reason or ""
