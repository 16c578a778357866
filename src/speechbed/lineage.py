"""Data lineage: fingerprints of what a job read and wrote, so "done" means done for these inputs.

``speechbed.step_runner`` records a job's lineage after it succeeds; ``speechbed.pipeline.state``
checks it before skipping a job; the reports use ``fingerprint`` to find stale runs.

A fingerprint is a short SHA-256 digest:
- a file: over its bytes (memoised per process by inode, size and mtime);
- a folder whose producer wrote ``FINGERPRINT_FILE`` when it completed it (a feature store,
  a corpus): that file's text, so a large output is never re-read to check it;
- any other folder: over the sorted names, sizes and mtimes of the files under it.
Hidden entries (temporaries, locks: see ``speechbed.outputs``) never count.

Paths are recorded portably, as ``${CACHE_DIRECTORY}/...`` (or DATA, ARTIFACTS, the
repository root) when they lie under one, so a record written inside a container or on a
compute node is checked on the host.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from speechbed.storage import ROOT_VARIABLE, STORAGE_FOLDERS, storage_directory

FINGERPRINT_FILE = ".speechbed-fingerprint"
_memo: dict[tuple[int, int, int, int], str] = {}


def digest(parts: Iterable[str | bytes]) -> str:
    """A 24-hex-digit SHA-256 over ``parts`` (each length-prefixed, so joins are unambiguous)."""
    hasher = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        hasher.update(len(data).to_bytes(8, "little"))
        hasher.update(data)
    return hasher.hexdigest()[:24]


def _file_fingerprint(path: Path, stat: os.stat_result) -> str:
    key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    cached = _memo.get(key)
    if cached is None:
        hasher = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(block)
        cached = _memo[key] = hasher.hexdigest()[:24]
    return cached


def write_folder_fingerprint(folder: str | Path, value: str) -> None:
    """Called by a producer when a folder output is complete (before renaming it into place)."""
    (Path(folder) / FINGERPRINT_FILE).write_text(value + "\n", encoding="utf-8")


def fingerprint(path: str | Path) -> str | None:
    """The fingerprint of a file or folder; None when it does not exist."""
    path = Path(path)
    try:
        stat = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not path.is_dir():
        return _file_fingerprint(path, stat)
    marker = path / FINGERPRINT_FILE
    if marker.is_file():
        return marker.read_text(encoding="utf-8").strip()
    rows = []
    for directory, subfolders, files in os.walk(path):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            entry = Path(directory) / name
            with_stat = entry.stat()
            relative = entry.relative_to(path).as_posix()
            rows.append(f"{relative}\t{with_stat.st_size}\t{with_stat.st_mtime_ns}")
    return digest(rows)


def _anchors(environ: Mapping[str, str], root: Path) -> list[tuple[str, Path]]:
    anchors = [
        (variable, storage_directory(variable, root, environ).absolute())
        for variable in STORAGE_FOLDERS
    ]
    anchors.append((ROOT_VARIABLE, root.absolute()))
    # The deepest folder first: a cache folder inside the repository is ${CACHE_DIRECTORY}/...
    return sorted(anchors, key=lambda anchor: len(anchor[1].parts), reverse=True)


def portable_path(path: str | Path, environ: Mapping[str, str], root: Path) -> str:
    """``path`` as ``${VARIABLE}/relative`` when under a storage folder or the repository."""
    absolute = Path(os.path.abspath(path))
    for variable, anchor in _anchors(environ, root):
        try:
            relative = absolute.relative_to(anchor)
        except ValueError:
            continue
        return f"${{{variable}}}/{relative.as_posix()}" if relative.parts else f"${{{variable}}}"
    return absolute.as_posix()


def local_path(text: str, environ: Mapping[str, str], root: Path) -> Path:
    """The inverse of ``portable_path`` with this process's settings."""
    for variable, anchor in _anchors(environ, root):
        token = f"${{{variable}}}"
        if text == token:
            return anchor
        if text.startswith(token + "/"):
            return anchor / text[len(token) + 1 :]
    return Path(text)


@dataclass
class Lineage:
    """What one finished job read and wrote, with each path's fingerprint when it finished."""

    inputs: dict[str, str | None] = field(default_factory=dict)
    outputs: dict[str, str | None] = field(default_factory=dict)
    code_versions: dict[str, int] = field(default_factory=dict)

    @classmethod
    def measure(
        cls,
        inputs: Iterable[str | Path],
        outputs: Iterable[str | Path],
        code_versions: Mapping[str, int],
        environ: Mapping[str, str],
        root: Path,
    ) -> Lineage:
        return cls(
            inputs={portable_path(p, environ, root): fingerprint(p) for p in inputs},
            outputs={portable_path(p, environ, root): fingerprint(p) for p in outputs},
            code_versions=dict(code_versions),
        )

    def to_json(self) -> dict[str, object]:
        return {
            "inputs": self.inputs,
            "outputs": self.outputs,
            "code_versions": self.code_versions,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Lineage:
        return cls(
            inputs=dict(data.get("inputs") or {}),  # type: ignore[arg-type]
            outputs=dict(data.get("outputs") or {}),  # type: ignore[arg-type]
            code_versions=dict(data.get("code_versions") or {}),  # type: ignore[arg-type]
        )

    def merge(self, other: Lineage) -> None:
        """Add another job's lineage (a script that ran several jobs of one file)."""
        for name, value in other.inputs.items():
            self.inputs.setdefault(name, value)
        self.outputs.update(other.outputs)
        self.code_versions.update(other.code_versions)

    def why_outdated(
        self, current_versions: Mapping[str, int], environ: Mapping[str, str], root: Path
    ) -> str | None:
        """None when every input still matches and every output is still there, else why not."""
        for name, version in self.code_versions.items():
            now = current_versions.get(name)
            if now != version:
                return f"code version of {name} changed ({version} -> {now})"
        for kind, paths in (("input", self.inputs), ("output", self.outputs)):
            for text, recorded in paths.items():
                now = fingerprint(local_path(text, environ, root))
                if now == recorded:
                    continue
                shown = Path(text).name or text
                if now is None:
                    return f"{kind} {shown} is missing ({text})"
                if recorded is None:
                    return f"{kind} {shown} appeared ({text})"
                return f"{kind} {shown} changed ({text})"
        return None
