"""One writer per run folder: an exclusive lock held for the whole run.

The lock is `fcntl.flock` on `<folder>/.phasetrain.lock`. The kernel releases a flock when its
process ends in any way (SIGKILL and out-of-memory kills included), so a killed run never leaves a
lock that blocks the next one, and no process id is trusted: a pid check (`os.kill(pid, 0)`) is
fooled by pid reuse (frequent in containers) and cannot see processes on other hosts sharing the
folder. The file also holds the holder's pid, hostname and start time, for the error message only.
Caveats: flock is per open file, so a second `RunLock` on the same folder in the same process is
refused too, while the first is alive: a lock no object refers to any more (a trainer a notebook
cell replaced, a hand-written loop's trainer that was never finished) is released when it is
collected, and `acquire` collects garbage once before it refuses a folder its own process holds.
On network file systems flock works where the server supports it (NFSv4, recent
Linux clients), and on platforms without `fcntl` (Windows) the lock does nothing.
"""
from __future__ import annotations

import gc
import json
import os
import socket
import weakref
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import fcntl
except ImportError:  # Windows: no flock; the lock is not enforced there
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from typing_extensions import Self

LOCK_FILE = ".phasetrain.lock"


class RunFolderLocked(RuntimeError):
    """Another live process holds the run folder's lock."""


class RunLock:
    """Exclusive lock on a run folder, held from `acquire()` to `release()` (or as `with RunLock(folder):`).

    Args:
        folder: the run folder (created if missing).

    Attributes:
        path: the lock file, `folder/.phasetrain.lock`.
        previous_holder: after `acquire()`, what the lock file said about an earlier holder that
            has ended without releasing (a killed run: pid, host, started), or None.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.previous_holder: dict[str, Any] | None = None
        self._fd: int | None = None
        self._release: weakref.finalize | None = None  # also run when the lock is garbage-collected

    @property
    def held(self) -> bool:
        """True between a successful `acquire()` and `release()`."""
        return self._fd is not None

    def acquire(self) -> Self:
        """Take the lock without waiting and write this process's pid, host and start time into it.

        Raises:
            RunFolderLocked: naming the folder and the holder's pid and host when another process
                (or another RunLock of this process) holds it.
            RuntimeError: when this RunLock already holds it.
        """
        if self._fd is not None:
            raise RuntimeError(f"the lock of {str(self.folder)!r} is already held by this RunLock")
        self.folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return self
        collected = False
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                if holder.get("pid") == os.getpid() and not collected:
                    collected = True
                    gc.collect()  # the holder may be a lock of this process that nothing refers to
                    continue
                raise RunFolderLocked(_locked_message(self.folder, holder)) from None
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder removed the file between our open and our lock: lock the new one
        self.previous_holder = _read_holder(fd) or None
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode() + b"\n", 0)
        self._fd = fd
        self._release = weakref.finalize(self, _unlock, self.path, fd, os.getpid())
        return self

    def release(self) -> None:
        """Remove the lock file and release the lock (nothing happens when it is not held)."""
        if self._release is not None:
            self._fd, release, self._release = None, self._release, None
            release()

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _unlock(path: Path, fd: int, owner: int) -> None:
    """Remove the lock file, while still locked (so no one else's file is removed), and close it,
    which releases the flock; only in the `owner` process (a forked child, e.g. a DataLoader
    worker, shares the lock and must not remove it)."""
    if os.getpid() != owner:
        return
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _locked_message(folder: Path, holder: dict[str, Any]) -> str:
    """Why `folder` is refused: who holds it (this process, or another one) and what to do."""
    if holder.get("pid") == os.getpid():
        return (f"log_dir {str(folder)!r} is in use by another trainer or callback of this process (pid "
                f"{os.getpid()}), still alive; two runs must not write into one folder: let that run end (a "
                f"hand-written loop's trainer holds its folder until `trainer.finish()`), or use another log_dir")
    return (f"log_dir {str(folder)!r} is in use by process {holder.get('pid', '?')} on host {holder.get('host', '?')} "
            f"(started {holder.get('started', '?')}); two runs must not write into one folder: wait for it to "
            f"end, stop it, or use another log_dir")


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (on_disk.st_dev, on_disk.st_ino)
