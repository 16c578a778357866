"""Slurm executor cost on a one-node test cluster, next to the host executor in the same run.

Run by ``make bench`` (benchmarks/run_all.py); ``.venv/bin/python benchmarks/run_all.py slurm``.
Skipped, saying so, where slurmctld/slurmd are missing (apt-get install slurm-wlm).

The cluster is the tests' one (tests/slurm_cluster.py: loopback, 2 CPUs, its files in a
temporary folder). Two measurements, each through a fresh ``scripts/pipeline.py`` process as
a user runs it:

- submission cost: NUM_SUBMITTED trivial jobs as NUM_SUBMITTED ``sbatch`` calls and as one
  job array, with the executor's own command lines, held (``--hold``, then cancelled) so
  only the submission is timed;
- a pipeline of NUM_JOBS trivial jobs at num_jobs=2 (the node's two CPUs), wall time per
  job with ``--run_in host``, and ``--run_in slurm`` one sbatch per job
  (SPEECHBED_SLURM_ARRAYS=0) and as one job array (the default);
- barrier delay: a chain of CHAIN_LENGTH jobs, each one a barrier, so each starts only
  when the one before it ended; the delay is a job's recorded start minus its
  predecessor's recorded end (both written by the jobs themselves). On Slurm the job
  after a barrier is queued behind it (``afterok``) once the barrier is queued, so the
  cluster starts it; the runner, which polls ``scontrol`` every
  SPEECHBED_SLURM_POLL_SECONDS, queues only one segment ahead, so the chain runs at two
  poll periods to show what the poll still costs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from speechbed.pipeline.slurm.arrays import ArrayElement, ArraySidecar
from speechbed.pipeline.slurm.commands import BATCH_SCRIPT, sbatch_command, with_array
from speechbed.pipeline.slurm.settings import SlurmSettings
from speechbed.storage import repository_root

NUM_SUBMITTED = 300
NUM_JOBS = 50
CHAIN_LENGTH = 6
POLL_SECONDS = (0.2, 2.0)
ROOT = repository_root()

# Appends {"label", "event", "time"} lines to the record file given after -y CONFIG.
RECORDING_JOB = """\
import json, sys, time
record, label = sys.argv[3], sys.argv[4]
def write(event):
    with open(record, "a") as stream:
        stream.write(json.dumps({"label": label, "event": event, "time": time.time()}) + "\\n")
write("start")
write("end")
"""


def _cluster_module():
    """tests/slurm_cluster.py, which starts the tests' cluster (not a package: load by path)."""
    path = ROOT / "tests" / "slurm_cluster.py"
    spec = importlib.util.spec_from_file_location("slurm_cluster", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_pipeline(folder: Path, name: str, count: int, blocking: bool) -> tuple[Path, Path]:
    """A pipeline of ``count`` recording jobs (each a barrier when ``blocking``) and its record."""
    script = folder / "recording_job.py"
    script.write_text(RECORDING_JOB)
    config = folder / "trivial.yml"
    config.write_text("nothing: 0\n")
    record = folder / f"{name}.jsonl"
    extra = ", blocking: true" if blocking else ""
    steps = "".join(
        f"  - {{name: job{index}, script: {script}, config: {config}, "
        f"args: ['{record}', '{index}']{extra}}}\n"
        for index in range(count)
    )
    pipeline = folder / f"{name}.yml"
    pipeline.write_text(
        "allow_outside_scripts: true  # the job lives in a temporary folder\n"
        f"num_jobs: 2\njobs:\n{steps}"
    )
    return pipeline, record


def _run_pipeline(
    pipeline: Path, environ: dict[str, str], run_in: str, tag: str, num_jobs: int = 2
) -> float:
    environ = {**environ, "ARTIFACTS_DIRECTORY": str(pipeline.parent / f"artifacts-{tag}")}
    command = [sys.executable, str(ROOT / "scripts" / "pipeline.py"), "-y", str(pipeline)]
    start = time.perf_counter()
    done = subprocess.run(
        [*command, "--run_in", run_in, "--num_jobs", str(num_jobs), "--gpus", ""],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environ,
        cwd=ROOT,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{pipeline.name} ({run_in}) failed:\n{done.stdout[-3000:]}")
    return seconds


def _barrier_delays(record: Path) -> list[float]:
    times = {}
    for line in record.read_text().splitlines():
        event = json.loads(line)
        times[int(event["label"]), event["event"]] = event["time"]
    return [times[index, "start"] - times[index - 1, "end"] for index in range(1, CHAIN_LENGTH)]


def _submission_seconds(folder: Path, environ: dict[str, str]) -> dict[str, float]:
    """Seconds to submit NUM_SUBMITTED trivial jobs one sbatch each, and as one job array,
    with the command lines the Slurm executor builds; held, then cancelled."""
    argv = [sys.executable, "-c", "pass"]

    def line(name: str, batch: list[str], array: bool = False) -> list[str]:
        output = folder / ("submitted-%a.out" if array else "submitted.out")
        return sbatch_command(
            SlurmSettings(), None, job_name=name, comment=f"bench:{name}", output=output,
            cwd=ROOT, num_gpus=0, argv=batch, array=array,
        )  # fmt: skip

    def submit(command: list[str]) -> None:
        held = [command[0], "--hold", *command[1:]]
        subprocess.run(
            held, input=BATCH_SCRIPT, env=environ, check=True, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip

    seconds = {}
    start = time.perf_counter()
    for index in range(NUM_SUBMITTED):
        submit(line(f"bench/single{index}", [*argv, str(index)]))
    seconds["one sbatch per job"] = time.perf_counter() - start
    subprocess.run(["scancel", "--me"], env=environ, check=True, timeout=60)
    elements = [
        ArrayElement(key=str(index), name=f"job{index}", argv=[*argv, str(index)], env={})
        for index in range(NUM_SUBMITTED)
    ]
    start = time.perf_counter()  # the sidecar file is part of an array's submission
    sidecar = ArraySidecar.create(folder, elements)
    batch = [sys.executable, "-m", "speechbed.pipeline.slurm.batch", "--cwd", str(ROOT)]
    batch += ["--array-file", str(sidecar.path)]
    submit(with_array(line("bench/array", batch, array=True), range(NUM_SUBMITTED), 2))
    seconds["one job array"] = time.perf_counter() - start
    subprocess.run(["scancel", "--me"], env=environ, check=True, timeout=60)
    return seconds


def main() -> None:
    cluster = _cluster_module()
    if not cluster.SLURM_INSTALLED:
        print(
            "skipped: Slurm is not installed (slurmctld/slurmd missing; apt-get install slurm-wlm)"
        )
        return
    with tempfile.TemporaryDirectory(prefix="bench-slurm-") as name:
        folder = Path(name)
        (folder / "cluster").mkdir()
        with cluster.one_node_cluster(folder / "cluster") as conf:
            environ = {
                key: value
                for key, value in os.environ.items()
                if key not in ("SPEECHBED_GPUS", "CUDA_VISIBLE_DEVICES")
            }
            environ |= {"SLURM_CONF": str(conf), "SPEECHBED_LEASE_DIR": str(folder / "leases")}
            fast = {**environ, "SPEECHBED_SLURM_POLL_SECONDS": str(POLL_SECONDS[0])}
            many, _ = _write_pipeline(folder, "many", NUM_JOBS, blocking=False)
            singles = {**fast, "SPEECHBED_SLURM_ARRAYS": "0"}
            wall = {
                "host": _run_pipeline(many, environ, "host", "many-host"),
                "slurm, one sbatch per job": _run_pipeline(many, singles, "slurm", "many-single"),
                "slurm, one job array": _run_pipeline(many, fast, "slurm", "many-array"),
            }
            submission = _submission_seconds(folder, environ)
            delays = {}
            host_chain, host_record = _write_pipeline(folder, "chain-host", CHAIN_LENGTH, True)
            _run_pipeline(host_chain, environ, "host", "chain-host")
            delays["host"] = _barrier_delays(host_record)
            for poll in POLL_SECONDS:
                chain, record = _write_pipeline(folder, f"chain-{poll}", CHAIN_LENGTH, True)
                polled = {**environ, "SPEECHBED_SLURM_POLL_SECONDS": str(poll)}
                _run_pipeline(chain, polled, "slurm", f"chain-{poll}")
                delays[f"slurm, poll {poll:g} s"] = _barrier_delays(record)
    print(f"Submission cost: {NUM_SUBMITTED} trivial jobs, held (submission only)")
    print(f"{'submitted as':<34} {'wall s':>8} {'ms/job':>8} {'vs array':>8}")
    for label, seconds in submission.items():
        print(
            f"{label:<34} {seconds:8.2f} {seconds / NUM_SUBMITTED * 1000:8.1f} "
            f"{seconds / submission['one job array']:7.1f}x"
        )
    print(f"\nPipeline: {NUM_JOBS} trivial jobs, one-node test cluster (2 CPUs), num_jobs=2")
    print(f"{'executor':<34} {'wall s':>8} {'ms/job':>8} {'vs host':>8}")
    for label, seconds in wall.items():
        print(
            f"{label:<34} {seconds:8.2f} {seconds / NUM_JOBS * 1000:8.0f} "
            f"{seconds / wall['host']:7.1f}x"
        )
    print(f"\nBarrier delay: a job's end to its dependent's start, {CHAIN_LENGTH - 1} barriers")
    print(f"{'executor':<34} {'median s':>9} {'max s':>7}")
    for label, found in delays.items():
        print(f"{label:<34} {statistics.median(found):9.2f} {max(found):7.2f}")


if __name__ == "__main__":
    main()
