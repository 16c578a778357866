"""Writing outputs safely: the one rule for temporary names, atomic renames, locks and disk errors.

Used by every module that writes a file or folder another process reads (corpora, features,
training, decoding, reports, pipeline state) and by ``speechbed.step_runner`` for output locks.

The rule: an output ``dir/name`` is produced under ``dir/.name.partial-<pid>`` (unique to the
process, hidden so listings and fingerprints ignore it) and renamed into place when complete;
a failed write removes its temporary. Leftovers of processes that died are removed by the
next writer of the same output (``remove_dead_partials``). One producer at a time holds
``dir/.name.lock`` (``OutputLock``); a second waits for it, then finds the output done.
Errors from the file system (read-only folder, full disk) become ``OutputError`` naming the
file and the cause.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from speechbed.errors import UserInputError

PARTIAL_MARK = ".partial-"
#: OS errors that mean "this storage cannot take the output", not a bug.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
LOCK_SUFFIX = ".lock"


class OutputError(UserInputError):
    """An output could not be written (permissions, read-only or full file system)."""


def describe_os_error(error: OSError, path: str | Path, needed_bytes: int | None = None) -> str:
    """One line for a person: which file, what went wrong, and what to do."""
    if error.errno == errno.ENOSPC:
        need = f" (about {needed_bytes / 2**20:.1f} MiB needed)" if needed_bytes else ""
        try:
            usage = shutil.disk_usage(_existing_parent(Path(path)))
            free = f"; {usage.free / 2**20:.1f} MiB free there"
        except OSError:
            free = ""
        return f"cannot write {path}: the disk is full{need}{free}; free space or move the storage folder"
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        cause = "read-only file system" if error.errno == errno.EROFS else "permission denied"
        return (
            f"cannot write {path}: {cause}; point the storage variables (DATA_DIRECTORY, "
            "CACHE_DIRECTORY, ARTIFACTS_DIRECTORY) at a writable folder"
        )
    return f"cannot write {path}: {error.strerror or error}"


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def partial_path(path: str | Path) -> Path:
    """The temporary name this process writes ``path`` under."""
    path = Path(path)
    return path.with_name(f".{path.name}{PARTIAL_MARK}{os.getpid()}")


def lock_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}{LOCK_SUFFIX}")


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_path(path: Path) -> None:
    """Remove a file or a folder tree; missing is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_dead_partials(path: str | Path) -> list[Path]:
    """Remove ``.name.partial-<pid>`` leftovers of ``path`` whose process is gone; returns them."""
    path = Path(path)
    prefix = f".{path.name}{PARTIAL_MARK}"
    removed = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        pid_text = entry.name[len(prefix) :].split("-", 1)[0]  # also ".name.partial-<pid>-old"
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not process_alive(int(pid_text)):
            remove_path(entry)
            removed.append(entry)
    return removed


def make_folder(folder: str | Path) -> Path:
    """``mkdir -p`` with an ``OutputError`` that names the folder."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(describe_os_error(error, folder)) from None
    return folder


@contextlib.contextmanager
def atomic_output(path: str | Path, needed_bytes: int | None = None) -> Iterator[Path]:
    """Yield the temporary path to write ``path`` at (file or folder); rename it into place.

    On an exception the temporary is removed and nothing at ``path`` changes. A folder that
    already exists at ``path`` is replaced (moved aside under a temporary name, then removed).
    """
    path = Path(path)
    make_folder(path.parent)
    remove_dead_partials(path)
    temporary = partial_path(path)
    remove_path(temporary)
    try:
        yield temporary
        if temporary.is_dir() and path.is_dir() and not path.is_symlink():
            old = path.with_name(f"{temporary.name}-old")  # a leftover like any partial
            remove_path(old)
            os.replace(path, old)
            os.replace(temporary, path)
            remove_path(old)
        else:
            os.replace(temporary, path)
    except OSError as error:
        remove_path(temporary)
        raise OutputError(describe_os_error(error, path, needed_bytes)) from None
    except BaseException:
        remove_path(temporary)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` all at once or not at all."""
    with atomic_output(path, needed_bytes=len(data)) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


class OutputLock:
    """An exclusive lock on producing ``path`` (``flock`` on ``.name.lock`` beside it).

    A second producer waits, saying so once on stderr; the kernel drops the lock when the
    holder dies, so a crashed producer never blocks the next one. The lock file is left in
    place (removing it would race with a waiter).
    """

    def __init__(self, path: str | Path, who: str = "") -> None:
        self.path = Path(path)
        self.who = who
        self._descriptor: int | None = None

    def __enter__(self) -> OutputLock:
        lock = lock_path(self.path)
        make_folder(lock.parent)
        try:
            descriptor = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as error:
            raise OutputError(describe_os_error(error, lock)) from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 64, 0).decode(errors="replace").strip() or "?"
            print(
                f"{self.who + ': ' if self.who else ''}waiting for process {holder}, which is "
                f"producing {self.path}",
                file=sys.stderr,
                flush=True,
            )
            started = time.monotonic()
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            print(
                f"{self.who + ': ' if self.who else ''}{self.path} released after "
                f"{time.monotonic() - started:.0f}s",
                file=sys.stderr,
                flush=True,
            )
        with contextlib.suppress(OSError):  # who holds it, for a person (the lock is the truth)
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        self._descriptor = descriptor
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None
