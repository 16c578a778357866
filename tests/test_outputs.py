"""The one rule for writing outputs: per-process temporaries, atomic renames, locks, disk errors."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from speechbed.outputs import (
    OutputError,
    OutputLock,
    atomic_output,
    describe_os_error,
    partial_path,
    remove_dead_partials,
    write_text_atomic,
)


def test_a_failed_write_leaves_nothing_and_keeps_the_old_output(tmp_path):
    target = tmp_path / "results.json"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_output(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["results.json"]


def test_a_folder_output_replaces_the_old_one_whole(tmp_path):
    target = tmp_path / "corpus"
    with atomic_output(target) as temporary:
        temporary.mkdir()
        (temporary / "old.txt").write_text("1")
    with atomic_output(target) as temporary:
        temporary.mkdir()
        (temporary / "new.txt").write_text("2")
    assert sorted(path.name for path in target.iterdir()) == ["new.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["corpus"]


def test_leftovers_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    target = tmp_path / "train.zarr"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_leftover = target.with_name(f".train.zarr.partial-{int(dead.stdout)}")
    dead_leftover.mkdir()
    (dead_leftover / "chunk").write_bytes(b"x")
    dead_old_copy = target.with_name(f".train.zarr.partial-{int(dead.stdout)}-old")
    dead_old_copy.mkdir()  # killed between the two renames that replace a folder
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live_leftover = target.with_name(f".train.zarr.partial-{live.pid}")
        live_leftover.write_text("being written")
        assert sorted(remove_dead_partials(target)) == [dead_leftover, dead_old_copy]
        assert not dead_leftover.exists() and live_leftover.exists()
    finally:
        live.kill()
        live.wait()
    assert partial_path(target).name == f".train.zarr.partial-{os.getpid()}"


def test_a_second_producer_waits_for_the_lock_and_says_so(tmp_path):
    target = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from speechbed.outputs import OutputLock\n"
         f"with OutputLock({str(target)!r}):\n"
         "    print('locked', flush=True); time.sleep(1.5)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        waiter = subprocess.run(
            [sys.executable, "-c",
             f"from speechbed.outputs import OutputLock\nwith OutputLock({str(target)!r}, who='job 0'):\n"
             "    print('got it')"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert waiter.returncode == 0 and waiter.stdout.strip() == "got it"
    assert f"job 0: waiting for process {holder.pid}, which is producing {target}" in waiter.stderr
    assert waited > 0.5


def test_a_dead_holder_never_blocks_the_next_producer(tmp_path):
    target = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import time; from speechbed.outputs import OutputLock\nwith OutputLock({str(target)!r}):\n"
         "    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    with OutputLock(target):
        pass


def test_disk_errors_name_the_file_and_the_cause(tmp_path):
    full = describe_os_error(OSError(errno.ENOSPC, "No space left"), tmp_path / "e.pt", 3 << 20)
    assert full.startswith(f"cannot write {tmp_path / 'e.pt'}: the disk is full (about 3.0 MiB")
    assert "MiB free there" in full
    read_only = describe_os_error(OSError(errno.EROFS, "Read-only"), Path("/x/y"))
    assert "read-only file system" in read_only and "ARTIFACTS_DIRECTORY" in read_only


def test_an_unwritable_place_is_an_output_error_naming_it(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="a_file"):
        write_text_atomic(blocker / "inside" / "x.txt", "data")
