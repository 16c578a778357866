"""Reports never lose or double a run: comet's online fall-back, one archive per run, killed
reports, bad credentials that do not stop the other reports, stale runs, per-process temporaries.

comet runs for real: its offline mode, and its online mode against a closed loopback port
(never the network).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from speechbed.lineage import fingerprint
from speechbed.reports import comet, plots, sheets
from speechbed.reports.analysis import summary_text, write_tables_and_plots
from speechbed.reports.results import load_results

ROOT = Path(__file__).resolve().parent.parent
SECRET = "fakecometkey0123456789abcdef"


def _history() -> pd.DataFrame:
    return pd.DataFrame({"epoch": [1, 2], "loss": [3.0, 2.0], "dev_per": [60.0, 45.5]})


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def unreachable_comet(monkeypatch) -> dict[str, str]:
    """COMET_API_KEY set, the server a closed loopback port, comet's retries off (fast)."""
    settings = {
        "COMET_URL_OVERRIDE": f"http://127.0.0.1:{_closed_port()}/clientlib/",
        "COMET_HTTP_SESSION_RETRY_TOTAL": "0",
        "COMET_GET_OR_ADD_EXPERIMENT_RETRY_CONNECT": "0",
        "COMET_GET_OR_ADD_EXPERIMENT_RETRY_READ": "0",
        "COMET_ERROR_TRACKING_ENABLE": "false",  # no crash reports to anyone's server
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return {"COMET_API_KEY": SECRET}


def _archives(run_dir: Path) -> list[Path]:
    return sorted((run_dir / comet.ARCHIVE_FOLDER).glob("*.zip"))


def _messages(archive: Path) -> list[dict]:
    with zipfile.ZipFile(archive) as bundle:
        text = bundle.read("messages.json").decode()
    return [json.loads(line) for line in text.splitlines() if line]


# --------------------------------------------------------------------------- comet


def test_a_failed_online_connection_falls_back_to_one_archive_and_is_retried(
    tmp_path, monkeypatch, unreachable_comet
):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = {"model": {"recurrent_size": 8}}
    final = {"test_per": 38.0}
    outcome = comet.log_run(
        run_dir, "abc123", "demo", config, _history(), final, environ=unreachable_comet
    )
    assert outcome == f"{comet.ONLINE_FAILED}: {comet.archive_path(run_dir, 'abc123')}"
    (archive,) = _archives(run_dir)
    assert archive.name == "abc123.zip"
    metrics = [m for m in _messages(archive) if m["type"] == "metric_msg"]
    assert {m["payload"]["metric"]["metricName"] for m in metrics} >= {"dev_per", "test_per"}
    marker = json.loads((run_dir / comet.MARKER_NAME).read_text())
    assert marker["mode"] == "offline" and marker["online_failed"] is True
    assert SECRET not in (run_dir / comet.MARKER_NAME).read_text()
    with zipfile.ZipFile(archive) as bundle:
        assert SECRET.encode() not in b"".join(bundle.read(n) for n in bundle.namelist())
    # Not recorded as online, so the next analysis tries again; it fails again and the run
    # still has exactly one archive.
    again = comet.log_run(
        run_dir, "abc123", "demo", config, _history(), final, environ=unreachable_comet
    )
    assert again.startswith(comet.ONLINE_FAILED)
    assert _archives(run_dir) == [archive]
    # Without a key the archive is what was wanted: up to date.
    assert comet.log_run(run_dir, "abc123", "demo", config, _history(), final, environ={}) == (
        "up to date"
    )


def test_changed_results_replace_the_runs_archive_instead_of_adding_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for per in (40.0, 35.0):
        outcome = comet.log_run(
            run_dir, "r1", "demo", {"a": 1}, _history(), {"test_per": per}, environ={}
        )
        assert outcome.startswith("offline: ")
    (archive,) = _archives(run_dir)
    logged = [
        m["payload"]["metric"]["metricValue"]
        for m in _messages(archive)
        if m["type"] == "metric_msg" and m["payload"]["metric"]["metricName"] == "test_per"
    ]
    assert [float(value) for value in logged] == [35.0]
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]


KILLED_REPORT = """
import sys, time
from pathlib import Path
import comet_ml
from speechbed.reports import comet

def stall(self, *args, **kwargs):
    Path(sys.argv[2]).write_text("logging")
    time.sleep(120)

comet_ml.OfflineExperiment.log_text = stall
comet.log_run(Path(sys.argv[1]), "r1", "demo", {"a": 1}, None, {"test_per": 1.0}, environ={})
"""


def test_a_killed_report_leaves_no_archive_and_the_rerun_writes_exactly_one(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    script, flag = tmp_path / "killed_report.py", tmp_path / "logging"
    script.write_text(KILLED_REPORT)
    environment = {k: v for k, v in os.environ.items() if k != "COMET_API_KEY"}
    process = subprocess.Popen(
        [sys.executable, str(script), str(run_dir), str(flag)], cwd=tmp_path, env=environment
    )
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert not (run_dir / comet.ARCHIVE_FOLDER).exists()  # no empty archive, no archive folder
    assert not (run_dir / comet.MARKER_NAME).exists()
    outcome = comet.log_run(run_dir, "r1", "demo", {"a": 1}, None, {"test_per": 1.0}, environ={})
    assert outcome.startswith("offline: ")
    assert [p.name for p in _archives(run_dir)] == ["r1.zip"]
    leftovers = [p.name for p in run_dir.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # the dead process's hidden build folder is gone


# --------------------------------------------------------------------------- Google credentials


def test_malformed_credentials_are_one_line_and_never_raise(tmp_path):
    for text in ("{not json", "[]", '{"type": "service_account"}'):
        credentials = tmp_path / "credentials.json"
        credentials.write_text(text)
        status = sheets.report_to_sheet(credentials, "s", "w", ["run_id"], [["r1"]], pd.DataFrame())
        assert status.startswith(f"failed: {credentials} is not a usable service-account JSON")
        assert "\n" not in status


def _run(folder: Path, dev: float, fingerprints: dict[str, str] | None, cache: str) -> None:
    folder.mkdir(parents=True)
    (folder / "config.yml").write_text(
        yaml.safe_dump({"info": {"seed": 1}, "data": {"cache_directory": cache}})
    )
    pd.DataFrame({"epoch": [1, 2], "loss": [2.0, 1.0], "dev_per": [0.5, dev]}).to_csv(
        folder / "hist.csv", index=False
    )
    results = {"dev": {"per": dev}, "test": {"per": dev + 0.01}, "epoch": 2}
    if fingerprints is not None:
        results["data_fingerprints"] = fingerprints
    (folder / "results.json").write_text(json.dumps(results))


def test_bad_credentials_do_not_stop_the_analysis_or_the_other_reports(tmp_path):
    folder = tmp_path / "exp"
    _run(folder / "r1", 0.2, None, "/nowhere")
    (folder / "runs.json").write_text(json.dumps({"r1": {"condition": "c", "seed": 1}}))
    credentials = tmp_path / "google.json"
    credentials.write_text('{"type": "service_account", "private_key": ')
    job = tmp_path / "analyze.yml"
    job.write_text(
        yaml.safe_dump(
            {
                "experiments": ["exp"],
                "artifacts_directory": str(tmp_path),
                "report": {"tensorboard": False, "comet": True, "google_sheet": True},
            }
        )
    )
    environment = {k: v for k, v in os.environ.items() if k != "COMET_API_KEY"}
    environment["PATH_TO_GOOGLE_CREDENTIALS"] = str(credentials)
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "analyze.py"), "-y", str(job)],
        capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    (sheet_line,) = [line for line in result.stdout.splitlines() if line.startswith("google_sheet")]
    assert f"{credentials} is not a usable service-account JSON file" in sheet_line
    assert "comet: 1 offline" in result.stdout
    assert [p.name for p in _archives(folder / "r1")] == ["r1.zip"]
    assert (folder / "analysis" / "statistics.md").is_file()


# --------------------------------------------------------------------------- stale runs


def _store(cache: Path, partition: str, content: str) -> None:
    store = cache / f"{partition}.zarr"
    store.mkdir(parents=True, exist_ok=True)
    (store / "zarr.json").write_text(content)


def test_runs_whose_data_changed_are_stale_and_left_out_of_the_statistics(tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "corpus" / "fbank"
    for partition in ("train", "dev", "test"):
        _store(cache, partition, f"{partition} v1")
    monkeypatch.setenv("CACHE_DIRECTORY", str(tmp_path / "cache"))
    as_written = "${CACHE_DIRECTORY}/corpus/fbank"  # run configs keep their variables
    now = {p: fingerprint(cache / f"{p}.zarr") for p in ("train", "dev", "test")}
    folder = tmp_path / "artifacts" / "exp"
    _run(folder / "current", 0.20, dict(now), as_written)
    _run(folder / "old_train", 0.10, {**now, "train": "0123456789abcdef01234567"}, as_written)
    _run(folder / "unrecorded", 0.30, None, as_written)  # older runs: nothing to compare
    _run(  # a store deleted since: nothing seen changed, the run stays current
        folder / "gone", 0.15, {"dev": now["dev"], "other": "feedfeedfeedfeedfeedfeed"}, str(cache)
    )
    index = {
        name: {"condition": "c", "seed": 1}
        for name in ("current", "old_train", "unrecorded", "gone")
    }
    (folder / "runs.json").write_text(json.dumps(index))

    results = load_results("exp", tmp_path / "artifacts")
    assert sorted(results.runs["run_id"]) == ["current", "gone", "unrecorded"]
    stale = results.stale.set_index("run_id")["status"].to_dict()
    assert stale == {
        "old_train": f"stale: its train data {cache / 'train.zarr'} changed since the run",
    }
    assert results.stale.set_index("run_id").loc["old_train", "dev_per"] == pytest.approx(10.0)
    statistics = results.statistics.set_index(["condition", "partition"])
    assert statistics.loc[("c", "dev"), "n"] == 3
    assert statistics.loc[("c", "dev"), "min"] == pytest.approx(15.0)  # not the stale 10 %
    assert set(results.histories["run_id"]) == {"current", "gone", "unrecorded"}

    # the data changes again: the current run becomes stale too
    _store(cache, "dev", "dev v2")
    results = load_results("exp", tmp_path / "artifacts")
    assert sorted(results.runs["run_id"]) == ["unrecorded"]  # "gone" recorded dev too
    assert "its dev data" in results.stale.set_index("run_id").loc["current", "status"]

    outputs = write_tables_and_plots(results, tmp_path / "analysis")
    assert sorted(pd.read_csv(outputs.files["stale.csv"])["run_id"]) == [
        "current", "gone", "old_train",
    ]  # fmt: skip
    summary = summary_text(results, outputs)
    assert "3 run(s) stale" in summary and "exp/old_train" in summary
    printed = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "report.py"), str(tmp_path / "analysis")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert printed.returncode == 0 and "3 run(s) stale" in printed.stdout


# --------------------------------------------------------------------------- temporaries


def test_figures_never_use_a_name_another_process_shares(tmp_path):
    # The old shared temporary name, held by another writer (here a folder, so any write to
    # it fails): a per-process temporary never touches it.
    (tmp_path / "learning_curves.tmp.png").mkdir()
    path = plots.save_figure(
        plots.learning_curves(pd.DataFrame()), tmp_path / "learning_curves.png"
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "learning_curves.png", "learning_curves.tmp.png",
    ]  # fmt: skip


def test_an_archive_named_by_an_earlier_version_is_adopted_not_doubled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    (run_dir / comet.ARCHIVE_FOLDER).mkdir(parents=True)
    key = "0123456789abcdef0123456789abcdef"
    legacy = run_dir / comet.ARCHIVE_FOLDER / f"{key}.zip"
    legacy.write_bytes(b"an archive of the same results")
    payload = {"run_id": "r1", "config": {"a": 1}, "history": None, "final": {"test_per": 1.0}}
    (run_dir / comet.MARKER_NAME).write_text(
        json.dumps(
            {
                "fingerprint": comet._fingerprint({**payload, "mode": "offline"}),
                "mode": "offline",
                "experiment_key": key,
            }
        )
    )
    arguments = (run_dir, "r1", "demo", {"a": 1}, None)
    assert comet.log_run(*arguments, {"test_per": 1.0}, environ={}) == "up to date"
    assert [p.name for p in _archives(run_dir)] == ["r1.zip"]
    assert (
        run_dir / comet.ARCHIVE_FOLDER / "r1.zip"
    ).read_bytes() == b"an archive of the same results"
    assert comet.log_run(*arguments, {"test_per": 2.0}, environ={}).startswith("offline: ")
    assert [p.name for p in _archives(run_dir)] == ["r1.zip"]
