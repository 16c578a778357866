"""Exclusive GPU leases: one OS file lock per device in a folder every pipeline shares.

The scheduler takes a lease before starting a job and returns it when the job is gone.

A lease is ``flock(LOCK_EX)`` on ``<lease dir>/gpu-<id>.lock``. The lock belongs to the open
file, so the kernel drops it when the last process holding a descriptor of it closes it or
dies. The runner opens it close-on-exec and hands a copy to the job it leases it for
(``descriptors``: ``pass_fds``) and to its watchdog: the GPU stays leased while the job or
a process of its group lives, even after a killed runner, and no longer.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from speechbed.errors import UserInputError

# The folder is writable by everyone: never follow a link planted in it.
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)


def default_lease_dir(environ: Mapping[str, str]) -> Path:
    """``SPEECHBED_LEASE_DIR``, else ``<tmp>/speechbed-gpu-leases`` (as in default.sh)."""
    configured = environ.get("SPEECHBED_LEASE_DIR", "").strip()
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / "speechbed-gpu-leases"


class GpuLeases:
    """Takes and returns per-device locks; remembers which ones this process holds."""

    def __init__(self, lease_dir: Path) -> None:
        self.lease_dir = lease_dir
        self._held: dict[int, int] = {}  # device -> open lock file descriptor

    def prepare(self) -> None:
        """Create the lease folder (before anything starts, so a bad folder stops the run).

        A folder this process creates is shared like /tmp (sticky, writable by all), so
        every user's pipelines on the machine lease through the same lock files.
        """
        try:
            self.lease_dir.mkdir(parents=True)
            self.lease_dir.chmod(0o1777)
        except FileExistsError:
            pass
        except OSError as error:
            raise UserInputError(
                f"cannot create the GPU lease folder {self.lease_dir} ({error}); "
                "set SPEECHBED_LEASE_DIR to a writable folder"
            ) from None
        if not self.lease_dir.is_dir() or not os.access(self.lease_dir, os.W_OK | os.X_OK):
            raise UserInputError(
                f"the GPU lease folder {self.lease_dir} is not a writable folder; "
                "set SPEECHBED_LEASE_DIR to one every pipeline on this machine can use"
            )

    def held(self) -> set[int]:
        return set(self._held)

    def descriptors(self, devices: list[int]) -> list[int]:
        """The open lock descriptors of ``devices`` (held by this process), to hand on."""
        return [self._held[device] for device in devices]

    def try_acquire(self, device: int) -> bool:
        """Lock ``device`` without waiting; False when another process holds it."""
        if device in self._held:
            return False
        path = self.lease_dir / f"gpu-{device}.lock"
        writable = True
        try:
            try:
                descriptor = os.open(
                    path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | _NO_FOLLOW, 0o666
                )
                with contextlib.suppress(OSError):  # so other users can open it too
                    os.fchmod(descriptor, 0o666)
            except PermissionError:  # another user's lock file: flock works on a read-only one
                descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC | _NO_FOLLOW)
                writable = False
        except OSError as error:
            raise UserInputError(
                f"cannot open the GPU lease file {path} ({error}); remove it or set "
                "SPEECHBED_LEASE_DIR to another folder"
            ) from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return False
        except BaseException:
            os.close(descriptor)
            raise
        if writable:  # for a person looking at the folder: who holds it (the lock is the truth)
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        self._held[device] = descriptor
        return True

    def acquire_some(self, candidates: list[int], count: int) -> list[int] | None:
        """Lock ``count`` of ``candidates`` (in order) or none of them."""
        taken: list[int] = []
        for device in candidates:
            if len(taken) == count:
                break
            if self.try_acquire(device):
                taken.append(device)
        if len(taken) < count:
            self.release(taken)
            return None
        return taken

    def release(self, devices: list[int]) -> None:
        for device in devices:
            descriptor = self._held.pop(device, None)
            if descriptor is not None:
                os.close(descriptor)  # the flock lasts while a job's copy is still open

    def release_all(self) -> None:
        self.release(list(self._held))
