"""``make check_environment``: every testbed variable, its value, where it came from, what is missing.

Run as ``python -m speechbed.environment [--env-file FILE]`` (the Makefile target does this).

The variables are the ``export NAME=...`` lines of ``setup/environment/default.sh``. Their
values are resolved the way the Makefile does it: the shell environment, then ENV_FILE,
then default.sh (whose ``${NAME:-default}`` lines only fill what is still unset). Each
value is reported with its source: ``shell`` (set before make ran), ``ENV_FILE`` (set or
changed by that file) or ``default.sh``. Secrets (names with KEY, TOKEN, SECRET or
PASSWORD, and passwords inside URLs) are never printed.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from speechbed.errors import UserInputError
from speechbed.pipeline.inventory import parse_gpu_list
from speechbed.pipeline.slurm.settings import SETTINGS as SLURM_SETTINGS
from speechbed.pipeline.slurm.settings import SlurmSettings
from speechbed.storage import ROOT_VARIABLE, STORAGE_FOLDERS, repository_root

#: The checkout whose default.sh the Makefile sources: SPEECHBED_ROOT is one of the variables
#: checked here, so it does not choose where they are declared.
REPOSITORY = repository_root({})
DEFAULTS_FILE = Path("setup/environment/default.sh")
_EXPORT = re.compile(r"^\s*export\s+([A-Za-z_][A-Za-z0-9_]*)=", re.MULTILINE)
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)([^@\s]+)(@)")
_MARKER = "\0--speechbed-after-env-file--\0"


@dataclass(frozen=True)
class Setting:
    """One variable as the testbed will see it."""

    name: str
    value: str
    source: str  # "shell", "ENV_FILE" or "default.sh"
    status: str  # "ok", or a note / problem for a person
    problem: bool = False


def declared_variables(defaults_file: Path) -> list[str]:
    """The names default.sh exports, in file order."""
    try:
        text = defaults_file.read_text(encoding="utf-8")
    except OSError as error:
        raise UserInputError(f"cannot read {defaults_file}: {error}") from None
    names: list[str] = []
    for name in _EXPORT.findall(text):
        if name not in names:
            names.append(name)
    return names


def _environment_dump(text: str) -> dict[str, str]:
    environ = {}
    for entry in text.split("\0"):
        name, separator, value = entry.partition("=")
        if separator:
            environ[name] = value
    return environ


def resolve(
    environ: Mapping[str, str], env_file: Path | None, root: Path
) -> tuple[dict[str, str], dict[str, str]]:
    """(after ENV_FILE, after default.sh): the environments bash ends up with, as the Makefile does it."""
    if env_file is not None and not env_file.is_file():
        raise UserInputError(f"ENV_FILE {env_file} not found (give a path relative to {root})")
    script = (
        'set -a; if [ -n "$1" ]; then . "$1" || exit 3; fi; set +a; env -0; '
        f"printf '{_MARKER.replace(chr(0), chr(92) + '0')}'; "
        'set -a; . "$2" || exit 4; set +a; env -0'
    )
    completed = subprocess.run(
        ["bash", "-c", script, "check_environment", str(env_file or ""), str(DEFAULTS_FILE)],
        cwd=root,
        env=dict(environ),
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        which = {3: f"ENV_FILE {env_file}", 4: str(DEFAULTS_FILE)}.get(completed.returncode, "bash")
        raise UserInputError(f"sourcing {which} failed: {completed.stderr.strip() or 'no message'}")
    after_env_file, _, final = completed.stdout.partition(_MARKER)
    return _environment_dump(after_env_file), _environment_dump(final)


def mask(name: str, value: str) -> str:
    """The value as it may be printed: secrets hidden, URL passwords replaced."""
    if _SECRET_NAME.search(name) and not name.startswith("PATH_TO_"):
        return f"<set, {len(value)} characters, hidden>" if value else ""
    return _URL_PASSWORD.sub(r"\1***\3", value)


def _folder_status(name: str, value: str) -> tuple[str, bool]:
    if not value:
        return "empty: set it to a folder", True
    path = Path(value)
    if path.is_dir():
        if name == "DATA_DIRECTORY" and not (path / "timit").is_dir():
            return "ok (no timit/ inside: only the synthetic corpus is available)", False
        return (
            ("ok", False)
            if os.access(path, os.W_OK) or name == "DATA_DIRECTORY"
            else (
                "not writable",
                True,
            )
        )
    if path.exists():
        return "exists but is not a folder", True
    if name == "DATA_DIRECTORY":
        return (
            "missing: put the LDC TIMIT at <DATA_DIRECTORY>/timit, or use the synthetic corpus",
            False,
        )
    return "missing (created on first use)", False


def check(name: str, value: str) -> tuple[str, bool]:
    """A note or problem for one variable: (text, is_problem)."""
    if name in (*STORAGE_FOLDERS, ROOT_VARIABLE):
        return _folder_status(name, value)
    if name == "SPEECHBED_LEASE_DIR":
        return ("ok", False) if value else ("empty: a /tmp folder is used", False)
    if name == "SPEECHBED_GPUS":
        if not value.strip():
            return "empty: CUDA_VISIBLE_DEVICES, else nvidia-smi -L, else no GPUs", False
        try:
            parse_gpu_list(value, name)
        except UserInputError as error:
            return str(error), True
        return "ok", False
    if name == "CONTAINER_ENGINE":
        if value not in ("docker", "podman"):
            return "must be docker or podman", True
        if shutil.which(value) is None:
            return f"{value} is not on PATH: run_in: container jobs cannot run", False
        return "ok", False
    if name.startswith("SPEECHBED_SLURM_"):
        try:
            SlurmSettings.from_environment({name: value})
        except UserInputError as error:
            return str(error), True
        meaning = SLURM_SETTINGS.get(name, "")
        return (f"empty: {meaning}", False) if not value.strip() else ("ok", False)
    if name.endswith("_PORT"):
        if not value.isdigit() or not 0 < int(value) < 65536:
            return "must be a port number (1-65535)", True
        return "ok", False
    if name == "PATH_TO_GOOGLE_CREDENTIALS":
        if not value or not Path(value).is_file():
            return "missing: results are not sent to Google Sheets", False
        return "ok", False
    if name == "COMET_API_KEY":
        return (
            ("ok", False) if value else ("empty: comet.ml offline (archives in run folders)", False)
        )
    if name == "SEARCH_STORAGE":
        if not value:
            return "empty: searches keep a journal file under ARTIFACTS_DIRECTORY/search/", False
        if value.startswith("sqlite"):
            return "ok for one worker (SQLite is refused for parallel workers)", False
        return "ok", False
    if _SECRET_NAME.search(name) and not value:
        return "empty", False
    return "ok", False


def collect(
    environ: Mapping[str, str], env_file: Path | None, root: Path = REPOSITORY
) -> tuple[list[Setting], list[Setting]]:
    """(declared settings, ENV_FILE variables default.sh does not declare)."""
    names = declared_variables(root / DEFAULTS_FILE)
    after_env_file, final = resolve(environ, env_file, root)
    settings = []
    for name in names:
        value = final.get(name, "")
        if name in environ and environ[name] == value:
            source = "shell"
        elif name in after_env_file and after_env_file[name] == value:
            source = "ENV_FILE"
        else:
            source = "default.sh"
        status, problem = check(name, value)
        settings.append(Setting(name, value, source, status, problem))
    extras = []
    for name, value in after_env_file.items():
        if name in names or environ.get(name) == value or name in ("_", "SHLVL", "PWD", "OLDPWD"):
            continue
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.8)
        status = (
            f"not a testbed variable; did you mean {close[0]}?"
            if close
            else "not declared in default.sh"
        )
        extras.append(Setting(name, value, "ENV_FILE", status, problem=bool(close)))
    return settings, extras


def report(
    settings: list[Setting], extras: list[Setting], env_file: Path | None, console: Console
) -> None:
    console.print(
        f"environment: shell, then {('ENV_FILE ' + str(env_file)) if env_file else 'no ENV_FILE'}, "
        f"then {DEFAULTS_FILE}"
    )
    table = Table(title_justify="left")
    for column in ("variable", "value", "from", "status"):
        table.add_column(column, overflow="fold")
    for setting in [*settings, *extras]:
        style = "red" if setting.problem else ("green" if setting.status == "ok" else "yellow")
        table.add_row(
            setting.name,
            mask(setting.name, setting.value),
            setting.source,
            Text(setting.status, style=style),
        )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env-file", default="", help="the ENV_FILE make was given (empty: none)")
    arguments = parser.parse_args(argv)
    env_file = Path(arguments.env_file) if arguments.env_file.strip() else None
    if env_file is not None and not env_file.is_absolute():
        env_file = Path.cwd() / env_file
    console = (
        Console(highlight=False) if sys.stdout.isatty() else Console(highlight=False, width=200)
    )
    try:
        settings, extras = collect(os.environ, env_file, REPOSITORY)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report(settings, extras, env_file, console)
    problems = [setting for setting in [*settings, *extras] if setting.problem]
    if problems:
        console.print(
            f"{len(problems)} problem(s): " + ", ".join(setting.name for setting in problems)
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
