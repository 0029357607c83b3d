"""RunLock: one live writer per run folder; a killed holder's lock is taken over."""
from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from phasetrain.run import lock as lock_module
from phasetrain.run.lock import LOCK_FILE, RunFolderLocked, RunLock

# The holder loads lock.py by path (stdlib only), so it starts in milliseconds, without torch.
HOLDER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("lock", sys.argv[1])
lock = importlib.util.module_from_spec(spec); spec.loader.exec_module(lock)
held = lock.RunLock(sys.argv[2]).acquire()
print("held", flush=True)
sys.stdin.readline()  # hold until told (or killed)
held.release()
"""


def start_holder(folder: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, lock_module.__file__, str(folder)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_second_process_is_refused_naming_folder_and_holder_pid(tmp_path):
    holder = start_holder(tmp_path)
    try:
        with pytest.raises(RunFolderLocked) as raised:
            RunLock(tmp_path).acquire()
        message = str(raised.value)
        assert str(tmp_path) in message and f"process {holder.pid}" in message and socket.gethostname() in message
    finally:
        holder.communicate("\n", timeout=10)
    assert holder.returncode == 0
    assert not (tmp_path / LOCK_FILE).exists()  # released cleanly: file removed
    with RunLock(tmp_path) as taken:
        assert taken.held and taken.previous_holder is None


def test_a_killed_holders_lock_is_taken_over(tmp_path):
    holder = start_holder(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    assert (tmp_path / LOCK_FILE).exists()  # the killed process could not clean up
    taken = RunLock(tmp_path).acquire()
    try:
        assert taken.previous_holder["pid"] == holder.pid
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    finally:
        taken.release()


def test_a_second_lock_in_the_same_process_is_refused_too(tmp_path):
    with RunLock(tmp_path), pytest.raises(RunFolderLocked, match=rf"this process \(pid {os.getpid()}\), still alive"):
        RunLock(tmp_path).acquire()
    RunLock(tmp_path).acquire().release()  # free again after the with block


def test_acquire_twice_and_release_twice(tmp_path):
    held = RunLock(tmp_path / "new_folder").acquire()
    assert (tmp_path / "new_folder" / LOCK_FILE).exists()
    with pytest.raises(RuntimeError, match="already held"):
        held.acquire()
    held.release()
    held.release()
    assert not held.held


def test_lock_file_replaced_between_open_and_lock_is_retried(tmp_path, monkeypatch):
    """A holder releasing (unlinking) while we wait must not leave two holders of different files."""
    real_flock = lock_module.fcntl.flock
    calls = []

    def flock_after_a_swap(fd, operation):
        if not calls:
            (tmp_path / LOCK_FILE).unlink()
            (tmp_path / LOCK_FILE).write_text("{}")  # someone else's new lock file
        calls.append(fd)
        return real_flock(fd, operation)

    monkeypatch.setattr(lock_module.fcntl, "flock", flock_after_a_swap)
    held = RunLock(tmp_path).acquire()
    assert len(calls) == 2  # the first (stale inode) was dropped, the file on disk is locked
    assert os.fstat(held._fd).st_ino == os.stat(tmp_path / LOCK_FILE).st_ino
    held.release()


def test_many_processes_racing_get_exactly_one_holder(tmp_path):
    script = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("lock", sys.argv[1])
lock = importlib.util.module_from_spec(spec); spec.loader.exec_module(lock)
try:
    held = lock.RunLock(sys.argv[2]).acquire()
except lock.RunFolderLocked:
    print("refused", flush=True); sys.exit(0)
print("held", flush=True); sys.stdin.readline(); held.release()
"""
    procs = [subprocess.Popen([sys.executable, "-c", script, lock_module.__file__, str(tmp_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(6)]
    outputs = sorted(p.stdout.readline().strip() for p in procs)  # the holder holds until every racer answered
    for p in procs:
        p.communicate("\n", timeout=30)
    assert outputs == ["held"] + ["refused"] * 5, outputs


class Holder:
    """Something that holds a lock inside a reference cycle, as a trainer does (its recorder's
    hooks point back at it): freed only by the cyclic garbage collector."""

    def __init__(self, folder):
        self.lock = RunLock(folder).acquire()
        self.me = self


def test_a_lock_nothing_refers_to_is_released_when_collected(tmp_path):
    RunLock(tmp_path / "plain").acquire()  # dropped at once
    assert not (tmp_path / "plain" / LOCK_FILE).exists()
    RunLock(tmp_path / "plain").acquire().release()
    gc.disable()  # no collection behind the test's back: only acquire's own may free the holder
    try:
        Holder(tmp_path / "cycle")
        assert (tmp_path / "cycle" / LOCK_FILE).exists()  # unreachable, not yet collected
        RunLock(tmp_path / "cycle").acquire().release()  # acquire collected it, then took the lock
    finally:
        gc.enable()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_dropping_the_lock_leaves_it_held_by_the_parent(tmp_path):
    held = RunLock(tmp_path).acquire()
    child = os.fork()
    if child == 0:  # a DataLoader worker, say: it drops its copy and exits
        del held  # the last reference: its finalizer runs here
        os._exit(0)
    os.waitpid(child, 0)
    assert (tmp_path / LOCK_FILE).exists()
    with pytest.raises(RunFolderLocked):
        RunLock(tmp_path).acquire()
    held.release()
