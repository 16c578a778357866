"""Pipeline jobs of several data-parallel processes (``processes: N``) on the host, on CPU (Gloo).

A train job of two processes, started by the runner through torchrun, is compared with the
same run trained by one process with twice the gradient accumulation (the trainer's
equivalence, ``test_trainer_parallel``): the same model within float tolerance and the same
hist.csv. The tiny feature stores are conftest's ``cache_directory`` (16 training
utterances in batches of 4: two steps an epoch either way).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from slurm_cluster import SLURM_INSTALLED, one_node_cluster, slurm, wait
from test_trainer_parallel import read_history, write_config

from speechbed.pipeline.cli import main
from speechbed.pipeline.launch import step_command
from speechbed.pipeline.schema import PipelineStep

REPOSITORY = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPOSITORY / "scripts" / "train.py"


def write_pipeline(path: Path, jobs: list[dict], num_jobs: int = 1) -> Path:
    document = {"num_jobs": num_jobs, "allow_outside_scripts": True, "jobs": jobs}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def run(environ: dict[str, str], pipeline: Path, *flags: str) -> tuple[int, str]:
    output = io.StringIO()
    code = main(["-y", str(pipeline), *flags], environ=environ, stream=output)
    return code, output.getvalue()


def start_runner(pipeline: Path, environ: dict[str, str]) -> subprocess.Popen:
    """scripts/pipeline.py on ``pipeline`` in its own session, its output on a pipe."""
    return subprocess.Popen(
        [sys.executable, str(REPOSITORY / "scripts" / "pipeline.py"), "-y", str(pipeline)],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


@pytest.fixture
def cpu_env(testbed_env: dict[str, str]) -> dict[str, str]:
    # One thread per rank on this small machine; Gloo on the loopback device.
    return {**testbed_env, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}


def test_step_command_is_a_list_and_torchrun_for_several_processes():
    odd = ("/a b/it's $(x).py", "-y.yml", ["--flag", "a;b"])
    assert step_command("py", *odd) == ["py", "/a b/it's $(x).py", "-y", "-y.yml", "--flag", "a;b"]
    ranks = step_command("py", *odd, processes=3)
    assert ranks[:6] == ["py", "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                         "--nproc-per-node=3"]  # fmt: skip
    assert ranks[-6:] == ["speechbed.pipeline.data_parallel", "/a b/it's $(x).py", "-y",
                          "-y.yml", "--flag", "a;b"]  # fmt: skip
    # torchrun's own options as torch 2.13 reads them: the script and its args come through
    from torch.distributed.run import get_args_parser

    parsed = get_args_parser().parse_args(ranks[3:])
    assert parsed.standalone and parsed.nproc_per_node == "3" and parsed.module
    assert parsed.training_script == "speechbed.pipeline.data_parallel"
    assert parsed.training_script_args == ["/a b/it's $(x).py", "-y", "-y.yml", "--flag", "a;b"]
    assert "SIGUSR1" in parsed.signals_to_handle.split(",")


def test_more_processes_than_gpus_is_refused_before_anything_starts(
    tmp_path, cpu_env, recording_job, capsys
):
    job = {"script": "record_job.py", "config": "job.yml", "num_gpus": 2, "processes": 3}
    pipeline = write_pipeline(tmp_path / "p.yml", [job])
    code, output = run({**cpu_env, "SPEECHBED_GPUS": "0,1"}, pipeline)
    error = capsys.readouterr().err
    assert code == 2, output
    assert f"{pipeline}:4:" in error and "key 'jobs.0'" in error
    assert "processes: 3 but num_gpus: 2" in error and "num_gpus: 0 to train on CPU" in error
    assert not (tmp_path / "artifacts" / "logs").exists()
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "pipeline.py").write_text("")
    nested = {"script": "scripts/pipeline.py", "config": "job.yml", "processes": 2}
    code, output = run(cpu_env, write_pipeline(tmp_path / "n.yml", [nested]))
    error = capsys.readouterr().err
    assert code == 2 and "job 0 (job): key 'processes': a nested pipeline" in error, error
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        PipelineStep(script="s.py", config="c.yml", processes=0)
    assert PipelineStep(script="s.py", config="c.yml", processes=4).num_gpus == 0  # CPU, Gloo


def test_a_two_process_train_job_equals_one_process_with_twice_the_accumulation(
    tmp_path, cpu_env, cache_directory
):
    one = write_config(tmp_path / "one.yml", tmp_path / "runs" / "one", cache_directory, 2)
    two = write_config(tmp_path / "two.yml", tmp_path / "runs" / "two", cache_directory, 1)
    jobs = [
        {"script": str(TRAIN_SCRIPT), "config": str(one), "name": "one"},
        {"script": str(TRAIN_SCRIPT), "config": str(two), "name": "two", "processes": 2},
    ]
    pipeline = write_pipeline(tmp_path / "p.yml", jobs, num_jobs=2)
    code, output = run(cpu_env, pipeline)
    log = (tmp_path / "artifacts" / "logs" / "p" / "two.log").read_text()
    assert code == 0, output + log
    assert "-m torch.distributed.run --standalone --nnodes=1 --nproc-per-node=2" in log
    first = torch.load(tmp_path / "runs" / "one" / "model.pt", weights_only=False)
    second = torch.load(tmp_path / "runs" / "two" / "model.pt", weights_only=False)
    assert first["epoch"] == second["epoch"]
    for name, value in first["model"].items():
        torch.testing.assert_close(second["model"][name], value, rtol=1e-4, atol=1e-5)
    histories = [read_history(tmp_path / "runs" / name) for name in ("one", "two")]
    for single, parallel in zip(*histories, strict=True):
        assert float(parallel["loss"]) == pytest.approx(float(single["loss"]), rel=1e-5)
        assert parallel["dev_per"] == single["dev_per"]
    # one run folder and its lock: rank 1 wrote nothing beside rank 0's files
    written = sorted(path.name for path in (tmp_path / "runs").iterdir())
    assert written == [".one.lock", ".two.lock", "one", "two"]
    # rank 0 alone handed the runner its lineage: the done records hold what each run wrote
    records = [
        json.loads(path.read_text())
        for path in (tmp_path / "artifacts" / "pipelines" / "state").glob("*.json")
    ]
    outputs = {Path(path).name for record in records for path in record["lineage"]["outputs"]}
    assert {"one", "two"} <= outputs, records
    model_time = (tmp_path / "runs" / "two" / "model.pt").stat().st_mtime_ns
    code, output = run(cpu_env, pipeline)
    assert code == 0 and "pipeline p: 2 skipped" in output, output
    assert (tmp_path / "runs" / "two" / "model.pt").stat().st_mtime_ns == model_time


RANK_JOB = """
import json, os, sys, time
folder, exit_rank, sleep = sys.argv[sys.argv.index("--ranks") + 1 :][:3]
keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SLURM_NTASKS")
seen = {key: os.environ.get(key) for key in keys}
seen.update(pid=os.getpid(), argv=sys.argv[1:])
with open(os.path.join(folder, "rank" + os.environ["RANK"] + ".json"), "w") as handle:
    json.dump(seen, handle)
sys.stdout.write(f"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']}\\n")  # one write
time.sleep(float(sleep))
sys.exit(3 if os.environ["RANK"] == exit_rank else 0)
"""


def rank_job(folder: Path, name: str, exit_rank: int = -1, sleep: float = 0, **step) -> dict:
    """A step whose ranks each write what they see to ``folder``/rank<R>.json, sleep, and
    exit 0 (3 for ``exit_rank``)."""
    folder.mkdir(exist_ok=True)
    args = ["--ranks", str(folder), str(exit_rank), str(sleep)]
    return {"script": "rank_job.py", "config": "job.yml", "name": name, "args": args, **step}


def read_ranks(folder: Path) -> list[dict]:
    return [json.loads((folder / f"rank{rank}.json").read_text()) for rank in range(2)]


@pytest.fixture
def rank_script(tmp_path: Path) -> Path:
    (tmp_path / "rank_job.py").write_text(RANK_JOB)
    (tmp_path / "job.yml").write_text("{}\n")
    return tmp_path / "rank_job.py"


def test_a_failing_rank_fails_the_job_and_sigterm_ends_every_rank(tmp_path, cpu_env, rank_script):
    odd = tmp_path / "it's a $(odd) folder"
    failing = rank_job(odd, "failing", exit_rank=1, processes=2, num_gpus=2)
    inventory = {**cpu_env, "SPEECHBED_GPUS": "3,5"}  # lease files only: no GPU is touched
    code, output = run(inventory, write_pipeline(tmp_path / "p.yml", [failing]))
    assert code == 1, output
    log = (tmp_path / "artifacts" / "logs" / "p" / "failing.log").read_text()
    assert "rank 0 of 2" in log and "rank 1 of 2" in log and "exitcode  : 3" in log, log
    ranks = read_ranks(odd)
    assert [seen["argv"][-3] for seen in ranks] == [str(odd)] * 2  # no shell words
    # each rank sees both leased GPUs; its LOCAL_RANK says which one is its own
    assert [(seen["LOCAL_RANK"], seen["CUDA_VISIBLE_DEVICES"]) for seen in ranks] == [
        ("0", "3,5"),
        ("1", "3,5"),
    ]
    # the runner's SIGTERM (Ctrl-C) ends the job: torchrun and both ranks
    sleeping = rank_job(tmp_path / "sleeping", "sleeping", sleep=600, processes=2)
    pipeline = write_pipeline(tmp_path / "q.yml", [sleeping])
    runner = start_runner(pipeline, cpu_env)
    files = [tmp_path / "sleeping" / f"rank{rank}.json" for rank in range(2)]
    deadline = time.monotonic() + 60
    while not all(path.exists() and path.stat().st_size for path in files):
        assert runner.poll() is None and time.monotonic() < deadline, runner.communicate()[0]
        time.sleep(0.05)
    pids = [seen["pid"] for seen in read_ranks(tmp_path / "sleeping")]
    runner.send_signal(signal.SIGTERM)
    output = runner.communicate(timeout=60)[0]
    assert runner.returncode != 0, output
    try:
        assert not any(_alive(pid) for pid in pids), output
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


SLEEPER = """
import os, sys, time
open(sys.argv[sys.argv.index("--pids") + 1] + "." + os.environ["RANK"], "w").write(str(os.getpid()))
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has ended
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_ranks_end_with_their_job_even_when_torchrun_is_killed(tmp_path, cpu_env):
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    (tmp_path / "job.yml").write_text("{}\n")
    pids = tmp_path / "pid"
    argv = step_command(sys.executable, str(script), "job.yml", ["--pids", str(pids)], 2)
    launcher = subprocess.Popen(argv, cwd=tmp_path, env=cpu_env, process_group=0)
    ranks = [Path(f"{pids}.{rank}") for rank in range(2)]
    deadline = time.monotonic() + 60
    while not all(path.exists() and path.read_text() for path in ranks):
        assert launcher.poll() is None and time.monotonic() < deadline, "ranks did not start"
        time.sleep(0.05)
    rank_pids = [int(path.read_text()) for path in ranks]
    assert all(os.getpgid(pid) != launcher.pid for pid in rank_pids)  # out of the job's group
    os.killpg(launcher.pid, signal.SIGKILL)  # the runner's last resort reaches torchrun only
    launcher.wait()
    deadline = time.monotonic() + 10
    try:
        while any(_alive(pid) for pid in rank_pids):
            assert time.monotonic() < deadline, "a rank outlived torchrun"
            time.sleep(0.05)
    finally:
        for pid in rank_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_sweep_on_several_gpus_trains_data_parallel_and_evaluates_in_one_process(tmp_path):
    from test_sweep_selection import LABELLED

    from speechbed.pipeline.loader import load_pipeline
    from speechbed.sweep.experiment import load_experiment, write_experiment

    source = tmp_path / "labelled.yml"
    source.write_text(LABELLED, encoding="utf-8")
    experiment = load_experiment(source)
    out = tmp_path / "experiments" / "out" / "labelled"
    for num_gpus, processes in ((1, 1), (2, 2)):
        write_experiment(experiment, tmp_path, tmp_path / "artifacts", num_gpus=num_gpus)
        train = yaml.safe_load((out / "train.yml").read_text())["jobs"]
        evaluate = yaml.safe_load((out / "evaluate.yml").read_text())["jobs"]
        assert {(job["num_gpus"], job.get("processes", 1)) for job in train} == {
            (num_gpus, processes)
        }
        assert {(job["num_gpus"], job.get("processes", 1)) for job in evaluate} == {(num_gpus, 1)}
    # the pipeline reads the written train jobs as two ranks each
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "train.py").write_text("")
    artifacts = tmp_path / "artifacts"
    environ = {"ARTIFACTS_DIRECTORY": str(artifacts), "CACHE_DIRECTORY": str(tmp_path)}
    planned = load_pipeline(out / "train.yml", environ, [0, 1], tmp_path, artifacts)
    assert {job.processes for job in planned.jobs} == {2}


@pytest.fixture(scope="module")
def slurm_conf(tmp_path_factory) -> Iterator[Path]:
    """The one-node test cluster (two fake GPUs) of tests/slurm_cluster.py."""
    if not SLURM_INSTALLED:
        pytest.skip("Slurm is not installed (apt-get install slurm-wlm; .ci/run does)")
    with one_node_cluster(tmp_path_factory.mktemp("slurm")) as conf:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SLURM_CONF", str(conf))  # the executor's check reads os.environ
            yield conf


def test_on_slurm_the_ranks_share_one_task_and_its_gpus(tmp_path, cpu_env, rank_script, slurm_conf):
    environ = {**cpu_env, "SLURM_CONF": str(slurm_conf), "SPEECHBED_SLURM_POLL_SECONDS": "0.2"}
    job = rank_job(tmp_path / "ranks", "ranks", run_in="slurm", num_gpus=2, processes=2)
    code, output = run(environ, write_pipeline(tmp_path / "p.yml", [job]))
    log = (tmp_path / "artifacts" / "logs" / "p" / "ranks.log").read_text()
    assert code == 0, output + log
    ranks = read_ranks(tmp_path / "ranks")
    assert [(seen["RANK"], seen["LOCAL_RANK"]) for seen in ranks] == [("0", "0"), ("1", "1")]
    assert {seen["WORLD_SIZE"] for seen in ranks} == {"2"}
    assert {seen["CUDA_VISIBLE_DEVICES"] for seen in ranks} == {"0,1"}  # both GPUs, rank r takes r
    assert len({seen["SLURM_JOB_ID"] for seen in ranks}) == 1  # one sbatch job
    assert {seen["SLURM_NTASKS"] for seen in ranks} == {"1"}


CHECKPOINTING_RANK = """\
import os, signal, sys, time
rank = os.environ["RANK"]
if os.path.exists("checkpoint." + rank):
    print("rank " + rank + " resumed from " + open("checkpoint." + rank).read(), flush=True)
    sys.exit(0)
def stop(number, frame):
    open("checkpoint." + rank, "w").write("epoch 3")
    print("rank " + rank + " checkpointed", flush=True)
    sys.exit(75)
signal.signal(signal.SIGUSR1, stop)
open("started." + rank, "w").close()
time.sleep(60)
sys.exit(9)
"""


@pytest.mark.slow
def test_on_slurm_the_time_limit_signal_reaches_every_rank_and_the_job_resumes(
    tmp_path, cpu_env, rank_script, slurm_conf
):
    environ = {**cpu_env, "SLURM_CONF": str(slurm_conf), "SPEECHBED_SLURM_POLL_SECONDS": "0.2"}
    (tmp_path / "checkpointing.py").write_text(CHECKPOINTING_RANK)
    job = {"script": "checkpointing.py", "config": "job.yml", "name": "train"}
    pipeline = write_pipeline(tmp_path / "p.yml", [{**job, "run_in": "slurm", "processes": 2}])
    runner = start_runner(pipeline, environ)
    try:
        wait(lambda: all((tmp_path / f"started.{rank}").exists() for rank in "01"), 60, "ranks")
        listing = slurm("squeue", "--noheader", "--me", "--format=%i|%j")
        [job_id] = [line.split("|")[0] for line in listing.splitlines() if "p/train" in line]
        # what Slurm sends --signal seconds before the time limit, to the batch step
        subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True, timeout=30)

        def requeued() -> bool:
            shown = slurm("scontrol", "show", "job", "--oneliner", job_id)
            return "JobState=PENDING" in shown and "Restarts=1" in shown

        wait(requeued, 60, "the requeue")
        time.sleep(1.1)  # a later second than the requeue (tests/test_slurm.py says why)
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], timeout=30)
        output = runner.communicate(timeout=120)[0]
    finally:
        runner.kill()
    log = (tmp_path / "artifacts" / "logs" / "p" / "train.log").read_text()
    assert runner.returncode == 0, output + log
    for rank in "01":
        assert f"rank {rank} checkpointed" in log and f"rank {rank} resumed from epoch 3" in log
    assert "requeued job" in log, log
