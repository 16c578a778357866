"""Corpora under concurrent writers and crashes: one correct corpus, no leftovers, lineage.

Real processes: two make_synthetic_timit.py (or prep_timit.py) on one output, a writer killed
with SIGKILL mid-write. The tiny corpus is made once in-process as the reference.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from speechbed.corpora.manifest import TOKENS_FILE, manifest_path
from speechbed.corpora.synthetic import make_synthetic_timit, synthetic_fingerprint
from speechbed.corpora.timit import PARTITIONS, prepare_timit
from speechbed.lineage import Lineage, fingerprint
from speechbed.outputs import OutputLock

REPOSITORY = Path(__file__).resolve().parents[1]
SEED = 3


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reference") / "synthetic_timit"
    assert make_synthetic_timit(root, "tiny", seed=SEED, progress=False) is not None
    return root


def corpus_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Temporaries of speechbed.outputs anywhere under ``folder`` (locks are meant to stay)."""
    return sorted(
        str(path.relative_to(folder))
        for path in folder.rglob(".*")
        if ".partial" in path.name or ".old-" in path.name
    )


class Script:
    """A step script run as a real process, its output going to files (no pipe to fill)."""

    def __init__(self, name: str, job: Path, settings: dict, tag: str) -> None:
        job.write_text(json.dumps(settings))
        self.stdout_path = job.with_name(f"{tag}.out")
        self.stderr_path = job.with_name(f"{tag}.err")
        with self.stdout_path.open("w") as stdout, self.stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(REPOSITORY / "scripts" / name), "-y", str(job)],
                stdout=stdout,
                stderr=stderr,
            )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def finish(self) -> int:
        return self.process.wait(timeout=120)


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds:.0f} s for {what}"
        time.sleep(0.02)


def start_together(name: str, output: Path, settings: dict, tmp_path: Path) -> list[Script]:
    """Two writers of ``output``, released at the same moment.

    The test holds the output's lock while both start, so both are running (and, with the
    lock rule, both waiting) before either writes; without the rule they race at once.
    """
    with OutputLock(output):
        scripts = [
            Script(name, tmp_path / f"job{index}.json", settings, f"writer{index}")
            for index in range(2)
        ]
        wait_until(
            lambda: all(
                "waiting for process" in script.stderr or script.process.poll() is not None
                for script in scripts
            ),
            "both writers to start",
        )
    return scripts


def test_two_corpus_writers_at_once_make_one_corpus(reference: Path, tmp_path: Path) -> None:
    output = tmp_path / "data" / "synthetic_timit"
    settings = {"output_path": str(output), "scale": "tiny", "seed": SEED}
    writers = start_together("make_synthetic_timit.py", output, settings, tmp_path)
    for writer in writers:
        assert writer.finish() == 0, writer.stderr
    assert sorted("skipped" in writer.stdout for writer in writers) == [False, True]
    assert corpus_digest(output) == corpus_digest(reference)
    assert fingerprint(output) == synthetic_fingerprint("tiny", SEED)
    assert leftovers(output.parent) == []


def test_killed_corpus_writer_leaves_nothing_the_next_run_keeps(
    reference: Path, tmp_path: Path
) -> None:
    output = tmp_path / "synthetic_timit"
    settings = {"output_path": str(output), "scale": "tiny", "seed": SEED}
    writer = Script("make_synthetic_timit.py", tmp_path / "job.json", settings, "killed")
    temporary = tmp_path / f".synthetic_timit.partial-{writer.process.pid}"
    wait_until(lambda: temporary.is_dir() and any(temporary.rglob("*.WAV")), "the first audio file")
    writer.process.send_signal(signal.SIGKILL)
    assert writer.finish() == -signal.SIGKILL
    assert temporary.is_dir() and not output.exists()  # the dead writer's half corpus

    again = Script("make_synthetic_timit.py", tmp_path / "job.json", settings, "again")
    assert again.finish() == 0, again.stderr
    assert not temporary.exists()
    assert leftovers(tmp_path) == []
    assert corpus_digest(output) == corpus_digest(reference)
    assert fingerprint(output) == synthetic_fingerprint("tiny", SEED)


def test_new_seed_rewrites_the_corpus_and_outdates_the_manifests(
    reference: Path, tmp_path: Path
) -> None:
    corpus = tmp_path / "synthetic_timit"
    shutil.copytree(reference, corpus)
    manifests = tmp_path / "manifests"
    assert prepare_timit(corpus, manifests, progress=False) is not None
    before = manifest_path(manifests, "train").read_bytes()
    # what the pipeline records for the prep job, checked on the next run
    record = Lineage.measure([corpus], [manifests], {}, {}, tmp_path)
    assert record.why_outdated({}, {}, tmp_path) is None
    assert make_synthetic_timit(corpus, "tiny", seed=SEED, progress=False) is None

    assert make_synthetic_timit(corpus, "tiny", seed=SEED + 1, progress=False) is not None
    assert fingerprint(corpus) == synthetic_fingerprint("tiny", SEED + 1)
    assert synthetic_fingerprint("tiny", SEED + 1) != synthetic_fingerprint("tiny", SEED)
    assert synthetic_fingerprint("small", SEED) != synthetic_fingerprint("tiny", SEED)
    assert "input synthetic_timit changed" in str(record.why_outdated({}, {}, tmp_path))
    assert prepare_timit(corpus, manifests, progress=False) is not None
    assert manifest_path(manifests, "train").read_bytes() != before
    assert prepare_timit(corpus, manifests, progress=False) is None
    assert leftovers(tmp_path) == []


def test_two_manifest_writers_at_once_make_one_set(reference: Path, tmp_path: Path) -> None:
    expected = tmp_path / "expected"
    prepare_timit(reference, expected, progress=False)
    output = tmp_path / "manifests"
    settings = {"input_path": str(reference), "output_path": str(output)}
    writers = start_together("prep_timit.py", output, settings, tmp_path)
    for writer in writers:
        assert writer.finish() == 0, writer.stderr
    assert sorted("skipped" in writer.stdout for writer in writers) == [False, True]
    for path in [manifest_path(output, name) for name in PARTITIONS] + [output / TOKENS_FILE]:
        assert path.read_bytes() == (expected / path.name).read_bytes(), path.name
    assert leftovers(tmp_path) == []
