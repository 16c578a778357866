"""Job files: ${VAR} substitution, one job or a jobs: list, schema errors with file:line and key.

Hand-written cases plus hypothesis properties: bad input is always a UserInputError, never a traceback.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field

from speechbed.errors import UserInputError
from speechbed.jobs import JobSchema, describe_schema, load_config, load_jobs
from speechbed.step_runner import JobContext, run_jobs_cli
from speechbed.variables import substitute_variables


class Window(JobSchema):
    length_ms: float = Field(default=25.0, description="frame length")
    shift_ms: float = Field(default=10.0, description="frame shift")


class FeatureJob(JobSchema):
    output_path: Path = Field(description="where the features go")
    num_filters: int = Field(default=80, description="mel filters")
    window: Window = Field(default_factory=Window, description="framing")


def write(tmp_path: Path, text: str, name: str = "job.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# ------------------------------------------------------------------ substitution


def test_substitution_forms():
    environ = {"HOME_DIR": "/h", "EMPTY": ""}
    text = "a: ${HOME_DIR}/x\nb: ${MISSING:-fallback}\nc: $${HOME_DIR}\nd: ${EMPTY:-unused}\ne: ${MISSING:-}\n"
    assert substitute_variables(text, "f.yml", environ) == (
        "a: /h/x\nb: fallback\nc: ${HOME_DIR}\nd: \ne: \n"
    )


def test_unset_variable_names_file_line_and_variable():
    with pytest.raises(UserInputError, match=r"^f\.yml:3: variable NOPE is not set"):
        substitute_variables("a: 1\nb: 2\nc: ${NOPE}\n", "f.yml", {})


@pytest.mark.parametrize("reference", ["${}", "${1A}", "${A-x}", "${A B}", "${A:-${B}}"])
def test_malformed_references_are_errors(reference):
    with pytest.raises(UserInputError, match=r"^f:2: "):
        substitute_variables(f"x: 1\ny: {reference}\n", "f", {"A": "a", "B": "b"})


NAMES = st.from_regex(r"[A-Z_][A-Z0-9_]{0,6}", fullmatch=True)
LITERALS = st.text(alphabet=st.characters(blacklist_characters="${}"), max_size=8)
DEFAULTS = LITERALS.filter(lambda text: "\n" not in text)  # a reference never spans lines


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(
        st.one_of(
            st.tuples(st.just("literal"), LITERALS),
            st.tuples(st.just("set"), NAMES),
            st.tuples(st.just("default"), st.tuples(NAMES, DEFAULTS)),
            st.tuples(st.just("escaped"), NAMES),
        ),
        max_size=8,
    ),
    values=st.dictionaries(NAMES, LITERALS, max_size=6),
)
def test_substitution_matches_a_piecewise_reference(pieces, values):
    # Build the text and, independently, what it must become.
    text, expected = "", ""
    environ = dict(values)
    for kind, payload in pieces:
        if kind == "set":
            environ.setdefault(payload, "v")
    for kind, payload in pieces:
        if kind == "literal":
            text += payload
            expected += payload
        elif kind == "set":
            text += "${" + payload + "}"
            expected += environ[payload]
        elif kind == "default":
            name, default = payload
            text += "${" + name + ":-" + default + "}"
            expected += environ.get(name, default)
        else:
            text += "$${" + payload + "}"
            expected += "${" + payload + "}"
    assert substitute_variables(text, "f", environ) == expected


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=60), environ=st.dictionaries(NAMES, LITERALS, max_size=3))
def test_substitution_of_any_text_never_raises_anything_else(text, environ):
    try:
        result = substitute_variables(text, "any.yml", environ)
    except UserInputError as error:
        assert re.match(r"any\.yml:\d+: ", str(error))
    else:
        if "$" not in text:
            assert result == text


@settings(max_examples=100, deadline=None)
@given(
    before=st.lists(LITERALS.filter(lambda s: "\n" not in s and "\r" not in s), max_size=5),
    name=NAMES,
)
def test_unset_variable_error_reports_its_line(before, name):
    text = "".join(f"k{index}: {line}\n" for index, line in enumerate(before)) + f"x: ${{{name}}}\n"
    with pytest.raises(UserInputError) as caught:
        substitute_variables(text, "f", {})
    assert str(caught.value).startswith(f"f:{len(before) + 1}: variable {name} is not set")


# ------------------------------------------------------------------ loading and validation


def test_one_job(tmp_path):
    path = write(tmp_path, "output_path: out/x\nwindow:\n  shift_ms: 5\n")
    [job] = load_jobs(path, FeatureJob)
    assert job == FeatureJob(output_path=Path("out/x"), window=Window(shift_ms=5.0))


def test_jobs_list_merges_over_shared_defaults(tmp_path):
    path = write(
        tmp_path,
        """\
        num_filters: 40
        window: {length_ms: 20}
        jobs:
          - output_path: a
          - output_path: b
            num_filters: 64
            window: {shift_ms: 2}
        """,
    )
    first, second = load_jobs(path, FeatureJob)
    assert (first.num_filters, first.window) == (40, Window(length_ms=20.0, shift_ms=10.0))
    assert (second.num_filters, second.window) == (64, Window(length_ms=20.0, shift_ms=2.0))


def test_unknown_key_names_file_line_job_and_suggests(tmp_path):
    path = write(tmp_path, "jobs:\n  - output_path: a\n  - output_path: b\n    num_filter: 3\n")
    with pytest.raises(UserInputError) as caught:
        load_jobs(path, FeatureJob)
    assert str(caught.value) == (
        f"{path}:4: job 1: unknown key 'num_filter' (did you mean 'num_filters'?)"
    )


def test_nested_unknown_key_suggests_from_the_nested_schema(tmp_path):
    path = write(tmp_path, "output_path: a\nwindow:\n  shfit_ms: 3\n")
    with pytest.raises(
        UserInputError,
        match=r":3: job 0: unknown key 'window.shfit_ms' \(did you mean 'shift_ms'\?\)",
    ):
        load_jobs(path, FeatureJob)


def test_wrong_type_and_missing_key(tmp_path):
    path = write(tmp_path, "jobs:\n  - num_filters: many\n")
    with pytest.raises(UserInputError) as caught:
        load_jobs(path, FeatureJob)
    message = str(caught.value)
    assert f"{path}:2: job 0: key 'num_filters'" in message and "'many'" in message
    assert "job 0: missing required key 'output_path'" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "job file is empty"),
        ("- a\n- b\n", ":1: a job file holds a mapping"),
        ("jobs: {a: 1}\n", "'jobs' must be a non-empty list"),
        ("jobs:\n  - 3\n", ":2: job 0: expected a mapping"),
        (
            "output_path: a\noutput_path: b\n",
            ":2: duplicate key 'output_path' (first given on line 1)",
        ),
        ("output_path: a\nnum_filters: [\n", "not valid YAML"),
        ("output_path: !!python/object:os.system x\n", "not valid YAML"),
        ("output_path: 2001-02-30\n", "not valid YAML"),
    ],
)
def test_malformed_job_files(tmp_path, text, expected):
    with pytest.raises(UserInputError) as caught:
        load_jobs(write(tmp_path, text), FeatureJob)
    assert expected in str(caught.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserInputError, match="job file not found"):
        load_jobs(tmp_path / "nope.yml", FeatureJob)


def test_load_config_reads_the_whole_file_as_one_object(tmp_path):
    path = write(tmp_path, "output_path: ${OUT:-o}\n")
    assert load_config(path, FeatureJob, {"OUT": "z"}).output_path == Path("z")


YAML_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=6)
)
YAML_VALUES = st.recursive(
    YAML_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(
            st.sampled_from(
                ["output_path", "num_filters", "window", "jobs", "length_ms", "shift_ms", "x"]
            ),
            children,
            max_size=4,
        ),
    ),
    max_leaves=12,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(document=YAML_VALUES)
def test_any_document_loads_or_gives_a_located_error(tmp_path, document):
    path = tmp_path / "fuzz.yml"
    path.write_text(yaml.safe_dump(document))
    try:
        jobs = load_jobs(path, FeatureJob)
    except UserInputError as error:
        assert str(error).startswith(str(path))
    else:
        assert jobs and all(isinstance(job, FeatureJob) for job in jobs)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=80))
def test_any_text_loads_or_gives_a_located_error(tmp_path, text):
    path = tmp_path / "fuzz.yml"
    path.write_bytes(text.encode("utf-8", "replace"))
    try:
        load_jobs(path, FeatureJob, {})
    except UserInputError as error:
        assert str(error).startswith(str(path))


# ------------------------------------------------------------------ command line


def test_describe_schema_lists_keys_types_defaults_and_help():
    text = describe_schema(FeatureJob)
    assert "output_path: Path  (required)" in text
    assert "num_filters: int  (default: 80)" in text and "mel filters" in text
    assert "window: Window  (section)" in text and "      shift_ms: float  (default: 10.0)" in text


def test_run_jobs_cli_runs_each_job_and_reports_failures(tmp_path, capsys):
    path = write(
        tmp_path, "jobs:\n  - output_path: good\n  - output_path: bad\n  - output_path: crash\n"
    )
    seen = []

    def run(job: FeatureJob, context: JobContext) -> None:
        seen.append((str(job.output_path), context.index, context.force, context.source))
        if job.output_path.name == "bad":
            raise UserInputError("input is wrong")
        if job.output_path.name == "crash":
            raise RuntimeError("a bug")

    assert run_jobs_cli(FeatureJob, run, "doc", ["-y", str(path), "--force"]) == 1
    assert seen == [("good", 0, True, path), ("bad", 1, True, path), ("crash", 2, True, path)]
    error = capsys.readouterr().err
    assert f"error: {path}: job 1: input is wrong" in error
    assert "RuntimeError: a bug" in error and "2 of 3 job(s) failed" in error


def test_run_jobs_cli_bad_file_exits_2_without_running(tmp_path, capsys):
    path = write(tmp_path, "output_pth: x\n")
    assert run_jobs_cli(FeatureJob, lambda job, context: None, "doc", ["-y", str(path)]) == 2
    assert "did you mean 'output_path'" in capsys.readouterr().err


def test_help_shows_the_schema(tmp_path):
    script = tmp_path / "step.py"
    script.write_text(
        "from pathlib import Path\nfrom pydantic import Field\n"
        "from speechbed.jobs import JobSchema\nfrom speechbed.step_runner import run_jobs_cli\n"
        "class Step(JobSchema):\n"
        "    output_path: Path = Field(description='where it goes')\n"
        "raise SystemExit(run_jobs_cli(Step, lambda job, context: None, 'A step.'))\n"
    )
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "output_path: Path  (required)" in result.stdout and "where it goes" in result.stdout
