"""Reports: statistics against independent values, the Sheet upsert, comet archives, TensorBoard."""

from __future__ import annotations

import json
import math
import statistics as stdlib_statistics
import zipfile
from pathlib import Path

import gspread
import numpy as np
import pandas as pd
import pytest

from speechbed.reports import comet, sheets, tensorboard
from speechbed.reports.statistics import describe_by_condition, statistics_markdown

# --------------------------------------------------------------------------- statistics


def test_statistics_on_hand_worked_values():
    runs = pd.DataFrame(
        {
            "condition": ["a", "a", "a", "b", "b"],
            "dev_per": [20.0, 22.0, 27.0, 10.0, 14.0],
            "test_per": [21.0, 21.0, 30.0, 12.0, float("nan")],
        }
    )
    table = describe_by_condition(runs).set_index(["condition", "partition"])
    # a/dev: mean (20+22+27)/3 = 23; deviations -3,-1,4 -> sum of squares 26 -> sd sqrt(26/2)
    assert table.loc[("a", "dev"), "n"] == 3
    assert table.loc[("a", "dev"), "mean"] == pytest.approx(23.0)
    assert table.loc[("a", "dev"), "sd"] == pytest.approx(math.sqrt(13.0))
    assert table.loc[("a", "dev"), "median"] == 22.0
    assert (table.loc[("a", "dev"), "min"], table.loc[("a", "dev"), "max"]) == (20.0, 27.0)
    # a/test: 21, 21, 30 -> mean 24, sd sqrt((9+9+36)/2) = sqrt(27), median 21
    assert table.loc[("a", "test"), "sd"] == pytest.approx(math.sqrt(27.0))
    assert table.loc[("a", "test"), "median"] == 21.0
    # b/dev: 10, 14 -> median 12, sd sqrt((4+4)/1)
    assert table.loc[("b", "dev"), "median"] == 12.0
    assert table.loc[("b", "dev"), "sd"] == pytest.approx(math.sqrt(8.0))
    # b/test: one value (the NaN is an unfinished run): n 1, sd undefined
    assert table.loc[("b", "test"), "n"] == 1 and math.isnan(table.loc[("b", "test"), "sd"])
    assert "| a | dev | 3 | 23.00 | 3.61 | 22.00 | 20.00 | 27.00 |" in statistics_markdown(
        describe_by_condition(runs)
    )


def test_statistics_match_the_standard_library_on_random_values():
    generator = np.random.default_rng(7)
    values = {c: generator.normal(20, 3, size=n).tolist() for c, n in (("x", 20), ("y", 7))}
    runs = pd.DataFrame(
        [{"condition": c, "dev_per": v, "test_per": v + 1} for c, vs in values.items() for v in vs]
    )
    table = describe_by_condition(runs).set_index(["condition", "partition"])
    for condition, vs in values.items():
        row = table.loc[(condition, "dev")]
        assert row["n"] == len(vs)
        assert row["mean"] == pytest.approx(stdlib_statistics.fmean(vs), rel=1e-12)
        assert row["sd"] == pytest.approx(stdlib_statistics.stdev(vs), rel=1e-12)
        assert row["median"] == pytest.approx(stdlib_statistics.median(vs), rel=1e-12)
        assert (row["min"], row["max"]) == (min(vs), max(vs))


# --------------------------------------------------------------------------- Google Sheet


class MemoryWorksheet:
    """In-memory stand-in of the gspread Worksheet methods the report uses (same signatures)."""

    def __init__(self, rows: int = 5, cols: int = 4) -> None:
        self.row_count, self.col_count = rows, cols
        self.cells: dict[tuple[int, int], object] = {}
        self.calls: list[str] = []

    def get_all_values(self) -> list[list[str]]:
        self.calls.append("get_all_values")
        if not self.cells:
            return []
        height = max(r for r, _ in self.cells) + 1
        width = max(c for _, c in self.cells) + 1
        grid = [["" for _ in range(width)] for _ in range(height)]
        for (r, c), value in self.cells.items():
            grid[r][c] = "" if value is None else str(value)  # the API returns text
        while grid and not any(grid[-1]):
            grid.pop()
        return grid

    def clear(self) -> None:
        self.calls.append("clear")
        self.cells.clear()

    def resize(self, rows: int | None = None, cols: int | None = None) -> None:
        self.calls.append("resize")
        self.row_count, self.col_count = rows or self.row_count, cols or self.col_count

    def update(self, values, range_name=None, **kwargs) -> None:
        self.calls.append("update")
        assert range_name == "A1"
        for r, row in enumerate(values):
            for c, value in enumerate(row):
                if r >= self.row_count or c >= self.col_count:
                    raise gspread.exceptions.APIError.__new__(gspread.exceptions.APIError)
                if value != "":
                    self.cells[(r, c)] = value


def _stats() -> pd.DataFrame:
    runs = pd.DataFrame(
        {"condition": ["c1", "c1"], "dev_per": [20.0, 22.0], "test_per": [21.0, 23.0]}
    )
    return describe_by_condition(runs)


HEADER = ["run_id", "condition", "seed", "test_per"]


def test_upsert_creates_the_header_and_one_row_per_run():
    sheet = MemoryWorksheet()
    rows = [["r1", "c1", 1, 21.0], ["r2", "c1", 2, 23.0]]
    sheets.upsert_worksheet(sheet, HEADER, rows, _stats())
    values = sheet.get_all_values()
    assert values[0][:4] == HEADER and not any(values[0][4:])
    assert values[1][:4] == ["r1", "c1", "1", "21.0"] and values[2][:4] == ["r2", "c1", "2", "23.0"]
    assert not any(values[3])  # the blank row before the summary block
    assert values[4][0] == "summary" and values[5][:3] == ["condition", "partition", "n"]
    assert values[6][:3] == ["c1", "dev", "2"]
    assert sheet.row_count >= len(values)  # resized to fit


def test_rerunning_never_duplicates_rows_and_updates_them_in_place():
    sheet = MemoryWorksheet()
    sheets.upsert_worksheet(sheet, HEADER, [["r1", "c1", 1, 21.0]], _stats())
    sheets.upsert_worksheet(sheet, HEADER, [["r1", "c1", 1, 21.0]], _stats())
    first = sheet.get_all_values()
    assert [row[0] for row in first].count("r1") == 1
    assert [row[0] for row in first].count("summary") == 1
    # a new run and an updated one: r1 keeps its place, r2 is appended, nothing is duplicated
    sheets.upsert_worksheet(sheet, HEADER, [["r2", "c2", 5, 30.0], ["r1", "c1", 1, 19.5]], _stats())
    values = sheet.get_all_values()
    run_rows = values[1 : values.index([""] * len(values[0]))]
    assert values[0][:4] == HEADER and not any(values[0][4:])
    assert [row[0] for row in run_rows] == ["r1", "r2"]
    assert run_rows[0][3] == "19.5"
    assert [row[0] for row in values].count("summary") == 1


def test_rows_written_by_another_machine_and_extra_columns_are_kept():
    sheet = MemoryWorksheet()
    sheet.cells = {(0, 0): "run_id", (0, 1): "note", (1, 0): "other", (1, 1): "keep me"}
    sheets.upsert_worksheet(sheet, HEADER, [["r1", "c1", 1, 21.0]], _stats())
    values = sheet.get_all_values()
    assert values[0][:5] == ["run_id", "note", "condition", "seed", "test_per"]
    assert values[1][:2] == ["other", "keep me"]
    assert values[2][:5] == ["r1", "", "c1", "1", "21.0"]


class MemorySpreadsheet:
    def __init__(self) -> None:
        self.sheets: dict[str, MemoryWorksheet] = {}

    def worksheet(self, title: str) -> MemoryWorksheet:
        if title not in self.sheets:
            raise gspread.exceptions.WorksheetNotFound(title)
        return self.sheets[title]

    def add_worksheet(self, title: str, rows: int, cols: int) -> MemoryWorksheet:
        self.sheets[title] = MemoryWorksheet(rows, cols)
        return self.sheets[title]


def test_one_worksheet_per_experiment_created_when_missing():
    book = MemorySpreadsheet()
    first = sheets.open_worksheet(book, "demo", 12)
    assert sheets.open_worksheet(book, "demo", 12) is first
    assert list(book.sheets) == ["demo"] and first.col_count == 12


def test_without_credentials_it_says_so_and_dry_run_prints_rows(tmp_path, capsys):
    status = sheets.report_to_sheet(
        tmp_path / "none.json", "book", "demo", HEADER, [["r1", "c", 1, 2.0]], _stats()
    )
    assert (
        status.startswith("skipped: no Google credentials")
        and "PATH_TO_GOOGLE_CREDENTIALS" in status
    )
    status = sheets.report_to_sheet(
        tmp_path / "none.json",
        "book",
        "demo",
        HEADER,
        [["r1", "c", 1, 2.0]],
        _stats(),
        dry_run=True,
    )
    printed = capsys.readouterr().out
    assert "dry run" in status and "r1\tc\t1\t2.0" in printed and "summary" in printed


# --------------------------------------------------------------------------- comet.ml


def _history() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "loss": [3.0, 2.0, 1.5],
            "dev_per": [60.0, 45.5, 40.25],
            "learning_rate": [1e-3] * 3,
        }
    )


def test_comet_offline_archive_holds_the_metrics_and_never_the_key(tmp_path, monkeypatch):
    secret = "fake-comet-key-0123456789"
    monkeypatch.setenv("COMET_API_KEY", secret)  # present in the process, but not handed over
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = {"model": {"recurrent_size": 8}, "info": {"seed": 3}}
    outcome = comet.log_run(
        run_dir, "abc123", "demo", config, _history(), {"test_per": 38.0}, environ={}
    )
    assert outcome.startswith("offline: ")
    (archive,) = (run_dir / "comet").glob("*.zip")
    assert Path(outcome.removeprefix("offline: ")) == archive
    with zipfile.ZipFile(archive) as bundle:
        messages = [
            json.loads(line) for line in bundle.read("messages.json").decode().splitlines() if line
        ]
        everything = b"".join(bundle.read(name) for name in bundle.namelist())
    metrics = {}
    parameters = {}
    for message in messages:
        payload = message["payload"]
        if message["type"] == "metric_msg":
            metric = payload["metric"]
            metrics.setdefault(metric["metricName"], {})[metric["step"]] = metric["metricValue"]
        if message["type"] == "parameter_msg" and payload["param"]["source"] == "manual":
            parameters[payload["param"]["paramName"]] = payload["param"]["paramValue"]
    assert metrics["dev_per"] == {1: 60.0, 2: 45.5, 3: 40.25}
    assert metrics["loss"] == {1: 3.0, 2: 2.0, 3: 1.5}
    assert list(metrics["test_per"].values()) == [38.0]
    assert parameters["model.recurrent_size"] == 8 and parameters["info.seed"] == 3
    assert secret.encode() not in everything
    assert secret not in (run_dir / comet.MARKER_NAME).read_text()
    # logging the same results again does not make a second archive
    assert (
        comet.log_run(run_dir, "abc123", "demo", config, _history(), {"test_per": 38.0}, environ={})
        == "up to date"
    )
    assert len(list((run_dir / "comet").glob("*.zip"))) == 1


# --------------------------------------------------------------------------- TensorBoard


def test_history_scalars_read_back_with_tensorboards_own_reader(tmp_path):
    history = _history()
    tensorboard.write_history_scalars(tmp_path / "run" / "tensorboard", history)
    assert tensorboard.has_event_files(tmp_path / "run")
    scalars = tensorboard.read_scalars(tmp_path)
    dev = scalars[scalars["tag"] == "dev_per"].sort_values("step")
    assert dev["step"].tolist() == [1, 2, 3]
    assert dev["value"].tolist() == pytest.approx(history["dev_per"].tolist())
    assert set(scalars["tag"]) == {"loss", "dev_per", "learning_rate"}
    assert set(scalars["run"]) == {"run/tensorboard"}
