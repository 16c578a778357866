"""Print an analysis folder's results: the statistics table, stale and unfinished runs, the plots.

Reads what scripts/analyze.py wrote (statistics.md, unfinished.csv, *.png) without recomputing
anything, so `make demo` can end with the results even when every step was already done.
"""

import argparse
import csv
import sys
from pathlib import Path


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "folder", type=Path, help="the analysis folder, e.g. ${ARTIFACTS_DIRECTORY}/demo/analysis"
    )
    folder = parser.parse_args(argv).folder
    table = folder / "statistics.md"
    if not table.is_file():
        print(f"error: {table} not found; run scripts/analyze.py first", file=sys.stderr)
        return 2
    print(f"PER (%) per condition and partition ({folder.parent.name}):")
    print(table.read_text(encoding="utf-8"))
    for name, what in (
        ("stale", "stale (trained or evaluated on data that has changed since)"),
        ("unfinished", "not finished"),
    ):
        listed = _read_rows(folder / f"{name}.csv")
        if listed:
            print(f"{len(listed)} run(s) {what}:")
            for row in listed:
                print(
                    f"  {row['experiment']}/{row['run_id']}  {row['condition']}  "
                    f"seed={row['seed']}: {row['status']}"
                )
    print("plots:")
    for plot in sorted(folder.glob("*.png")):
        print(f"  {plot}")
    print(f"every run: {folder / 'runs.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
