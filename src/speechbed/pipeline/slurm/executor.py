"""The Slurm executor (``run_in: slurm``): each pipeline job becomes one sbatch job, or one
element of a job array when jobs of its segment share script and resources (``group``).

Made by name through ``speechbed.pipeline.executors``. Its ``Launch`` is the job's watcher
(``speechbed.pipeline.slurm.watcher``), a local process that submits or adopts the job and
lives as long as it does, so the scheduler runs, logs, interrupts and reaps Slurm jobs the
way it does host jobs. Slurm picks the GPUs (``--gres=gpu:N``): no local lease.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from speechbed.errors import UserInputError
from speechbed.pipeline.launch import Executor, Launch, job_argv, job_environment
from speechbed.pipeline.plan import PlannedJob
from speechbed.pipeline.slurm.arrays import ArrayElement, ArraySidecar, array_groups
from speechbed.pipeline.slurm.commands import (
    array_comment,
    gpus_per_node_command,
    job_comment,
    largest_gpu_count,
    sbatch_command,
)
from speechbed.pipeline.slurm.settings import SlurmSettings
from speechbed.step_runner import LINEAGE_FILE_VARIABLE


def slurm_files(job: PlannedJob) -> tuple[Path, Path]:
    """Slurm's output file of the job and its watcher's status file, beside the job's log."""
    stem = job.log_path.name.removesuffix(".log")
    return (
        job.log_path.with_name(f"{stem}.slurm.out"),
        job.log_path.with_name(f"{stem}.slurm.json"),
    )


def handed(job: PlannedJob) -> Path:
    """Where the job on the cluster writes its lineage: one file per job key, not per runner,
    so a job adopted by the next runner hands it to that one (its watcher moves it)."""
    return job.log_path.with_name(f".{job.key}.lineage-slurm.json")


def cluster_gpus(environ: Mapping[str, str]) -> int:
    """The most GPUs any node has; ``UserInputError`` when Slurm cannot be asked."""
    if shutil.which("sbatch", path=environ.get("PATH")) is None:
        raise UserInputError(
            "run_in: slurm needs Slurm's commands (sbatch, squeue, scontrol, scancel) on PATH; "
            "run the pipeline on a machine that can submit jobs, or use run_in: host"
        )
    try:
        found = subprocess.run(
            gpus_per_node_command(),
            env=dict(environ),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise UserInputError(f"cannot ask Slurm for its nodes (sinfo): {error}") from None
    if found.returncode != 0:
        message = found.stderr.strip().splitlines()[-1:] or ["no message"]
        raise UserInputError(
            f"the Slurm controller did not answer sinfo: {message[0]} "
            "(is slurmctld up and SLURM_CONF right?)"
        )
    return largest_gpu_count(found.stdout)


class SlurmExecutor(Executor):
    """Submits ``python SCRIPT -y CONFIG ARGS...`` with sbatch, through a watcher process."""

    name = "slurm"
    leases_local_gpus = False
    queues_behind = True

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self._largest_node: int | None = None
        self._arrays: dict[int, tuple[ArraySidecar, int, int]] = {}  # job index -> its array

    def check(self, job: PlannedJob) -> None:
        SlurmSettings.from_environment(self._environ)
        if self._largest_node is None:
            self._largest_node = cluster_gpus(self._environ)
        if job.num_gpus > self._largest_node:
            raise UserInputError(
                f"asks for num_gpus: {job.num_gpus} but the largest node of the Slurm cluster "
                f"has {self._largest_node} GPU(s) (sinfo); lower num_gpus"
            )

    def group(self, jobs: Sequence[PlannedJob], num_jobs: int) -> None:
        """Jobs of one segment that share script and resources become one job array
        (``speechbed.pipeline.slurm.arrays``), at most ``num_jobs`` of it running at once."""
        if not SlurmSettings.from_environment(self._environ).arrays:
            return
        fresh = [job for job in jobs if job.run_in == self.name and job.index not in self._arrays]
        for members in array_groups(fresh):
            elements = [
                ArrayElement(
                    key=job.key,
                    name=job.name,
                    argv=job_argv(job),
                    env={"SPEECHBED_JOB_NAME": job.name, LINEAGE_FILE_VARIABLE: str(handed(job))},
                )
                for job in members
            ]
            sidecar = ArraySidecar.create(members[0].log_path.parent, elements)
            for position, job in enumerate(members):
                self._arrays[job.index] = (sidecar, position, max(1, num_jobs))

    def launch(
        self,
        job: PlannedJob,
        devices: list[int],
        base_env: Mapping[str, str],
        after: Sequence[str] = (),
    ) -> Launch:
        settings = SlurmSettings.from_environment(base_env)
        env = job_environment(job, [], base_env)
        del env["CUDA_VISIBLE_DEVICES"]  # Slurm sets it to the GPUs it allocated
        output, status = slurm_files(job)
        status.unlink(missing_ok=True)  # an earlier run's id is not this launch's
        lineage: list[str] = []
        expected = env.get(LINEAGE_FILE_VARIABLE)
        if expected:
            # One hand-over file per job key, not per runner: a job adopted by the next
            # runner hands its lineage to that one; the watcher moves it where it is expected.
            env[LINEAGE_FILE_VARIABLE] = str(handed(job))
            lineage = ["--lineage", str(handed(job)), expected]
        batch = [
            sys.executable,
            "-m",
            "speechbed.pipeline.slurm.batch",
            "--cwd",
            str(job.root),
            "--max-requeues",
            str(settings.max_requeues),
        ]
        array: list[str] = []
        in_array = self._arrays.get(job.index)
        if in_array is None:
            batch += ["--output", str(output), "--", *job_argv(job)]
            job_name, comment, pattern = f"{job.pipeline}/{job.name}", job_comment(job.key), output
        else:
            sidecar, position, throttle = in_array
            batch += ["--array-file", str(sidecar.path)]
            job_name = f"{job.pipeline}/{job.script.stem}[{len(sidecar.elements)}]"
            comment, pattern = array_comment(sidecar.group), sidecar.output("%a")
            array = [f"--array-file={sidecar.path}", f"--array-index={position}"]
            array += [f"--array-throttle={throttle}", f"--single-output={output}"]
            output = sidecar.output(position)
        sbatch = sbatch_command(
            settings,
            job.slurm,
            job_name=job_name,
            comment=comment,
            output=pattern,
            cwd=job.root,
            num_gpus=job.num_gpus,
            argv=batch,
            after=after,
            array=in_array is not None,
            processes=job.processes,
        )
        watcher = [
            sys.executable,
            "-m",
            "speechbed.pipeline.slurm.watcher",
            "--name",
            job.name,
            "--comment",
            job_comment(job.key),
            "--output",
            str(output),
            "--status",
            str(status),
            "--poll",
            str(settings.poll_seconds),
            *lineage,
            *array,
            "--",
            *sbatch,
        ]
        return Launch(argv=watcher, env=env, cwd=job.root, handle=str(status))

    def queued_id(self, launch: Launch) -> str | None:
        if launch.handle is None:
            return None
        with contextlib.suppress(OSError, ValueError):
            status = json.loads(Path(launch.handle).read_text(encoding="utf-8"))
            if status.get("state") == "SUBMITTED":  # an array's elements: the array's id
                return status.get("array_job_id") or status.get("job_id")
        return None

    def ending(self, job: PlannedJob, launch: Launch, returncode: int) -> str | None:
        if launch.handle is None:
            return None
        with contextlib.suppress(OSError, ValueError):
            status = json.loads(Path(launch.handle).read_text(encoding="utf-8"))
            failure = status.get("failure")
            if failure:
                return f"Slurm job {status.get('job_id') or '-'}: {failure}"
            if status.get("job_id"):
                return f"Slurm job {status['job_id']}: exit code {returncode}"
        return None
