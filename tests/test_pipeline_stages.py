"""Stages: --from/--to/--only pick jobs through nested pipelines; --dry-run shows the whole tree."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import yaml

from speechbed.pipeline.cli import main

REPOSITORY = Path(__file__).resolve().parents[1]


def _job(record: Path, name: str) -> dict[str, object]:
    return {
        "script": "record_job.py",
        "config": "job.yml",
        "name": name,
        "args": ["--record", str(record), "--label", name],
    }


@pytest.fixture
def nested(tmp_path: Path, testbed_env: dict[str, str], recording_job: Path):
    """outer: prep, outer-train (a nested pipeline: fit-1, fit-2), report."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPOSITORY / "scripts" / "pipeline.py", tmp_path / "scripts" / "pipeline.py")
    record = tmp_path / "events.jsonl"
    inner = {"name": "inner", "jobs": [_job(record, "fit-1"), _job(record, "fit-2")]}
    (tmp_path / "inner.yml").write_text(yaml.safe_dump(inner))
    outer = {
        "name": "outer",
        "jobs": [
            {**_job(record, "prep"), "blocking": True},
            {"script": "scripts/pipeline.py", "config": "inner.yml", "name": "outer-train",
             "blocking": True},
            {**_job(record, "report"), "blocking": True},
        ],
    }  # fmt: skip
    (tmp_path / "outer.yml").write_text(yaml.safe_dump(outer, sort_keys=False))
    environ = {**testbed_env, "PYTHONPATH": str(REPOSITORY / "src")}
    return tmp_path / "outer.yml", record, environ


def _run(environ: dict[str, str], pipeline: Path, *flags: str) -> tuple[int, str]:
    output = io.StringIO()
    code = main(["-y", str(pipeline), *flags], environ=environ, stream=output)
    return code, output.getvalue()


def _ran(record: Path) -> list[str]:
    if not record.exists():
        return []
    events = [json.loads(line) for line in record.read_text().splitlines()]
    return [event["name"] for event in events if event["event"] == "start"]


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--only", "fit-2"], ["fit-2"]),
        (["--from", "fit-2"], ["fit-2", "report"]),
        (["--to", "fit-1"], ["prep", "fit-1"]),
        (["--from", "outer-train/fit-1", "--to", "outer-train"], ["fit-1", "fit-2"]),
        (["--only", "train"], ["fit-1", "fit-2"]),  # a job's name without "<pipeline>-"
        (["--only", "prep,fit-2"], ["prep", "fit-2"]),
    ],
)
def test_stages_pick_jobs_through_nested_pipelines(nested, flags, expected):
    pipeline, record, environ = nested
    code, output = _run(environ, pipeline, *flags)
    assert code == 0, output
    assert _ran(record) == expected


def test_dry_run_shows_the_tree_with_nested_jobs_and_what_is_left_out(nested):
    pipeline, record, environ = nested
    code, output = _run(environ, pipeline, "--dry-run", "--from", "fit-2")
    assert code == 0, output
    lines = {
        line.split("│")[2].strip(): line for line in output.splitlines() if line.count("│") > 3
    }
    assert set(lines) >= {"prep", "outer-train", "fit-1", "fit-2", "report"}
    assert "left out" in lines["prep"] and "left out" in lines["fit-1"]
    assert "run:" in lines["fit-2"] and "run:" in lines["report"]
    assert (
        "│   fit-2" in lines["fit-2"] or "  fit-2" in lines["fit-2"]
    )  # indented under its pipeline
    assert not record.exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--only", "fit-3"], "stage 'fit-3' names no job of the pipeline"),
        (["--from", "report", "--to", "prep"], "--from report comes after --to prep"),
        (["--only", "prep", "--to", "report"], "--only cannot be combined"),
    ],
)
def test_a_bad_stage_is_refused_before_anything_starts(nested, flags, message, capsys):
    pipeline, record, environ = nested
    code, _ = _run(environ, pipeline, *flags)
    assert code == 2 and message in capsys.readouterr().err
    assert not record.exists()
