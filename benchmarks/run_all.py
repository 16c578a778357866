"""Runs every benchmark module (benchmarks/bench_*.py) and prints each one's table.

Called by `make bench`. Each module has a `main()` that measures its subject against a
baseline in the same run and prints a table of ratios.
"""

import importlib.util
import sys

from speechbed.storage import repository_root


def main() -> int:
    here = repository_root() / "benchmarks"
    only = sys.argv[1:]
    for path in sorted(here.glob("bench_*.py")):
        if only and not any(name in path.stem for name in only):
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(f"\n=== {path.stem} ===", flush=True)
        module.main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
