"""Data lineage: fingerprints, and pipelines that rerun exactly the jobs downstream of a change.

The pipelines run real step scripts that follow the job-file convention (``run_jobs_cli``
with ``input_path``/``output_path`` fields), in nested pipelines too.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest
import yaml

from speechbed import lineage
from speechbed.lineage import FINGERPRINT_FILE, Lineage, fingerprint, local_path, portable_path
from speechbed.pipeline.cli import main

# A step that copies its input to its output, upper-cased, and appends its job name to a
# run log (so the test counts what really ran).
UPPERCASE_STEP = """\
from pathlib import Path
import os
from speechbed.jobs import JobSchema, input_path, output_path
from speechbed.step_runner import run_jobs_cli

class Job(JobSchema):
    source: Path = input_path(description="text to read")
    target: Path = output_path(description="where the upper-cased text goes")
    runs: Path

def run(job, context):
    job.target.write_text(job.source.read_text().upper())
    with open(job.runs, "a") as log:
        log.write(os.environ.get("SPEECHBED_JOB_NAME", "?") + "\\n")

raise SystemExit(run_jobs_cli(Job, run, "upper-case a file"))
"""


def test_file_fingerprint_follows_content_not_time(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("one")
    first = fingerprint(path)
    os.utime(path, (1, 1))
    assert fingerprint(path) == first  # same bytes
    path.write_text("two")
    assert fingerprint(path) != first
    assert fingerprint(tmp_path / "missing") is None


def test_folder_fingerprint_uses_the_producer_record_and_ignores_hidden_entries(tmp_path):
    folder = tmp_path / "store"
    folder.mkdir()
    (folder / "data.bin").write_bytes(b"x" * 10)
    plain = fingerprint(folder)
    (folder / ".data.bin.partial-123").write_bytes(b"leftover")
    (folder / ".data.bin.lock").write_text("1\n")
    assert fingerprint(folder) == plain
    (folder / "more.bin").write_bytes(b"y")
    assert fingerprint(folder) != plain
    lineage.write_folder_fingerprint(folder, "abc123")
    assert (folder / FINGERPRINT_FILE).read_text().strip() == "abc123"
    (folder / "data.bin").write_bytes(b"z" * 99)  # trusted: the producer's record decides
    assert fingerprint(folder) == "abc123"


def test_portable_paths_round_trip_through_the_storage_variables(tmp_path):
    environ = {"CACHE_DIRECTORY": str(tmp_path / "cache"), "DATA_DIRECTORY": str(tmp_path / "d")}
    root = tmp_path / "repo"
    store = tmp_path / "cache" / "fbank" / "train.zarr"
    text = portable_path(store, environ, root)
    assert text == "${CACHE_DIRECTORY}/fbank/train.zarr"
    assert local_path(text, environ, root) == store
    moved = {"CACHE_DIRECTORY": "/storage/cache", "DATA_DIRECTORY": "/storage/data"}
    assert local_path(text, moved, root) == Path("/storage/cache/fbank/train.zarr")
    assert portable_path(root / "experiments" / "x.yml", environ, root) == (
        "${SPEECHBED_ROOT}/experiments/x.yml"
    )
    assert portable_path("/elsewhere/file", environ, root) == "/elsewhere/file"


def test_why_outdated_names_the_changed_input_and_the_code_version(tmp_path):
    source = tmp_path / "train.jsonl"
    source.write_text("a\n")
    target = tmp_path / "out.txt"
    target.write_text("b")
    environ, root = {}, tmp_path
    record = Lineage.measure([source], [target], {"features": 1}, environ, root)
    assert record.why_outdated({"features": 1}, environ, root) is None
    assert "code version of features changed (1 -> 2)" == record.why_outdated(
        {"features": 2}, environ, root
    )
    source.write_text("changed\n")
    assert record.why_outdated({"features": 1}, environ, root).startswith(
        "input train.jsonl changed"
    )
    source.write_text("a\n")
    target.unlink()
    assert record.why_outdated({"features": 1}, environ, root).startswith(
        "output out.txt is missing"
    )


# --------------------------------------------------------------------------- pipelines


@pytest.fixture
def chain(tmp_path, testbed_env):
    """a.txt -> (first) -> b.txt -> (second) -> c.txt, and an unrelated x.txt -> (other) -> y.txt."""
    (tmp_path / "upper.py").write_text(UPPERCASE_STEP)
    runs = tmp_path / "runs.log"
    for name, (source, target) in {
        "first": ("a.txt", "b.txt"),
        "second": ("b.txt", "c.txt"),
        "other": ("x.txt", "y.txt"),
    }.items():
        (tmp_path / f"{name}.yml").write_text(
            yaml.safe_dump(
                {
                    "source": str(tmp_path / source),
                    "target": str(tmp_path / target),
                    "runs": str(runs),
                }
            )
        )
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "x.txt").write_text("other")
    steps = [
        {"script": "upper.py", "config": "first.yml"},
        {"script": "upper.py", "config": "other.yml"},
        {"script": "upper.py", "config": "second.yml", "blocking": True},
    ]
    pipeline = tmp_path / "inner.yml"
    pipeline.write_text(yaml.safe_dump({"jobs": steps}, sort_keys=False))
    return pipeline, runs


def run_pipeline(environ, pipeline, *flags):
    output = io.StringIO()
    code = main(["-y", str(pipeline), *flags], environ=environ, stream=output)
    return code, output.getvalue()


def ran(runs: Path) -> list[str]:
    text = runs.read_text() if runs.exists() else ""
    runs.write_text("")
    return text.split()


def test_a_changed_input_reruns_exactly_the_jobs_downstream(chain, tmp_path, testbed_env):
    pipeline, runs = chain
    code, output = run_pipeline(testbed_env, pipeline)
    assert code == 0, output
    assert sorted(ran(runs)) == ["first", "other", "second"]
    assert (tmp_path / "c.txt").read_text() == "HELLO"

    code, output = run_pipeline(testbed_env, pipeline)
    assert code == 0, output
    assert ran(runs) == []
    assert "3 job(s) already done" in output

    time.sleep(0.01)
    (tmp_path / "a.txt").write_text("changed upstream")
    code, output = run_pipeline(testbed_env, pipeline, "--dry-run")
    assert code == 0
    assert "run: input a.txt changed" in output
    assert "asked again after first" in " ".join(output.split())  # downstream may rerun too
    assert ran(runs) == []
    code, output = run_pipeline(testbed_env, pipeline)
    assert code == 0, output
    assert ran(runs) == ["first", "second"]  # not "other"
    assert (tmp_path / "c.txt").read_text() == "CHANGED UPSTREAM"

    # The same content again gives the same fingerprint downstream: "second" still reruns
    # because b.txt changed, but rewriting a.txt with its current bytes changes nothing.
    (tmp_path / "a.txt").write_text("changed upstream")
    code, output = run_pipeline(testbed_env, pipeline)
    assert ran(runs) == []

    (tmp_path / "c.txt").unlink()
    code, output = run_pipeline(testbed_env, pipeline)
    assert code == 0, output
    assert ran(runs) == ["second"]
    assert "output c.txt is missing" in output


def test_a_code_version_change_reruns_the_steps_that_recorded_it(chain, tmp_path, testbed_env):
    pipeline, runs = chain
    script = tmp_path / "upper.py"
    script.write_text(
        script.read_text().replace(
            "    runs: Path\n", '    runs: Path\n    code_versions = {"features": 1}\n'
        )
    )
    assert run_pipeline(testbed_env, pipeline)[0] == 0
    ran(runs)
    records = list((tmp_path / "artifacts" / "pipelines" / "state").glob("*.json"))
    assert len(records) == 3
    for record in records:
        data = json.loads(record.read_text())
        assert data["lineage"]["code_versions"] == {"features": 1}
        data["lineage"]["code_versions"] = {"features": 0}  # as if written by older code
        record.write_text(json.dumps(data))
    code, output = run_pipeline(testbed_env, pipeline)
    assert code == 0, output
    assert sorted(ran(runs)) == ["first", "other", "second"]
    assert "code version of features changed" in output


def test_nested_pipelines_rerun_downstream_and_force_reaches_them(chain, tmp_path, testbed_env):
    inner, runs = chain
    outer = tmp_path / "outer.yml"
    outer.write_text(
        yaml.safe_dump(
            {
                "allow_outside_scripts": True,  # the repository's runner; the test's root is tmp
                "jobs": [
                    {
                        "script": str(Path(__file__).parents[1] / "scripts" / "pipeline.py"),
                        "config": str(inner),
                        "name": "inner",
                        "args": ["--num_jobs", "1"],
                    }
                ],
            },
            sort_keys=False,
        )
    )
    environ = {**testbed_env, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    environ["SPEECHBED_ROOT"] = str(tmp_path)
    code, output = run_pipeline(environ, outer)
    assert code == 0, output
    assert sorted(ran(runs)) == ["first", "other", "second"]

    (tmp_path / "x.txt").write_text("other input changed")
    code, output = run_pipeline(environ, outer)
    assert code == 0, output
    assert ran(runs) == ["other"]  # through the nested pipeline, and nothing else

    code, output = run_pipeline(environ, outer)
    assert code == 0, output
    assert ran(runs) == []

    code, output = run_pipeline(environ, outer, "--force")
    assert code == 0, output
    assert sorted(ran(runs)) == ["first", "other", "second"]


def test_every_step_records_code_versions_the_runner_knows():
    """A name the runner does not know would make its step rerun forever."""
    import importlib.util

    from speechbed.code_versions import CODE_VERSIONS
    from speechbed.jobs import JobSchema

    scripts = Path(__file__).resolve().parents[1] / "scripts"
    modules = []  # kept referenced: __subclasses__ holds its classes weakly
    for script in sorted(scripts.glob("*.py")):
        if "run_jobs_cli" in script.read_text():
            spec = importlib.util.spec_from_file_location(f"step_{script.stem}", script)
            modules.append(importlib.util.module_from_spec(spec))
            spec.loader.exec_module(modules[-1])

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    declared = {
        (schema.__name__, name, version)
        for schema in subclasses(JobSchema)
        for name, version in schema.code_versions.items()
    }
    assert {name for _, name, _ in declared} >= {"features", "training", "evaluation"}
    for schema, name, version in declared:
        assert CODE_VERSIONS.get(name) == version, (schema, name, version)
