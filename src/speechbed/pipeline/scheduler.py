"""The scheduler: starts pipeline jobs under barriers, GPU leases and ``num_jobs``, and reaps them.

Called by the pipeline command line with a loaded ``Pipeline``; it never imports ML code.

It is one event loop in the main thread (``selectors``): a job's output pipe and its
``pidfd`` wake it, and so do SIGINT/SIGTERM (through ``signal.set_wakeup_fd``). The only
timed wake-ups are a short poll while a job waits for a GPU leased by *another* pipeline
(no event announces that) and the kill deadline after an interruption.

Rules:
- Jobs are split into segments at ``blocking`` jobs (``speechbed.pipeline.segments``); a
  segment starts only when every earlier one finished, and a blocking job is a segment of
  its own; whether its jobs are done is asked again when it starts.
- Among the jobs of the current segment, in order, every one that fits (a free run slot
  and enough GPUs) starts, so no GPU idles while a runnable job waits for it.
- A failure holds back every later segment (with ``keep_going``, only a failed barrier
  does); jobs already running finish.
- Where the executor queues jobs on a cluster (``Executor.queues_behind``: Slurm), the next
  segment's jobs are submitted as soon as every job before them is queued, each to start
  only after those succeed (``afterok``), so the cluster starts them without waiting for
  this loop. Not with ``keep_going``. A failure cancels them (recorded as not started).
  Before each start the executor sees the segment's jobs still to start (``group``).
- A signal terminates every running job's process group (SIGTERM, SIGKILL after
  ``kill_grace`` seconds or a second signal), records it as interrupted, and nothing else
  starts.
- When a job's main process exits, anything it left in its process group is killed,
  so no stray process keeps using a GPU whose lease was returned. On Linux, jobs also get
  SIGTERM if the runner itself dies (``PR_SET_PDEATHSIG``).
- No process of a job outlives a killed runner: the runner's watchdog (one process per run,
  ``speechbed.pipeline.watchdog``) knows every job's group and, when the runner dies
  without reaping them, kills each group once its main process has exited (or after
  ``kill_grace``). A job and its watchdog hold copies of the job's lease descriptors, so a
  GPU stays leased until no process of the job is left.

How a process is started, signalled and read is ``speechbed.pipeline.processes``; job
records and statuses are ``speechbed.pipeline.records``.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

from speechbed.errors import UserInputError
from speechbed.pipeline.display import PipelineDisplay
from speechbed.pipeline.launch import Executor, Launch
from speechbed.pipeline.leases import GpuLeases
from speechbed.pipeline.loader import Pipeline
from speechbed.pipeline.plan import PlannedJob
from speechbed.pipeline.processes import JobProcess, JobProcesses, open_log, signal_group
from speechbed.pipeline.records import JobRecord, JobStatus
from speechbed.pipeline.segments import Segments
from speechbed.pipeline.state import JobState
from speechbed.step_runner import LINEAGE_FILE_VARIABLE

#: Set for the jobs of a ``--force`` run, so nested pipelines rerun their jobs too.
FORCE_VARIABLE = "SPEECHBED_FORCE"
FOREIGN_LEASE_POLL_SECONDS = 0.2
NO_PIDFD_POLL_SECONDS = 0.05  # only where os.pidfd_open is missing (not Linux)


@dataclass
class _Running:
    record: JobRecord
    process: JobProcess
    launch: Launch


class Scheduler:
    """Runs one pipeline to the end (or to an interruption) and returns each job's record."""

    def __init__(
        self,
        pipeline: Pipeline,
        gpus: list[int],
        leases: GpuLeases,
        state: JobState,
        display: PipelineDisplay,
        base_env: Mapping[str, str],
        force: bool = False,
        keep_going: bool = False,
        kill_grace: float = 10.0,
    ) -> None:
        self.pipeline = pipeline
        self.gpus = gpus
        self.leases = leases
        self.state = state
        self.display = display
        self.base_env = dict(base_env)
        self.keep_going = keep_going
        self.force = force
        self.kill_grace = kill_grace
        self.records = [JobRecord(job) for job in pipeline.jobs]
        self.segments = Segments(self.records, state, force)
        self.interrupted_by: int | None = None
        self._running: dict[int, _Running] = {}  # job index -> running job
        self._held_back: dict[int, str] = {}  # queued behind a job that failed -> why
        self._selector = selectors.DefaultSelector()
        self._kill_deadline: float | None = None
        self._waiting_on_foreign_lease = False
        self._processes = JobProcesses(kill_grace, display.message)

    # ------------------------------------------------------------------ main loop

    def run(self) -> list[JobRecord]:
        self.state.prepare()
        for folder in {record.job.log_path.parent for record in self.records}:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise UserInputError(
                    f"cannot create the log folder {folder} ({error}); check ARTIFACTS_DIRECTORY"
                ) from None
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        self._selector.register(wake_read, selectors.EVENT_READ, ("signal", None))
        previous_wakeup = signal.set_wakeup_fd(wake_write.fileno(), warn_on_full_buffer=False)
        previous_handlers = {
            number: signal.signal(number, self._on_signal)
            for number in (signal.SIGINT, signal.SIGTERM)
        }
        self.display.start(self.records)
        try:
            while True:
                self._start_runnable()
                if not self._running and not self._waiting_on_foreign_lease:
                    break
                self._wait_and_handle(wake_read)
            for record in self.records:
                if record.status == JobStatus.PENDING:  # cannot happen; never report it as run
                    record.status, record.note = JobStatus.NOT_STARTED, "never became runnable"
        finally:
            try:
                self._terminate_all(signal.SIGKILL)  # only does anything after an unexpected error
                while self._running:
                    self._wait_and_handle(wake_read)
            finally:
                self.leases.release_all()
                self._processes.close()
                for number, handler in previous_handlers.items():
                    signal.signal(number, handler)
                signal.set_wakeup_fd(previous_wakeup)
                self._selector.close()
                wake_read.close()
                wake_write.close()
                self.display.stop()
        return self.records

    def _on_signal(self, number: int, frame: object) -> None:
        """Installed so SIGINT raises nothing; the wake-up fd carries the signal to the loop."""

    def _wait_and_handle(self, wake_read: socket.socket) -> None:
        timeout = None
        now = time.monotonic()
        if self._kill_deadline is not None:
            timeout = max(0.0, self._kill_deadline - now)
        polls = []
        if self._waiting_on_foreign_lease and self.interrupted_by is None:
            polls.append(FOREIGN_LEASE_POLL_SECONDS)
        if any(running.process.pidfd is None for running in self._running.values()):
            polls.append(NO_PIDFD_POLL_SECONDS)
        if polls:
            timeout = min(polls) if timeout is None else min(timeout, *polls)
        for key, _ in self._selector.select(timeout):
            kind, running = key.data
            if kind == "signal":
                signals = b""
                with contextlib.suppress(BlockingIOError):
                    signals = wake_read.recv(64)
                for number in signals:
                    self._handle_signal(number)
            elif kind == "output":
                self._read_output(running)
            elif kind == "exit":
                self._reap(running)
        if self._kill_deadline is not None and time.monotonic() >= self._kill_deadline:
            self._terminate_all(signal.SIGKILL)
            self._kill_deadline = None
        if self._running and any(r.process.pidfd is None for r in self._running.values()):
            for running in list(self._running.values()):  # no pidfd: poll (non-Linux)
                if running.process.pidfd is None and running.process.popen.poll() is not None:
                    self._reap(running)

    def _handle_signal(self, number: int) -> None:
        if number not in (signal.SIGINT, signal.SIGTERM):
            return
        if self.interrupted_by is not None:
            self.display.message("second signal: killing running jobs now")
            self._terminate_all(signal.SIGKILL)
            return
        self.interrupted_by = number
        self.display.message(
            f"{signal.Signals(number).name}: terminating {len(self._running)} running job(s); "
            "nothing else starts"
        )
        for record in self.records:
            if record.status == JobStatus.PENDING:
                record.status = JobStatus.NOT_STARTED
                record.note = "interrupted"
        self._terminate_all(signal.SIGTERM)
        self._kill_deadline = time.monotonic() + self.kill_grace

    def _terminate_all(self, number: int) -> None:
        for running in self._running.values():
            running.record.note = running.record.note or "terminated"
            signal_group(running.process.popen.pid, number)

    # ------------------------------------------------------------------ starting jobs

    def _start_runnable(self) -> None:
        self._waiting_on_foreign_lease = False
        if self.interrupted_by is not None:
            return
        current = self.segments.current()
        if current is None:
            return
        unfinished = [
            index
            for index, record in enumerate(self.records)
            if record.status in (JobStatus.PENDING, JobStatus.RUNNING)
        ]
        for index in unfinished:
            if len(self._running) >= self.pipeline.num_jobs:
                return
            record = self.records[index]
            if self.segments.numbers[index] != current or record.status != JobStatus.PENDING:
                continue
            devices: list[int] = []
            if record.job.num_gpus and self.pipeline.executors[record.job.run_in].leases_local_gpus:
                free = [device for device in self.gpus if device not in self.leases.held()]
                taken = self.leases.acquire_some(free, record.job.num_gpus)
                if taken is None:
                    if len(free) >= record.job.num_gpus:
                        self._waiting_on_foreign_lease = True
                    continue
                devices = taken
            self._start(record, devices)
        self._queue_next_segment(current)

    def _queue_next_segment(self, current: int) -> None:
        """Submit the next segment's jobs behind the current one's, when all of those are
        queued on a cluster whose executor can hold a job until others succeed."""
        later = self.segments.later(current)
        if self.keep_going or not later:
            return
        after: list[str] = []
        for index, record in enumerate(self.records):
            if self.segments.numbers[index] > current:
                continue
            if record.status == JobStatus.PENDING:
                return
            running = self._running.get(index)
            if running is not None:
                executor = self.pipeline.executors[record.job.run_in]
                queued = executor.queues_behind and executor.queued_id(running.launch)
                if not queued:
                    return
                after.append(queued)
        following = min(later)
        # Only jobs planned to run: one planned as skipped is asked again when its segment
        # comes (``Segments.current``), after the jobs before it may have changed its inputs.
        for index, record in enumerate(self.records):
            if len(self._running) >= self.pipeline.num_jobs:
                return
            executor = self.pipeline.executors[record.job.run_in]
            if (
                self.segments.numbers[index] == following
                and record.status == JobStatus.PENDING
                and executor.queues_behind
            ):
                self._start(record, [], after)

    def _start(self, record: JobRecord, devices: list[int], after: list[str] | None = None) -> None:
        job = record.job
        executor: Executor = self.pipeline.executors[job.run_in]
        record.devices = devices
        record.started = time.monotonic()
        launch: Launch | None = None
        log = -1
        try:
            job_env = {
                **self.base_env,
                LINEAGE_FILE_VARIABLE: str(self.state.lineage_path(job.key)),
            }
            if self.force:
                job_env[FORCE_VARIABLE] = "1"  # reaches the jobs of nested pipelines
            executor.group(self.segments.pending_in(job), self.pipeline.num_jobs)
            if after:
                launch = executor.launch(job, devices, job_env, after=after)
            else:
                launch = executor.launch(job, devices, job_env)
            log = open_log(job.log_path, launch, devices)
            started = self._processes.start(launch, log, self.leases.descriptors(devices))
        except Exception as error:  # the job cannot start: that is its failure, not the runner's
            if log >= 0:
                os.write(log, f"error: could not start the job: {error}\n".encode())
                os.close(log)
            if launch is not None:
                self._cleanup(executor, job, launch)
            self.leases.release(devices)
            record.ended = time.monotonic()
            self._finish(record, JobStatus.FAILED, f"could not start: {error}")
            return
        running = _Running(record, started, launch)
        assert started.popen.stdout is not None
        self._selector.register(started.popen.stdout, selectors.EVENT_READ, ("output", running))
        if started.pidfd is not None:
            self._selector.register(started.pidfd, selectors.EVENT_READ, ("exit", running))
        self._running[job.index] = running
        record.status = JobStatus.RUNNING
        self.display.job_started(record)

    # ------------------------------------------------------------------ output and exits

    def _read_output(self, running: _Running) -> None:
        if not running.process.pipe_open:
            return
        lines, ended = running.process.read_lines()
        for line in lines:
            self.display.job_output(running.record, line)
        if ended:
            self._close_pipe(running)

    def _close_pipe(self, running: _Running) -> None:
        if running.process.pipe_open:
            assert running.process.popen.stdout is not None
            self._selector.unregister(running.process.popen.stdout)
            running.process.close_pipe()

    def _reap(self, running: _Running) -> None:
        process = running.process.popen
        # The main process is a zombie until waited for, so its group id cannot be reused yet.
        signal_group(process.pid, signal.SIGKILL)
        returncode = process.wait()
        self._read_output(running)
        last = running.process.last_line()  # the last line had no newline
        if last is not None:
            self.display.job_output(running.record, last)
        self._close_pipe(running)
        if running.process.pidfd is not None:
            self._selector.unregister(running.process.pidfd)
        record = running.record
        record.ended = time.monotonic()
        record.returncode = returncode
        ending = f"signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
        executor = self.pipeline.executors[record.job.run_in]
        if returncode != 0:
            ending = self._ending(executor, record.job, running.launch, returncode) or ending
        running.process.close(f"{ending} after {record.seconds:.1f}s")
        del self._running[record.job.index]
        self._cleanup(executor, record.job, running.launch)
        self._processes.reaped(process.pid, holds_leases=bool(record.devices))
        self.leases.release(record.devices)
        held_back = self._held_back.pop(record.job.index, None)
        if held_back is not None and returncode != 0:
            self._finish(record, JobStatus.NOT_STARTED, held_back)
        elif self.interrupted_by is not None and returncode != 0:
            self._finish(record, JobStatus.INTERRUPTED, record.note or "terminated")
        elif returncode == 0:
            details = {
                "pipeline": record.job.pipeline,
                "name": record.job.name,
                "script": str(record.job.script),
                "config": str(record.job.config),
                "seconds": round(record.seconds, 3),
            }
            lineage = self.state.take_lineage(record.job.key)
            try:
                self.state.record_success(record.job.key, details, lineage)
            except OSError as error:  # the work is done; only the next run will redo it
                self._finish(record, JobStatus.DONE, f"success not recorded: {error}")
            else:
                self._finish(record, JobStatus.DONE)
        else:
            self._finish(record, JobStatus.FAILED, ending)

    def _ending(
        self, executor: Executor, job: PlannedJob, launch: Launch, returncode: int
    ) -> str | None:
        try:
            return executor.ending(job, launch, returncode)
        except Exception as error:  # only the summary's wording is at stake
            self.display.message(f"warning: {job.name}: {executor.name} ending unknown: {error}")
            return None

    def _cleanup(self, executor: Executor, job: PlannedJob, launch: Launch) -> None:
        try:
            executor.cleanup(job, launch)
        except Exception as error:  # a cleanup problem must not stop the other jobs
            self.display.message(f"warning: {job.name}: {executor.name} cleanup failed: {error}")

    def _finish(self, record: JobRecord, status: JobStatus, note: str = "") -> None:
        record.status = status
        record.note = note
        self.display.job_finished(record)
        if status != JobStatus.FAILED:
            return
        segment = self.segments.numbers[record.job.index]
        if self.keep_going and not record.job.blocking:
            return
        reason = (
            "after failed barrier" if record.job.blocking else f"after {record.job.name} failed"
        )
        for index, other in enumerate(self.records):
            if self.segments.numbers[index] <= segment:
                continue
            if other.status == JobStatus.PENDING:
                other.status = JobStatus.NOT_STARTED
                other.note = reason
            elif index in self._running:  # queued behind this job: cancel it
                self._held_back[index] = reason
                signal_group(self._running[index].process.popen.pid, signal.SIGTERM)
