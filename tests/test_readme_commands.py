"""Every shell command the README prints works as printed, as far as a test can afford.

Each ``make`` line's target and variables are checked with ``make -n`` (nothing runs); each
``.venv/bin/python SCRIPT`` line's script answers ``--help``; lines whose files exist and that
start nothing (``--help``, ``--dry-run``) are run for real.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"```(?:bash|sh)\n(.*?)```", re.DOTALL)


def readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in FENCE.findall(text):
        for line in block.splitlines():
            for part in line.split(" / "):  # "make jupyter / make tensorboard": two commands
                words = shlex.split(part, comments=True)
                if words and words[0] in ("make", ".venv/bin/python"):
                    commands.append(words)
    return commands


COMMANDS = readme_commands()


def _environment(tmp_path: Path) -> dict[str, str]:
    environ = {key: value for key, value in os.environ.items() if key != "ENV_FILE"}
    for variable, folder in (("ARTIFACTS_DIRECTORY", "a"), ("CACHE_DIRECTORY", "c")):
        environ[variable] = str(tmp_path / folder)
    environ["DATA_DIRECTORY"] = str(tmp_path / "d")
    return environ


def _prepared_timit(tmp_path: Path) -> None:
    """Empty manifests standing in for a prepared TIMIT (what the study's commands read)."""
    manifests = tmp_path / "c" / "timit" / "manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    for partition in ("train", "dev", "test"):
        (manifests / f"{partition}.jsonl").write_text("")


def test_the_readme_prints_commands():
    assert any(words[0] == "make" for words in COMMANDS)


@pytest.mark.parametrize(
    "words",
    [words for words in COMMANDS if words[0] == "make"],
    ids=lambda words: " ".join(words)[:60],
)
def test_each_make_line_names_a_target_that_exists(words, tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # -n: print the recipe, run nothing; -o install: the venv is there
    result = subprocess.run(
        ["make", "-n", "-o", "install", *words[1:]],
        cwd=ROOT, env=_environment(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "No rule to make target" not in result.stderr


@pytest.mark.parametrize(
    "words",
    [words for words in COMMANDS if words[0] == ".venv/bin/python" and words[1].endswith(".py")],
    ids=lambda words: " ".join(words)[:60],
)
def test_each_script_line_names_a_script_that_answers_help(words, tmp_path):
    script = ROOT / words[1]
    assert script.is_file(), f"the README names {words[1]}, which does not exist"
    result = subprocess.run(
        [sys.executable, str(script), "--help"],
        cwd=ROOT, env=_environment(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def _cheap(words: list[str]) -> bool:
    files = [word.split("=", 1)[-1] for word in words if word.endswith((".yml", ".yaml"))]
    flags = " ".join(words)
    return ("--dry-run" in flags or "--help" in flags) and all((ROOT / f).is_file() for f in files)


@pytest.mark.parametrize(
    "words", [words for words in COMMANDS if _cheap(words)], ids=lambda w: " ".join(w)[:60]
)
def test_cheap_readme_lines_run_as_printed(words, tmp_path):
    if words[0] == "make" and shutil.which("make") is None:
        pytest.skip("make is not installed")
    command = ["make", "-o", "install", *words[1:]] if words[0] == "make" else words
    _prepared_timit(tmp_path)
    result = subprocess.run(
        command, cwd=ROOT, env=_environment(tmp_path), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


# The command lines of issue 12 (and of the README text proposed with it), run as printed on a
# machine without GPUs, with empty manifests standing in for a prepared TIMIT.
ISSUE_COMMANDS = [
    'make experiment yml=experiments/mcorr.yml only="feature=fbank-81-10ms seed=1-5" '
    'set="training.num_epochs=2 data.batch_size=4" num_gpus=1 args=--dry-run',
    "make experiment yml=experiments/lcorr.yml num_gpus=1 args=--dry-run",
    "make pipeline yml=data_prep/timit/pipeline.yml args=--dry-run",
    'make pipeline yml=data_prep/timit/pipeline.yml args="--dry-run --from fbank --to sigbank"',
    ".venv/bin/python scripts/sweep_experiment.py --help",
]


@pytest.mark.parametrize("line", ISSUE_COMMANDS, ids=lambda line: line[:60])
def test_the_issues_command_lines_run_as_printed(line, tmp_path):
    if line.startswith("make") and shutil.which("make") is None:
        pytest.skip("make is not installed")
    environ = _environment(tmp_path)
    environ.update(SPEECHBED_GPUS="", CUDA_VISIBLE_DEVICES="", PATH="/usr/bin:/bin")
    _prepared_timit(tmp_path)
    words = shlex.split(line)
    command = (
        ["make", "--no-print-directory", "-o", "install", *words[1:]]
        if words[0] == "make"
        else words
    )
    result = subprocess.run(
        command, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert not (tmp_path / "a").exists() or "sweep" not in line  # a dry run writes nothing


def test_a_script_run_directly_reads_the_storage_defaults_make_gives(tmp_path):
    """No "ARTIFACTS_DIRECTORY is not set": unset storage variables get default.sh's folders."""
    job = tmp_path / "analyze.yml"
    job.write_text("experiments: [nothing_here]\nartifacts_directory: ${ARTIFACTS_DIRECTORY}\n")
    environ = {
        key: value
        for key, value in os.environ.items()
        if key not in ("ARTIFACTS_DIRECTORY", "CACHE_DIRECTORY", "DATA_DIRECTORY", "ENV_FILE")
    }
    environ["SPEECHBED_ROOT"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "analyze.py"), "-y", str(job), "--dry-run"],
        cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "is not set" not in result.stderr
    assert f"no runs of experiment 'nothing_here' under {tmp_path / 'storage' / 'artifacts'}" in (
        result.stderr
    )
