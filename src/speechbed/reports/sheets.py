"""Google Sheet report: one worksheet per experiment, one row per run upserted by run id.

Called by ``scripts/analyze.py`` when ``report.google_sheet`` is on. Uses gspread with a
service-account file (``PATH_TO_GOOGLE_CREDENTIALS``); without one it says so and goes on.

The worksheet holds a header row, the run rows (column A is the run id) and, after one
blank row, a summary block with the per-condition statistics and, when there are any, the
tests between conditions that differ in one setting, titled with the experiment's score and
the direction in which it is better. Re-running merges the new rows into the
existing ones by run id (rows from other machines stay), so nothing is ever duplicated; the
summary block is rewritten each time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from speechbed.reports.score import PER, Score

Grid = list[list[Any]]


#: The statistics block's title of a PER experiment (as sheets written before other scores).
SUMMARY_TITLE = "summary"


def summary_title(score: Score = PER) -> str:
    """The statistics block's title: "summary" for PER, else with the score ("summary:
    accuracy (%)")."""
    return SUMMARY_TITLE if score == PER else f"{SUMMARY_TITLE}: {score.label}"


def comparisons_title(score: Score = PER) -> str:
    """The pairwise tests' title, with the direction in which the score is better."""
    return (
        "pairwise tests (conditions differing in one setting; difference = a - b; "
        f"{score.better} {score.name} is better)"
    )


COMPARISONS_TITLE = comparisons_title(PER)


class Worksheet(Protocol):
    """The gspread ``Worksheet`` methods this report uses (tests use an in-memory stand-in)."""

    row_count: int
    col_count: int

    def get_all_values(self) -> list[list[str]]: ...
    def clear(self) -> Any: ...
    def resize(self, rows: int | None = None, cols: int | None = None) -> Any: ...
    def update(self, values: Grid, range_name: str | None = None, **kwargs: Any) -> Any: ...


def _cell(value: Any) -> Any:
    """A value as a sheet cell: floats rounded, missing values blank."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        # tiny values (p-values) keep their significant digits; the others six decimals
        return float(f"{value:.6g}") if 0 < abs(value) < 1e-3 else round(value, 6)
    if hasattr(value, "item"):  # numpy scalars
        return _cell(value.item())
    return value


def _same(a: Any, b: Any) -> bool:
    return str(_cell(a)) == str(_cell(b))


def merge_rows(
    existing: list[list[str]], header: Sequence[str], rows: Sequence[Sequence[Any]]
) -> tuple[list[str], Grid]:
    """Merge run rows (first column = run id) into a sheet's values; returns header, rows.

    Existing columns keep their order and new columns are appended; an existing run's row
    is replaced where the new row has values; runs not in ``rows`` are kept as they were.
    """
    old_header = [str(name) for name in existing[0]] if existing and any(existing[0]) else []
    while old_header and not old_header[-1]:
        old_header.pop()  # the summary block is wider than the run rows
    merged_header = list(old_header) + [name for name in header if name not in old_header]
    by_id: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for row in existing[1:]:
        if not row or not str(row[0]).strip():
            break  # the blank row before the summary block ends the run rows
        record = dict(zip(old_header, row, strict=False))
        run_id = str(row[0])
        if run_id not in by_id:
            order.append(run_id)
        by_id[run_id] = record
    for row in rows:
        record = {name: _cell(value) for name, value in zip(header, row, strict=True)}
        run_id = str(record[header[0]])
        if run_id not in by_id:
            order.append(run_id)
            by_id[run_id] = {}
        by_id[run_id].update(record)
    merged = [[by_id[run_id].get(name, "") for name in merged_header] for run_id in order]
    return merged_header, merged


def _table(title: str, table: pd.DataFrame) -> Grid:
    block: Grid = [[title], [str(column) for column in table.columns]]
    for row in table.itertuples(index=False):
        block.append([_cell(value) for value in row])
    return block


def summary_block(
    statistics: pd.DataFrame, comparisons: pd.DataFrame | None = None, score: Score = PER
) -> Grid:
    """The statistics table as rows under a title row, then (after a blank row) the pairwise
    tests under theirs when there are any."""
    block = _table(summary_title(score), statistics)
    if comparisons is not None and len(comparisons):
        block += [[], *_table(comparisons_title(score), comparisons)]
    return block


def sheet_grid(
    existing: list[list[str]],
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    statistics: pd.DataFrame,
    comparisons: pd.DataFrame | None = None,
    score: Score = PER,
) -> Grid:
    """Everything the worksheet will hold after the upsert."""
    merged_header, merged = merge_rows(existing, header, rows)
    return [merged_header, *merged, [], *summary_block(statistics, comparisons, score)]


def _rectangular(grid: Grid) -> Grid:
    width = max(len(row) for row in grid)
    return [list(row) + [""] * (width - len(row)) for row in grid]


def upsert_worksheet(
    worksheet: Worksheet,
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    statistics: pd.DataFrame,
    comparisons: pd.DataFrame | None = None,
    score: Score = PER,
) -> Grid:
    """Upsert the run rows and rewrite the summary block; returns what was written."""
    existing = worksheet.get_all_values()
    grid = _rectangular(sheet_grid(existing, header, rows, statistics, comparisons, score))
    height, width = len(grid), len(grid[0])
    if worksheet.row_count < height or worksheet.col_count < width:
        worksheet.resize(
            rows=max(height, worksheet.row_count), cols=max(width, worksheet.col_count)
        )
    worksheet.clear()
    worksheet.update(values=grid, range_name="A1")
    return grid


def open_worksheet(spreadsheet: Any, title: str, columns: int) -> Any:
    """The experiment's worksheet, created (with room for the header) when missing."""
    import gspread

    try:
        return spreadsheet.worksheet(title)
    except gspread.exceptions.WorksheetNotFound:
        return spreadsheet.add_worksheet(title=title, rows=100, cols=max(columns, 10))


def report_to_sheet(
    credentials: Path,
    spreadsheet_name: str,
    worksheet_title: str,
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    statistics: pd.DataFrame,
    dry_run: bool = False,
    comparisons: pd.DataFrame | None = None,
    score: Score = PER,
) -> str:
    """Send the rows to the sheet (or print them with ``dry_run``); returns a one-line status."""
    if dry_run:
        grid = sheet_grid([], header, rows, statistics, comparisons, score)
        print(
            f"Google Sheet dry run: would upsert into '{spreadsheet_name}' / '{worksheet_title}':"
        )
        for row in grid:
            print("  " + "\t".join(str(value) for value in row))
        return f"dry run: {len(rows)} run row(s) printed"
    if not credentials.is_file():
        return (
            f"skipped: no Google credentials at {credentials} (set PATH_TO_GOOGLE_CREDENTIALS "
            "to a service-account JSON file; see README)"
        )
    import google.auth.exceptions
    import gspread
    import requests

    try:
        info = json.loads(credentials.read_text(encoding="utf-8"))
        if not isinstance(info, dict):
            raise ValueError(f"a JSON {type(info).__name__}, not an object")
        client = gspread.service_account_from_dict(info)
    except (OSError, ValueError, google.auth.exceptions.GoogleAuthError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        return (
            f"failed: {credentials} is not a usable service-account JSON file ({first_line}); "
            "download a new key for the service account and point PATH_TO_GOOGLE_CREDENTIALS at it"
        )
    try:
        spreadsheet = client.open(spreadsheet_name)
        worksheet = open_worksheet(spreadsheet, worksheet_title, len(header))
        upsert_worksheet(worksheet, header, rows, statistics, comparisons, score)
    except gspread.exceptions.SpreadsheetNotFound:
        return (
            f"failed: spreadsheet '{spreadsheet_name}' not found or not shared with the service "
            "account (share it with the client_email in the credentials file)"
        )
    except (
        gspread.exceptions.GSpreadException,
        google.auth.exceptions.GoogleAuthError,
        requests.RequestException,
    ) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        return (
            f"failed: Google Sheets did not take the rows ({first_line}); the run tables are "
            "in the analysis folder"
        )
    return f"upserted {len(rows)} run row(s) into '{spreadsheet_name}' / '{worksheet_title}'"
