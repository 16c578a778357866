"""What a person sees while a pipeline runs: prefixed job output, a live count line, a summary.

The scheduler reports events to a ``PipelineDisplay``; the command line prints the plan.

On a terminal a rich live line shows pending/running/done/failed/skipped counts; elsewhere
(logs, CI, tests) each start and end is one plain line, so the output stays greppable.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from speechbed.pipeline.launch import step_command
from speechbed.pipeline.records import JobRecord, JobStatus

if TYPE_CHECKING:
    from speechbed.pipeline.plan import PlannedJob


_STYLE = {
    JobStatus.DONE: "green",
    JobStatus.SKIPPED: "cyan",
    JobStatus.FAILED: "bold red",
    JobStatus.INTERRUPTED: "yellow",
    JobStatus.NOT_STARTED: "dim",
}


def _gpus(devices: list[int]) -> str:
    return ",".join(map(str, devices)) if devices else "-"


class PipelineDisplay:
    """Console output of one pipeline run."""

    def __init__(self, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.console = Console(file=self.stream, highlight=False)
        if not self.console.is_terminal:  # a log file: keep long paths on one line
            self.console = Console(file=self.stream, highlight=False, width=200)
        self.use_live = self.console.is_terminal if live is None else live
        self._live: Live | None = None
        self._records: list[JobRecord] = []

    # -- events from the scheduler
    def start(self, records: list[JobRecord]) -> None:
        self._records = records
        if self.use_live:
            self._live = Live(
                self._counts(), console=self.console, refresh_per_second=4, transient=True
            )
            self._live.start()

    def job_started(self, record: JobRecord) -> None:
        self._event(
            f"start  {record.job.name}  gpus={_gpus(record.devices)}  log={record.job.log_path}"
            + (f"  ({record.reason})" if record.reason else "")
        )

    def job_output(self, record: JobRecord, line: str) -> None:
        text = f"[{record.job.name}] {line}"
        if self._live is not None:
            self.console.print(Text(text), soft_wrap=True)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()  # live even when the runner's output is a pipe (nested pipelines)

    def job_finished(self, record: JobRecord) -> None:
        self._event(
            f"{record.status.value:<6} {record.job.name}  {record.seconds:.1f}s{record.note_suffix()}"
        )

    def message(self, text: str) -> None:
        self._event(text)

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        self.stream.flush()

    def _event(self, text: str) -> None:
        if self._live is not None:
            self.console.print(Text(text), soft_wrap=True)
            self._live.update(self._counts(), refresh=True)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def _counts(self) -> Text:
        counts = {status: 0 for status in JobStatus}
        for record in self._records:
            counts[record.status] += 1
        shown = [
            JobStatus.PENDING,
            JobStatus.RUNNING,
            JobStatus.DONE,
            JobStatus.FAILED,
            JobStatus.SKIPPED,
        ]
        line = Text("pipeline: ")
        line.append("  ".join(f"{status.value} {counts[status]}" for status in shown))
        return line

    # -- tables
    def summary(self, name: str, records: list[JobRecord]) -> None:
        table = Table(title=f"pipeline {name}", title_justify="left")
        for column in ("#", "job", "status", "time", "gpus", "log"):
            table.add_column(column, overflow="fold")
        for record in records:
            shown_time = f"{record.seconds:.1f}s" if record.started is not None else "-"
            log = str(record.job.log_path) if record.started is not None else "-"
            table.add_row(
                str(record.job.index),
                record.job.name,
                Text(
                    record.status.value + record.note_suffix(), style=_STYLE.get(record.status, "")
                ),
                shown_time,
                _gpus(record.devices),
                log,
            )
        self.console.print(table)
        counts = {status: 0 for status in JobStatus}
        for record in records:
            counts[record.status] += 1
        self.console.print(
            f"pipeline {name}: "
            + ", ".join(f"{count} {status.value}" for status, count in counts.items() if count)
        )

    def plan(
        self,
        name: str,
        jobs: list[PlannedJob],
        reasons: dict[str, str | None],
        gpus: list[int],
        gpu_source: str,
        state_dir: Path,
        depths: Mapping[PlannedJob, int] | None = None,
        left_out: Collection[PlannedJob] = (),
    ) -> None:
        """The plan; ``depths`` indents the jobs of nested pipelines, and jobs that
        ``--from/--to/--only`` leave out say so."""
        depths = depths or {}
        self.console.print(
            f"pipeline {name}: {len(jobs)} job(s); GPUs {_gpus(gpus)} (from {gpu_source}); state {state_dir}"
        )
        table = Table(title="plan (dry run: nothing is started)", title_justify="left")
        for column in ("#", "job", "would", "run_in", "gpus", "barrier", "command"):
            table.add_column(column, overflow="fold")
        first_run = None  # a job that runs may change what later jobs read
        for job in jobs:
            command = shlex.join(
                step_command("python", str(job.script), str(job.config), job.args, job.processes)
            )
            depth = depths.get(job, 0)
            if job in left_out:
                would = Text("left out (--from/--to/--only)", style="dim")
            elif reasons[job.key] is None:
                later = f", asked again after {first_run} ran" if first_run else ""
                would = Text(f"skip (done{later})", style="cyan")
            else:
                would = Text(f"run: {reasons[job.key]}", style="green")
                first_run = first_run or job.name
            table.add_row(
                "  " * depth + str(job.index),
                "  " * depth + job.name,
                would,
                job.run_in,
                str(job.num_gpus),
                "yes" if job.blocking else "",
                command,
            )
        self.console.print(table)
