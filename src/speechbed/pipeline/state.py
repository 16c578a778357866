"""Job keys and success records: what lets a re-run pipeline skip the jobs already done.

The loader computes keys; the scheduler records successes; ``--dry-run`` reads them.

A job's key is a SHA-256 over its script path (relative to the repository root when
inside it), the text of its job file after ``${VAR}`` substitution, its ``run_in`` and its
extra ``args``. Success is one small JSON file, ``<state dir>/<key>.json``, written to a
temporary name and renamed into place; failed and interrupted jobs leave no record, so
the next run starts them again. The state folder is ``${ARTIFACTS_DIRECTORY}/pipelines/state``.
Keys do not depend on the pipeline file, so a job done by one pipeline counts as done in
another that runs the very same step.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from speechbed.errors import UserInputError


def job_key(script: str, resolved_config_text: str, run_in: str, args: Sequence[str]) -> str:
    """The 24-hex-digit identity of a job's work."""
    identity = json.dumps([script, resolved_config_text, run_in, list(args)], ensure_ascii=False)
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:24]


class JobState:
    """Success records in one folder, one file per job key."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def record_path(self, key: str) -> Path:
        return self.state_dir / f"{key}.json"

    def is_done(self, key: str) -> bool:
        return self.record_path(key).is_file()

    def prepare(self) -> None:
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserInputError(
                f"cannot create the pipeline state folder {self.state_dir} ({error}); "
                "check ARTIFACTS_DIRECTORY"
            ) from None

    def record_success(self, key: str, details: dict[str, object]) -> None:
        record = {"key": key, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **details}
        final = self.record_path(key)
        temporary = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(record, indent=1, default=str) + "\n", encoding="utf-8")
        os.replace(temporary, final)
