"""Job keys and done records: what lets a re-run pipeline skip exactly the jobs still done.

The loader computes keys; the scheduler records successes and asks ``why_run`` before
starting a job; ``--dry-run`` prints the same answers.

A job's key is a SHA-256 over its script path (relative to the repository root when
inside it), the text of its job file after ``${VAR}`` substitution and its extra ``args``
(not where it runs: a job done on the host counts as done in a container or on Slurm). Success is one small JSON file, ``<state dir>/<key>.json``, written
atomically (``speechbed.outputs``); failed and interrupted jobs leave no record. A script
that follows the job-file convention hands the runner its lineage (``speechbed.lineage``:
fingerprints of what it read and wrote, and its code versions) through the file named by
``SPEECHBED_LINEAGE_FILE``; the record keeps it, and the job counts as done only while its
inputs still match and its outputs still exist unchanged. A nested pipeline reports itself
as such and always runs again: its own jobs decide what is done. Keys do not depend on the
pipeline file, so a job done by one pipeline counts as done in another that runs the very
same step. The state folder is ``${ARTIFACTS_DIRECTORY}/pipelines/state``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from speechbed.code_versions import CODE_VERSIONS
from speechbed.lineage import Lineage
from speechbed.outputs import OutputError, make_folder, process_alive, write_text_atomic

#: What a nested pipeline writes to its lineage file: "run me every time".
NESTED_PIPELINE = "nested_pipeline"


def job_key(script: str, resolved_config_text: str, args: Sequence[str]) -> str:
    """The 24-hex-digit identity of a job's work (where it runs is not part of it)."""
    identity = json.dumps([script, resolved_config_text, list(args)], ensure_ascii=False)
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:24]


class JobState:
    """Done records in one folder, one file per job key."""

    def __init__(self, state_dir: Path, environ: Mapping[str, str], root: Path) -> None:
        self.state_dir = state_dir
        self.environ = environ
        self.root = root

    def record_path(self, key: str) -> Path:
        return self.state_dir / f"{key}.json"

    def lineage_path(self, key: str) -> Path:
        """Where a running job hands over its lineage (hidden, unique to this runner)."""
        return self.state_dir / f".{key}.lineage-{os.getpid()}.json"

    def why_run(self, key: str) -> str | None:
        """None when the job is done for its current inputs, else the reason to run it."""
        try:
            record = json.loads(self.record_path(key).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return "not run before"
        except (OSError, ValueError):
            return "its done record is unreadable"
        lineage = record.get("lineage")
        if not isinstance(lineage, dict):
            return None  # a script outside the convention: done when it succeeded
        if lineage.get(NESTED_PIPELINE):
            return "nested pipeline: its own jobs decide"
        return Lineage.from_json(lineage).why_outdated(CODE_VERSIONS, self.environ, self.root)

    def is_done(self, key: str) -> bool:
        return self.why_run(key) is None

    def prepare(self) -> None:
        """Create the folder; drop lineage hand-overs left by runners that died."""
        try:
            make_folder(self.state_dir)
        except OutputError as error:
            raise OutputError(
                f"{error} (the pipeline state folder; check ARTIFACTS_DIRECTORY)"
            ) from None
        for leftover in self.state_dir.glob(".*.lineage-*.json"):
            pid = leftover.name.rsplit("-", 1)[-1].removesuffix(".json")
            if pid.isdigit() and not process_alive(int(pid)):
                with contextlib.suppress(OSError):
                    leftover.unlink()

    def take_lineage(self, key: str) -> dict[str, object] | None:
        """Read and remove the lineage a finished job handed over (None if it wrote none)."""
        path = self.lineage_path(key)
        try:
            lineage = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
        return lineage if isinstance(lineage, dict) else None

    def record_success(
        self, key: str, details: dict[str, object], lineage: dict[str, object] | None
    ) -> None:
        record = {"key": key, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **details}
        if lineage is not None:
            record["lineage"] = lineage
        write_text_atomic(self.record_path(key), json.dumps(record, indent=1, default=str) + "\n")
