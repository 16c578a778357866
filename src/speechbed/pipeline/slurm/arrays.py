"""Job arrays: the jobs of one segment that share script and resources go in as one sbatch.

The Slurm executor groups them (``array_groups``) and writes the array's sidecar file
(``ArraySidecar``): each element's key, name, argv, environment and output file, so an
element runs exactly the argv the host executor would run for its job, read from a file
(``speechbed.pipeline.slurm.batch --array-file``), never from a shell string. The watchers
of the elements share one submission (``submit_once``): the first one to take the array's
lock adopts what an earlier runner left queued or running, submits the rest as one
``sbatch --array=...%num_jobs`` and writes which Slurm job each element is; the others
read it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from speechbed.outputs import write_text_atomic
from speechbed.pipeline.plan import PlannedJob
from speechbed.pipeline.slurm.commands import (
    ARRAY_COMMENT_PREFIX,
    BATCH_SCRIPT,
    active_array_tasks,
    active_job_with_comment,
    job_comment,
    squeue_command,
    submitted_job_id,
    with_array,
)
from speechbed.step_runner import LINEAGE_FILE_VARIABLE

#: The most elements of one array: Slurm's default MaxArraySize (1001) allows indices to 1000.
MAX_ARRAY_SIZE = 1000
#: Runs a Slurm command (argv, stdin text) and returns (exit status, stdout, stderr).
RunCommand = Callable[[Sequence[str], str | None], tuple[int, str, str]]


def _resources(job: PlannedJob) -> tuple[object, ...]:
    options = job.slurm.model_dump_json() if job.slurm is not None else ""
    return (job.pipeline, job.root, job.script, job.num_gpus, job.processes, job.blocking, options)


def array_groups(jobs: Sequence[PlannedJob]) -> list[list[PlannedJob]]:
    """The jobs that share script and resources (GPUs and data-parallel processes), in groups of two to ``MAX_ARRAY_SIZE``, in
    job order."""
    groups: dict[tuple[object, ...], list[PlannedJob]] = {}
    for job in jobs:
        groups.setdefault(_resources(job), []).append(job)
    return [
        chunk
        for members in groups.values()
        for start in range(0, len(members), MAX_ARRAY_SIZE)
        if len(chunk := members[start : start + MAX_ARRAY_SIZE]) > 1
    ]


def sidecar_path(folder: Path, group: str) -> Path:
    return folder / f".slurm-array-{group}.json"


def element_output(folder: Path, group: str, index: int | str) -> Path:
    """Slurm's output file of element ``index`` (``%a`` in the sbatch pattern)."""
    return folder / f".slurm-array-{group}-{index}.out"


@dataclass(frozen=True)
class ArrayElement:
    key: str
    name: str
    argv: list[str]
    env: dict[str, str]


@dataclass(frozen=True)
class ArraySidecar:
    """The file an array's elements read their job from, beside the pipeline's logs."""

    path: Path
    group: str
    elements: list[ArrayElement]

    @classmethod
    def create(cls, folder: Path, elements: list[ArrayElement]) -> ArraySidecar:
        group = uuid.uuid4().hex[:12]
        sidecar = cls(sidecar_path(folder, group), group, elements)
        document = {"group": group, "elements": [element.__dict__ for element in elements]}
        write_text_atomic(sidecar.path, json.dumps(document, indent=1) + "\n")
        return sidecar

    @classmethod
    def read(cls, path: Path) -> ArraySidecar:
        """The sidecar at ``path``; ``ValueError`` naming the file when it is not one."""
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            elements = [ArrayElement(**element) for element in document["elements"]]
            return cls(path, str(document["group"]), elements)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"cannot read the job array file {path}: {error}") from None

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def submitted_path(self) -> Path:
        return self.path.with_suffix(".submitted.json")

    def output(self, index: int | str) -> Path:
        return element_output(self.folder, self.group, index)


def earlier_elements(
    squeue_output: str, folder: Path, skip_group: str = ""
) -> dict[str, tuple[str, Path]]:
    """Job key -> (Slurm id, output file) of each queued or running element of an array an
    earlier runner submitted from ``folder`` (its sidecar there says which key it runs)."""
    found: dict[str, tuple[str, Path]] = {}
    for array_id, comment, tasks in active_array_tasks(squeue_output, ARRAY_COMMENT_PREFIX):
        group = comment.removeprefix(ARRAY_COMMENT_PREFIX)
        if group == skip_group:
            continue
        with contextlib.suppress(ValueError):
            other = ArraySidecar.read(sidecar_path(folder, group))
            for task in tasks:
                if 0 <= task < len(other.elements):
                    found[other.elements[task].key] = (f"{array_id}_{task}", other.output(task))
    return found


def adoptable(squeue_output: str, sidecar: ArraySidecar) -> dict[int, tuple[str, Path | None]]:
    """Element index -> (Slurm id, output file or None for a single job's own) of the job
    an earlier runner left queued or running for the element's key: a single job with the
    key in its comment, or an element of an earlier array."""
    found: dict[int, tuple[str, Path | None]] = {}
    earlier = earlier_elements(squeue_output, sidecar.folder, sidecar.group)
    for index, element in enumerate(sidecar.elements):
        single = active_job_with_comment(squeue_output, job_comment(element.key))
        if single is not None:
            found[index] = (single, None)
        elif element.key in earlier:
            found[index] = earlier[element.key]
    return found


def _submit(sidecar: ArraySidecar, sbatch: Sequence[str], throttle: int, run: RunCommand) -> dict:
    """Adopt what is still queued or running, submit the rest as one array: the record of it."""
    code, listing, error = run(squeue_command(), None)
    if code != 0:
        return {"failure": f"squeue failed, is the Slurm controller up? {error.strip()}"}
    adopted = adoptable(listing, sidecar)
    ids = {str(index): job_id for index, (job_id, _) in adopted.items()}
    outputs = {str(index): str(path) for index, (_, path) in adopted.items() if path}
    fresh = [index for index in range(len(sidecar.elements)) if str(index) not in ids]
    if not fresh:
        return {"ids": ids, "outputs": outputs}
    for index in fresh:  # a new element's output starts empty (its requeues append to it)
        with contextlib.suppress(FileNotFoundError):
            sidecar.output(index).unlink()
        with contextlib.suppress(FileNotFoundError, KeyError):
            Path(sidecar.elements[index].env[LINEAGE_FILE_VARIABLE]).unlink()
    code, printed, error = run(with_array(sbatch, fresh, throttle), BATCH_SCRIPT)
    if code != 0:
        lines = [line for line in error.strip().splitlines() if line.strip()]
        message = lines[-1] if lines else "no message"
        return {"ids": ids, "outputs": outputs, "failure": f"sbatch refused: {message}"}
    try:
        array_id = submitted_job_id(printed)
    except ValueError as problem:
        return {"ids": ids, "outputs": outputs, "failure": str(problem)}
    ids.update({str(index): f"{array_id}_{index}" for index in fresh})
    return {"array_job_id": array_id, "ids": ids, "outputs": outputs}


def submit_once(
    sidecar: ArraySidecar, sbatch: Sequence[str], throttle: int, run: RunCommand
) -> Mapping[str, object]:
    """The array's submission record, made by whichever element's watcher comes first."""
    lock = sidecar.path.with_suffix(".lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            return json.loads(sidecar.submitted_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
        record = _submit(sidecar, sbatch, throttle, run)
        write_text_atomic(sidecar.submitted_path, json.dumps(record) + "\n")
        return record
