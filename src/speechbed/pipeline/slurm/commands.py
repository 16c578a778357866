"""Slurm command lines (sbatch, squeue, scontrol, scancel, sinfo) and readers of their answers.

Pure functions, used by the Slurm executor and its watcher; the unit tests check them alone.
Every command is an argument list: a job's command travels as the batch script's arguments,
and the batch script is one fixed text that runs them with ``exec "$@"``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from speechbed.outputs import write_text_atomic
from speechbed.pipeline.slurm.settings import SlurmJobOptions, SlurmSettings

#: The batch script of every job (sbatch reads it from stdin): it runs its arguments as given.
BATCH_SCRIPT = """#!/bin/sh
# speechbed: run this job's arguments as one list (no shell words are made from them).
if [ ! -x "$1" ]; then
    echo "error: $1 is not there on $(hostname): the repository, its .venv and the storage" \\
        "folders must lie on a filesystem the compute nodes share" >&2
    exit 2
fi
exec "$@"
"""
#: The marker before a job's key in its ``--comment``; a restarted runner finds its jobs by it.
COMMENT_PREFIX = "speechbed-key:"
#: The marker before a job array's group in its ``--comment``; its sidecar lists the keys.
ARRAY_COMMENT_PREFIX = "speechbed-array:"
#: States from which a job will still run or is running: a restarted runner adopts these.
ACTIVE_STATES = frozenset(
    "PENDING RUNNING CONFIGURING COMPLETING REQUEUED REQUEUE_HOLD REQUEUE_FED RESIZING "
    "SUSPENDED STOPPED SIGNALING STAGE_OUT SPECIAL_EXIT RESV_DEL_HOLD".split()
)
#: States a job does not leave; COMPLETED is the only success.
FINAL_STATES = frozenset(
    "COMPLETED FAILED CANCELLED TIMEOUT OUT_OF_MEMORY NODE_FAIL PREEMPTED BOOT_FAIL "
    "DEADLINE".split()
)
_GPU_GRES = re.compile(r"gpu(?::[^:,(]+)?:(\d+)")


def job_comment(key: str) -> str:
    return f"{COMMENT_PREFIX}{key}"


def array_comment(group: str) -> str:
    return f"{ARRAY_COMMENT_PREFIX}{group}"


def output_pattern(path: Path) -> str:
    """``path`` as an sbatch file name pattern: a ``%`` in it is not a replacement symbol."""
    return str(path).replace("%", "%%")


def sbatch_command(
    settings: SlurmSettings,
    options: SlurmJobOptions | None,
    *,
    job_name: str,
    comment: str,
    output: Path,
    cwd: Path,
    num_gpus: int,
    argv: Sequence[str],
    after: Sequence[str] = (),
    array: bool = False,
    processes: int = 1,
) -> list[str]:
    """``sbatch`` for one job: the batch script comes on stdin (``BATCH_SCRIPT``), ``argv``
    are its arguments. The cluster settings come first and the job's own options after
    them, so the job's win; requeueable, with SIGUSR1 to the batch step before the limit.
    With ``after`` (Slurm job ids) it starts only once they all completed, and Slurm
    cancels it when one of them fails (it would wait forever otherwise). With ``array``,
    ``output``'s name is a pattern (``%a``, the element's index) and its folder is not.
    A job of ``processes`` > 1 data-parallel ranks is still one task on one node: torchrun,
    in ``argv``, starts the ranks there on the job's GPUs."""
    own = options or SlurmJobOptions()
    command = [
        "sbatch",
        "--parsable",
        f"--job-name={job_name}",
        f"--comment={comment}",
        f"--output={output_pattern(output.parent)}/{output.name}"
        if array
        else f"--output={output_pattern(output)}",
        "--open-mode=append",  # a requeued job's output follows its first run's
        f"--chdir={cwd}",
        "--export=ALL",
        "--requeue",
        f"--signal=B:USR1@{settings.signal_seconds}",
    ]
    partition = own.partition or settings.partition
    account = own.account or settings.account
    time = own.time or settings.time
    if processes > 1:
        command += ["--nodes=1", "--ntasks=1"]
    if partition:
        command.append(f"--partition={partition}")
    if account:
        command.append(f"--account={account}")
    if time:
        command.append(f"--time={time}")
    if num_gpus:
        gpus = f"--gres=gpu:{num_gpus}" if settings.gpu_request == "gres" else f"--gpus={num_gpus}"
        command += [gpus, *settings.gpu_options]
    else:
        command += list(settings.cpu_options)
    if own.mem:
        command.append(f"--mem={own.mem}")
    if own.cpus_per_task:
        command.append(f"--cpus-per-task={own.cpus_per_task}")
    command += own.options
    if after:
        unique = ":".join(dict.fromkeys(after))  # the elements of one array share its id
        command += [f"--dependency=afterok:{unique}", "--kill-on-invalid-dep=yes"]
    return [*command, "/dev/stdin", *argv]


def array_indices(indices: Sequence[int]) -> str:
    """Slurm's index list: runs of consecutive indices as ranges (``0-3,5,7-8``)."""
    parts: list[str] = []
    ordered = sorted(set(indices))
    start = 0
    for position, index in enumerate(ordered):
        if position + 1 == len(ordered) or ordered[position + 1] != index + 1:
            first = ordered[start]
            parts.append(str(index) if first == index else f"{first}-{index}")
            start = position + 1
    return ",".join(parts)


def with_array(sbatch: Sequence[str], indices: Sequence[int], throttle: int) -> list[str]:
    """``sbatch`` as a job array of ``indices``, at most ``throttle`` of them running at once."""
    if not indices or throttle < 1:
        raise ValueError("a job array needs indices and a throttle of at least 1")
    command = list(sbatch)
    command.insert(command.index("/dev/stdin"), f"--array={array_indices(indices)}%{throttle}")
    return command


def _expand_indices(spec: str) -> set[int]:
    """The indices of ``0,2,4-6%2`` (what squeue shows of an array's pending tasks)."""
    found: set[int] = set()
    for part in spec.split("%")[0].split(","):
        first, _, last = part.partition("-")
        if first.isdigit() and (not last or last.isdigit()):
            found.update(range(int(first), int(last or first) + 1))
    return found


def active_array_tasks(squeue_output: str, prefix: str) -> list[tuple[str, str, set[int]]]:
    """(array job id, comment, indices of its queued or running tasks) for each array whose
    comment starts with ``prefix``: squeue lists a started task as ``ID_5``, the tasks
    still pending together as ``ID_[6-9%2]``."""
    arrays: dict[str, tuple[str, set[int]]] = {}
    for line in squeue_output.splitlines():
        parts = line.strip().split("|", 2)
        if len(parts) != 3 or not parts[2].startswith(prefix) or parts[1] not in ACTIVE_STATES:
            continue
        array_id, _, tasks = parts[0].partition("_")
        if not array_id.isdigit() or not tasks:
            continue
        comment, indices = arrays.setdefault(array_id, (parts[2].strip(), set()))
        if tasks.startswith("[") and tasks.endswith("]"):
            indices.update(_expand_indices(tasks[1:-1]))
        elif tasks.isdigit():
            indices.add(int(tasks))
    return [(array_id, comment, indices) for array_id, (comment, indices) in arrays.items()]


def submitted_job_id(stdout: str) -> str:
    """The job id ``sbatch --parsable`` printed (``ID`` or ``ID;CLUSTER``)."""
    text = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job_id = text.split(";")[0].strip()
    if not job_id.isdigit():
        raise ValueError(f"sbatch printed no job id: {stdout.strip()!r}")
    return job_id


def squeue_command() -> list[str]:
    """This user's jobs, every state, one ``id|state|comment`` line each."""
    return ["squeue", "--noheader", "--me", "--states=all", "--format=%i|%T|%k"]


def active_job_with_comment(squeue_output: str, comment: str) -> str | None:
    """The newest job listed with ``comment`` that is queued or running, else None."""
    found = []
    for line in squeue_output.splitlines():
        parts = line.strip().split("|", 2)
        if len(parts) == 3 and parts[2].strip() == comment and parts[1] in ACTIVE_STATES:
            if parts[0].isdigit():
                found.append(int(parts[0]))
    return str(max(found)) if found else None


def exit_record(output: Path) -> Path:
    """Where a job's batch step records how it ended, beside Slurm's output file of the job:
    the watcher reads it when the controller no longer lists the job (a finished job is
    purged ``MinJobAge`` seconds after it ends, before a late watcher asks)."""
    return output.with_name(f"{output.name}.exit.json")


def write_exit_record(output: Path, job_id: str, exit_code: int) -> None:
    write_text_atomic(exit_record(output), json.dumps({"job_id": job_id, "exit_code": exit_code}))


def read_exit_record(output: Path, job_id: str) -> int | None:
    """The exit status job ``job_id`` recorded beside ``output``; None when it recorded none
    (or the record is another job's: an earlier run of the same output)."""
    try:
        record = json.loads(exit_record(output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("job_id") != job_id:
        return None
    code = record.get("exit_code")
    return code if isinstance(code, int) else None


def show_job_command(job_id: str) -> list[str]:
    return ["scontrol", "show", "job", "--oneliner", job_id]


def cancel_command(job_id: str) -> list[str]:
    return ["scancel", job_id]


@dataclass(frozen=True)
class JobInfo:
    """What ``scontrol show job`` says about a job."""

    state: str
    exit_code: int = 0
    signal: int = 0
    reason: str = ""
    restarts: int = 0
    node: str = ""

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def returncode(self) -> int:
        """The exit status the runner records: the job's own, 128+signal, else 1 (not COMPLETED)."""
        if self.state == "COMPLETED":
            return 0
        if self.exit_code:
            return self.exit_code
        return 128 + self.signal if self.signal else 1

    def failure(self) -> str | None:
        """Why the job failed, when Slurm says more than the exit code (TIMEOUT, ...)."""
        if self.state in ("COMPLETED", "FAILED"):
            return None
        return f"{self.state}" + (f" ({self.reason})" if self.reason not in ("", "None") else "")


def parse_job(text: str) -> JobInfo | None:
    """Read ``scontrol show job --oneliner``; None when it names no job."""
    fields = dict(
        word.split("=", 1) for word in text.split() if "=" in word and not word.startswith("=")
    )
    state = fields.get("JobState")
    if not state:
        return None
    code, _, signal = fields.get("ExitCode", "0:0").partition(":")
    return JobInfo(
        state=state,
        exit_code=int(code) if code.isdigit() else 0,
        signal=int(signal) if signal.isdigit() else 0,
        reason=fields.get("Reason", ""),
        restarts=int(fields["Restarts"]) if fields.get("Restarts", "").isdigit() else 0,
        node=fields.get("NodeList", "") if fields.get("NodeList") != "(null)" else "",
    )


def gpus_per_node_command() -> list[str]:
    return ["sinfo", "--noheader", "--format=%G"]


def largest_gpu_count(sinfo_output: str) -> int:
    """The most GPUs one node offers, from ``sinfo --format=%G`` (``gpu:2``, ``gpu:a100:4(S:0)``)."""
    counts = [int(match) for match in _GPU_GRES.findall(sinfo_output)]
    return max(counts, default=0)
