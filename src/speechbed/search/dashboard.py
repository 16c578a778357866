"""optuna-dashboard over a search file's storage: the journal file or the SEARCH_STORAGE database.

Started in the background by ``make dashboard yml=FILE`` (``python -m speechbed.services
dashboard --yml FILE``), which runs ``python -m speechbed.search.dashboard -y FILE --host H
--port P``. The storage is opened here, from the search file, so a database URL (which may
hold a password) never appears on a command line or in a log.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speechbed.errors import UserInputError
from speechbed.storage import fill_storage_defaults


def serve(search_file: Path, host: str, port: int) -> None:
    """Serve the study's storage with optuna-dashboard until the process is stopped."""
    from optuna_dashboard import run_server

    from speechbed.search.search_file import load_search
    from speechbed.search.storage import describe_storage, open_storage
    from speechbed.search.worker import study_folder

    search = load_search(search_file)
    journal = study_folder(search).journal
    if search.settings.storage == "journal" and not journal.is_file():
        raise UserInputError(f"{search_file}: no study yet at {journal}; run the search first")
    storage = open_storage(search, journal)
    where = describe_storage(search.settings.storage, journal)
    print(f"optuna-dashboard: study {search.study} in {where} on http://{host}:{port}/", flush=True)
    run_server(storage, host=host, port=port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-y", "--yml", required=True, type=Path, help="the search YAML")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--port", type=int, default=8080)
    arguments = parser.parse_args(argv)
    fill_storage_defaults()
    try:
        serve(arguments.yml, arguments.host, arguments.port)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
