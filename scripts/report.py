"""Print an analysis folder's results: the statistics table, stale and unfinished runs, the plots.

Reads what scripts/analyze.py wrote (statistics.md, score.json, unfinished.csv, *.png) without
recomputing anything (speechbed.reports.saved), so results can be shown again in seconds.
"""

import argparse
import sys
from pathlib import Path

from speechbed.reports.saved import print_saved_results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "folder", type=Path, help="the analysis folder, e.g. ${ARTIFACTS_DIRECTORY}/demo/analysis"
    )
    folder = parser.parse_args(argv).folder
    if not print_saved_results(folder):
        print(
            f"error: {folder / 'statistics.md'} not found; run scripts/analyze.py first",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
