"""The Slurm executor without a cluster: sbatch command lines, settings, parsers, the launch.

The real cluster's behaviour is tests/test_slurm.py.
"""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from speechbed.errors import UserInputError
from speechbed.pipeline.cli import main
from speechbed.pipeline.executors import EXECUTOR_FACTORIES, HostExecutor
from speechbed.pipeline.launch import job_argv
from speechbed.pipeline.loader import load_pipeline
from speechbed.pipeline.plan import PlannedJob
from speechbed.pipeline.slurm.arrays import (
    ArrayElement,
    ArraySidecar,
    adoptable,
    array_groups,
    submit_once,
)
from speechbed.pipeline.slurm.commands import (
    BATCH_SCRIPT,
    active_array_tasks,
    active_job_with_comment,
    array_indices,
    largest_gpu_count,
    output_pattern,
    parse_job,
    sbatch_command,
    submitted_job_id,
    with_array,
)
from speechbed.pipeline.slurm.executor import SlurmExecutor
from speechbed.pipeline.slurm.settings import SlurmJobOptions, SlurmSettings

ODD = Path('/data/my runs/it\'s "odd" $HOME; rm -rf 100%')


DEFAULTS = SlurmSettings()


def command(settings=DEFAULTS, options=None, num_gpus=0, argv=("python", "x.py")):
    return sbatch_command(
        settings,
        options,
        job_name="p/train",
        comment="speechbed-key:abc",
        output=ODD / "train.slurm.out",
        cwd=ODD,
        num_gpus=num_gpus,
        argv=list(argv),
    )


def test_sbatch_line_is_an_argument_list_with_the_job_argv_last():
    argv = ["/venv/bin/python", str(ODD / "train.py"), "-y", "a b.yml", "--x=$(id)"]
    line = command(argv=argv)
    assert line[0] == "sbatch" and "--parsable" in line
    assert line[line.index("/dev/stdin") + 1 :] == argv  # untouched: no shell words
    assert f"--chdir={ODD}" in line
    assert "--requeue" in line and "--signal=B:USR1@300" in line
    assert "--job-name=p/train" in line and "--comment=speechbed-key:abc" in line
    assert not any(option.startswith(("--gres", "--gpus")) for option in line)


def test_a_job_behind_a_barrier_waits_for_its_jobs_to_succeed():
    assert not any(option.startswith("--dependency") for option in command())
    line = sbatch_command(
        DEFAULTS,
        None,
        job_name="p/next",
        comment="speechbed-key:def",
        output=ODD / "next.slurm.out",
        cwd=ODD,
        num_gpus=0,
        argv=["python", "x.py"],
        after=["12", "13"],
    )
    assert "--dependency=afterok:12:13" in line and "--kill-on-invalid-dep=yes" in line
    assert line.index("--dependency=afterok:12:13") < line.index("/dev/stdin")


def test_percent_in_the_output_path_is_not_a_replacement_symbol():
    line = command()
    assert f"--output={ODD}/train.slurm.out".replace("100%", "100%%") in line
    assert output_pattern(Path("/a/%j/b")) == "/a/%%j/b"


def test_batch_script_runs_its_arguments_and_builds_no_shell_words(tmp_path):
    script = tmp_path / "batch.sh"
    script.write_text(BATCH_SCRIPT)
    odd = ["it's", '"q"', "$HOME", "a b", "; echo no"]
    shown = subprocess.run(
        ["sh", str(script), sys.executable, "-c", "import sys; print(sys.argv[1:])", *odd],
        capture_output=True,
        text=True,
    )
    assert shown.stdout.strip() == repr(odd)
    missing = subprocess.run(["sh", str(script), "/nowhere/python"], capture_output=True, text=True)
    assert missing.returncode == 2 and "filesystem the compute nodes share" in missing.stderr


def test_gpu_request_gres_or_gpus_with_the_gpu_options():
    settings = SlurmSettings(gpu_options=("--constraint=a100",), cpu_options=("--qos=cpu",))
    gpu_line = command(settings, num_gpus=2)
    assert "--gres=gpu:2" in gpu_line and "--constraint=a100" in gpu_line
    assert "--qos=cpu" not in gpu_line
    assert "--qos=cpu" in command(settings) and "--constraint=a100" not in command(settings)
    by_count = command(SlurmSettings(gpu_request="gpus"), num_gpus=1)
    assert "--gpus=1" in by_count and not any(o.startswith("--gres") for o in by_count)


def test_environment_settings_and_the_jobs_own_options_win():
    settings = SlurmSettings.from_environment(
        {
            "SPEECHBED_SLURM_PARTITION": "gpu",
            "SPEECHBED_SLURM_ACCOUNT": "lab",
            "SPEECHBED_SLURM_TIME": "24:00:00",
            "SPEECHBED_SLURM_GPU_OPTIONS": "--constraint='a100|h100' --qos=high",
            "SPEECHBED_SLURM_SIGNAL_SECONDS": "120",
        }
    )
    assert settings.gpu_options == ("--constraint=a100|h100", "--qos=high")
    line = command(settings)
    assert {"--partition=gpu", "--account=lab", "--time=24:00:00", "--signal=B:USR1@120"} <= set(
        line
    )
    own = SlurmJobOptions(
        partition="debug", time="0:30:00", mem="16G", cpus_per_task=4, options=["--exclusive"]
    )
    line = command(settings, own)
    assert {"--partition=debug", "--time=0:30:00", "--mem=16G", "--cpus-per-task=4"} <= set(line)
    assert "--partition=gpu" not in line and "--exclusive" in line
    assert line.index("--exclusive") < line.index("/dev/stdin")


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("SPEECHBED_SLURM_GPU_REQUEST", "tres", "gres"),
        ("SPEECHBED_SLURM_TIME", "two hours", "time limit"),
        ("SPEECHBED_SLURM_CPU_OPTIONS", "qos=x", "not an sbatch option"),
        ("SPEECHBED_SLURM_GPU_OPTIONS", "--constraint='a", "shell words"),
        ("SPEECHBED_SLURM_MAX_REQUEUES", "-1", "negative"),
    ],
)
def test_bad_environment_settings_are_named(name, value, words):
    with pytest.raises(UserInputError, match=name) as error:
        SlurmSettings.from_environment({name: value})
    assert words in str(error.value)


def test_answers_are_read():
    assert submitted_job_id("1234\n") == "1234" and submitted_job_id("77;cluster\n") == "77"
    with pytest.raises(ValueError):
        submitted_job_id("")
    listing = "5|COMPLETED|speechbed-key:k\n6|RUNNING|speechbed-key:k\n7|PENDING|other\n"
    assert active_job_with_comment(listing, "speechbed-key:k") == "6"
    assert active_job_with_comment("5|COMPLETED|speechbed-key:k\n", "speechbed-key:k") is None
    shown = (
        "JobId=9 JobName=p/t UserId=root(0) JobState=TIMEOUT Reason=TimeLimit Dependency=(null) "
        "Requeue=1 Restarts=2 BatchFlag=1 ExitCode=0:15 NodeList=node7"
    )
    info = parse_job(shown)
    assert info is not None and info.final and info.restarts == 2 and info.node == "node7"
    assert info.returncode() == 143 and info.failure() == "TIMEOUT (TimeLimit)"
    failed = parse_job("JobId=9 JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0")
    assert failed is not None and failed.returncode() == 3 and failed.failure() is None
    assert parse_job("slurm_load_jobs error: Invalid job id specified") is None
    assert largest_gpu_count("gpu:2\n(null)\ngpu:a100:4(S:0-1),tmp:1\n") == 4
    assert largest_gpu_count("(null)\n") == 0


def _job(tmp_path: Path, num_gpus: int = 0) -> PlannedJob:
    return PlannedJob(
        index=0,
        name="train",
        script=tmp_path / "train.py",
        config=tmp_path / "run.yml",
        args=("--epochs", "3"),
        run_in="slurm",
        num_gpus=num_gpus,
        blocking=False,
        key="k" * 24,
        root=tmp_path,
        pipeline="p",
        log_path=tmp_path / "logs" / "p" / "train.log",
        slurm=SlurmJobOptions(mem="4G"),
    )


def test_launch_is_the_watcher_with_the_host_argv_and_no_local_gpus(tmp_path):
    lineage = tmp_path / "state" / ".kkk.lineage-42.json"
    base = {"CUDA_VISIBLE_DEVICES": "0,1", "SPEECHBED_LINEAGE_FILE": str(lineage), "PATH": "/bin"}
    launch = SlurmExecutor(base).launch(_job(tmp_path, num_gpus=1), [], base)
    argv = launch.argv
    assert argv[1:3] == ["-m", "speechbed.pipeline.slurm.watcher"]
    sbatch = argv[argv.index("--") + 1 :]
    assert sbatch[0] == "sbatch" and "--gres=gpu:1" in sbatch and "--mem=4G" in sbatch
    job_argv = sbatch[sbatch.index("--", sbatch.index("/dev/stdin")) + 1 :]
    assert job_argv == [sys.executable, str(tmp_path / "train.py"), "-y", str(tmp_path / "run.yml"), "--epochs", "3"]  # fmt: skip
    assert "CUDA_VISIBLE_DEVICES" not in launch.env  # Slurm sets it
    handed = launch.env["SPEECHBED_LINEAGE_FILE"]
    assert handed.endswith(".lineage-slurm.json")
    assert argv[argv.index("--lineage") + 1 : argv.index("--lineage") + 3] == [handed, str(lineage)]
    assert launch.handle == str(tmp_path / "logs" / "p" / "train.slurm.json")


def test_run_in_override_spares_nested_pipelines(tmp_path, recording_job, monkeypatch):
    class Elsewhere(HostExecutor):
        name = "elsewhere"

    monkeypatch.setitem(EXECUTOR_FACTORIES, "elsewhere", Elsewhere)
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "pipeline.py").write_text("")
    pipeline = tmp_path / "p.yml"
    steps = [
        {"script": "record_job.py", "config": "job.yml"},
        {"script": "scripts/pipeline.py", "config": "job.yml"},
    ]
    pipeline.write_text(yaml.safe_dump({"jobs": steps}))
    artifacts = tmp_path / "artifacts"
    loaded = load_pipeline(pipeline, {"SPEECHBED_RUN_IN": "elsewhere"}, [], tmp_path, artifacts)
    assert [job.run_in for job in loaded.jobs] == ["elsewhere", "host"]
    loaded = load_pipeline(pipeline, {}, [], tmp_path, artifacts, run_in="elsewhere")
    assert [job.run_in for job in loaded.jobs] == ["elsewhere", "host"]


def test_bad_slurm_mapping_is_named_with_its_line(tmp_path, testbed_env, recording_job, capsys):
    pipeline = tmp_path / "p.yml"
    pipeline.write_text(
        "jobs:\n  - script: record_job.py\n    config: job.yml\n    run_in: slurm\n"
        "    slurm: {time: two hours}\n"
    )
    code = main(["-y", str(pipeline)], environ=testbed_env, stream=io.StringIO())
    error = capsys.readouterr().err
    assert code == 2 and "slurm.time" in error and "p.yml:5" in error, error


def test_without_sbatch_the_job_is_refused_before_anything_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserInputError, match="needs Slurm's commands"):
        SlurmExecutor().check(_job(tmp_path))


# ---------------------------------------------------------------- job arrays


def _runs(tmp_path: Path, count: int) -> list[PlannedJob]:
    """``count`` jobs of one step: same script and resources, their own name, key and seed."""
    base = _job(tmp_path)
    return [
        dataclasses.replace(
            base, index=index, name=f"run{index}", key=f"key{index}", args=("--seed", str(index))
        )
        for index in range(count)
    ]


def test_array_index_lists_and_the_throttle():
    assert (
        array_indices([0, 1, 2, 3]) == "0-3" and array_indices([5, 0, 2, 3, 7, 8]) == "0,2-3,5,7-8"
    )
    line = with_array(command(), [0, 1, 2, 4], 3)
    assert line[line.index("/dev/stdin") - 1] == "--array=0-2,4%3"
    with pytest.raises(ValueError):
        with_array(command(), [], 2)


def test_dependents_of_an_array_depend_on_its_id_once():
    line = sbatch_command(
        DEFAULTS, None, job_name="p/next", comment="c", output=ODD / "n.out", cwd=ODD,
        num_gpus=0, argv=["python"], after=["41", "40", "41", "39_2"],
    )  # fmt: skip
    assert "--dependency=afterok:41:40:39_2" in line


def test_an_array_output_pattern_keeps_its_index_symbol_but_escapes_the_folder():
    line = sbatch_command(
        DEFAULTS, None, job_name="p/train[3]", comment="c", output=ODD / "x-%a.out", cwd=ODD,
        num_gpus=0, argv=["python"], array=True,
    )  # fmt: skip
    assert f"--output={str(ODD).replace('%', '%%')}/x-%a.out" in line


def test_squeue_rows_of_arrays_give_their_queued_or_running_tasks():
    listing = (
        "40_0|COMPLETED|speechbed-array:g1\n40_1|RUNNING|speechbed-array:g1\n"
        "40_[2-3,6%2]|PENDING|speechbed-array:g1\n41_0|FAILED|speechbed-array:g2\n"
        "42|RUNNING|speechbed-key:k\n43_1|RUNNING|other\n"
    )
    assert active_array_tasks(listing, "speechbed-array:") == [
        ("40", "speechbed-array:g1", {1, 2, 3, 6})
    ]


def test_jobs_that_share_script_and_resources_are_grouped(tmp_path):
    jobs = [*_runs(tmp_path, 3), dataclasses.replace(_job(tmp_path), index=3, num_gpus=1)]
    assert [[job.name for job in group] for group in array_groups(jobs)] == [
        ["run0", "run1", "run2"]
    ]
    other_memory = dataclasses.replace(jobs[1], slurm=SlurmJobOptions(mem="8G"))
    assert array_groups([jobs[0], other_memory]) == []
    assert array_groups([jobs[0], dataclasses.replace(jobs[1], script=tmp_path / "b.py")]) == []


def test_an_element_runs_the_host_argv_from_its_sidecar(tmp_path):
    jobs = _runs(tmp_path, 3)
    lineage = tmp_path / "state" / ".k.lineage-42.json"
    base = {"SPEECHBED_LINEAGE_FILE": str(lineage), "PATH": "/bin"}
    executor = SlurmExecutor(base)
    executor.group(jobs, num_jobs=2)
    executor.group(jobs[1:], num_jobs=2)  # asked again before each launch: same array
    launches = [executor.launch(job, [], base, after=["7"]) for job in jobs]
    files = {
        argument for launch in launches for argument in launch.argv if "--array-file=" in argument
    }
    [sidecar_file] = files
    sidecar = ArraySidecar.read(Path(sidecar_file.split("=", 1)[1]))
    assert [element.argv for element in sidecar.elements] == [job_argv(job) for job in jobs]
    assert [element.env["SPEECHBED_JOB_NAME"] for element in sidecar.elements] == [
        "run0", "run1", "run2"
    ]  # fmt: skip
    assert (
        sidecar.elements[1].env["SPEECHBED_LINEAGE_FILE"]
        == launches[1].env["SPEECHBED_LINEAGE_FILE"]
    )
    argv = launches[2].argv
    assert "--array-index=2" in argv and "--array-throttle=2" in argv
    sbatch = argv[argv.index("--") + 1 :]
    assert sbatch[sbatch.index("/dev/stdin") + 1 :][-2:] == ["--array-file", str(sidecar.path)]
    assert f"--comment=speechbed-array:{sidecar.group}" in sbatch
    assert "--dependency=afterok:7" in sbatch and "--job-name=p/train[3]" in sbatch
    assert argv[argv.index("--output") + 1] == str(sidecar.output(2))


def test_the_batch_step_of_an_element_runs_its_argv_with_its_variables(tmp_path):
    show = "import os, sys; print(sys.argv[1:], os.environ['SPEECHBED_JOB_NAME'])"
    elements = [
        ArrayElement(key=f"k{i}", name=f"run{i}", argv=[sys.executable, "-c", show, f"it's {i}", "$HOME"],
                     env={"SPEECHBED_JOB_NAME": f"run{i}"})
        for i in range(2)
    ]  # fmt: skip
    sidecar = ArraySidecar.create(tmp_path, elements)
    batch = [sys.executable, "-m", "speechbed.pipeline.slurm.batch", "--cwd", str(tmp_path)]
    batch += ["--array-file", str(sidecar.path)]
    ran = subprocess.run(
        batch, cwd=tmp_path, env={**os.environ, "SLURM_ARRAY_TASK_ID": "1"},
        capture_output=True, text=True,
    )  # fmt: skip
    assert ran.returncode == 0 and ran.stdout.strip() == "[\"it's 1\", '$HOME'] run1", ran
    missing = subprocess.run(
        batch, cwd=tmp_path, env={**os.environ, "SLURM_ARRAY_TASK_ID": "5"},
        capture_output=True, text=True,
    )  # fmt: skip
    assert missing.returncode == 2 and "no job for array task '5'" in missing.stdout


def test_a_new_array_adopts_what_an_earlier_runner_left(tmp_path):
    elements = [ArrayElement(key=f"k{i}", name=f"r{i}", argv=["x"], env={}) for i in range(4)]
    earlier = ArraySidecar.create(tmp_path, elements[:3])
    now = ArraySidecar.create(tmp_path, elements[1:])  # k0 finished meanwhile
    listing = (
        f"50_0|COMPLETED|speechbed-array:{earlier.group}\n"
        f"50_1|RUNNING|speechbed-array:{earlier.group}\n"
        f"50_[2]|PENDING|speechbed-array:{earlier.group}\n"
        "51|PENDING|speechbed-key:k3\n"
    )
    assert adoptable(listing, now) == {
        0: ("50_1", earlier.output(1)), 1: ("50_2", earlier.output(2)), 2: ("51", None)
    }  # fmt: skip


def test_the_first_watcher_submits_the_array_and_the_others_read_it(tmp_path):
    elements = [ArrayElement(key=f"k{i}", name=f"r{i}", argv=["x"], env={}) for i in range(3)]
    sidecar = ArraySidecar.create(tmp_path, elements)
    calls: list[list[str]] = []

    def run(line, stdin):
        calls.append(list(line))
        if line[0] == "squeue":
            return 0, "51|RUNNING|speechbed-key:k1\n", ""
        assert stdin == BATCH_SCRIPT
        return 0, "60\n", ""

    first = submit_once(sidecar, command(), 2, run)
    again = submit_once(sidecar, command(), 2, run)
    assert first == again == {
        "array_job_id": "60", "ids": {"1": "51", "0": "60_0", "2": "60_2"}, "outputs": {}
    }  # fmt: skip
    assert len(calls) == 2 and "--array=0,2%2" in calls[1]

    refused = ArraySidecar.create(tmp_path, elements)
    record = submit_once(
        refused, command(), 2, lambda line, stdin: (0, "", "") if line[0] == "squeue" else (
            1, "", "sbatch: error: invalid partition specified: gpu\n")
    )  # fmt: skip
    assert record["failure"] == "sbatch refused: sbatch: error: invalid partition specified: gpu"


def test_arrays_are_split_at_slurms_array_size_and_can_be_switched_off(tmp_path, monkeypatch):
    monkeypatch.setattr("speechbed.pipeline.slurm.arrays.MAX_ARRAY_SIZE", 3)
    jobs = _runs(tmp_path, 7)
    assert [len(group) for group in array_groups(jobs)] == [3, 3]  # the seventh runs alone
    base = {"PATH": "/bin", "SPEECHBED_SLURM_ARRAYS": "0"}
    executor = SlurmExecutor(base)
    executor.group(jobs, num_jobs=2)
    assert not any(arg.startswith("--array") for arg in executor.launch(jobs[0], [], base).argv)
    with pytest.raises(UserInputError, match="SPEECHBED_SLURM_ARRAYS='maybe'"):
        SlurmSettings.from_environment({"SPEECHBED_SLURM_ARRAYS": "maybe"})


# ---------------------------------------------------------------- data-parallel jobs


def test_a_data_parallel_job_is_one_task_on_one_node_running_torchrun(tmp_path):
    odd = dataclasses.replace(
        _job(tmp_path, num_gpus=2),
        script=ODD / "train.py",
        config=ODD / "-run.yml",
        args=("--x=$(id)",),
        processes=2,
    )
    base = {"PATH": "/bin"}
    argv = SlurmExecutor(base).launch(odd, [], base).argv
    sbatch = argv[argv.index("--") + 1 :]
    options = sbatch[: sbatch.index("/dev/stdin")]
    assert "--gres=gpu:2" in options and "--nodes=1" in options and "--ntasks=1" in options
    ranks = sbatch[sbatch.index("--", sbatch.index("/dev/stdin")) + 1 :]
    assert ranks == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
        "--nproc-per-node=2", "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
        "--module", "speechbed.pipeline.data_parallel",
        str(ODD / "train.py"), "-y", str(ODD / "-run.yml"), "--x=$(id)",
    ]  # fmt: skip
    one = SlurmExecutor(base).launch(_job(tmp_path, num_gpus=2), [], base).argv
    assert "--ntasks=1" not in one  # a one-process job's sbatch line is as before


def test_arrays_group_only_jobs_with_equal_processes(tmp_path):
    jobs = [dataclasses.replace(job, num_gpus=2) for job in _runs(tmp_path, 4)]
    jobs[1] = dataclasses.replace(jobs[1], processes=2)
    jobs[3] = dataclasses.replace(jobs[3], processes=2)
    groups = [[job.name for job in group] for group in array_groups(jobs)]
    assert groups == [["run0", "run2"], ["run1", "run3"]]
