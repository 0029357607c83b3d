"""Crash-safe file writes: every file a run leaves is either the old version or the new one.

Also the names of the files phasetrain itself puts in a run folder (`is_run_file_name`), so that
clean-ups (stale temp files, `overwrite=True`) touch phasetrain's files and never the user's.
"""
from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

# The files a run writes directly in its folder (`tensorboard/` is a folder, see ownership.py).
RUN_FILE_NAMES = ("run.json", "metrics.json", "metrics.jsonl", "metrics.csv", "best_model.pt", "final_model.pt")
STEP_CHECKPOINT_NAME = re.compile(r"^checkpoint_step_(\d+)\.pt$")
# atomic_write's temp files: "." + target name + "." + mkstemp's 8 random characters + ".tmp".
TEMP_FILE_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")


def is_run_file_name(name: str) -> bool:
    """True for the name of a file phasetrain writes in a run folder (metrics, checkpoints, run.json)."""
    return name in RUN_FILE_NAMES or STEP_CHECKPOINT_NAME.match(name) is not None


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write `path` through `write(fileobj)` into a temp file beside it, fsync, then rename.

    Args:
        path: the file to create or replace.
        write: called once with the temp file opened for binary writing; writes the whole content.

    A kill or a full disk at any moment leaves either the previous file or the complete new one,
    never a truncated file. The new file gets the mode a plain `open()` would give it
    (0o666 minus the umask), not mkstemp's 0o600.

    Raises:
        OSError: when the disk refuses the write (full disk, quota, I/O error, read-only folder):
            one error naming `path`, with the errno of the failure (e.g. ENOSPC), also when the
            writer (e.g. `torch.save`) reported it as a RuntimeError with the OSError inside. The
            temp file is removed; a failure to remove it never replaces the original error.
        Anything else `write` raises (a bug, KeyboardInterrupt), unchanged, after the same clean-up.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise _io_error(path, error) from error
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if hasattr(os, "fchmod"):  # POSIX; Windows has no such modes
                os.fchmod(f.fileno(), 0o666 & ~current_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        try:
            os.unlink(tmp)
        except OSError:  # already gone, or the folder refuses: the write's own error is what matters
            pass
        # torch.save reports a failed write as RuntimeError ("unexpected pos ...") raised while handling it
        cause = _os_error_in_chain(error) if isinstance(error, (OSError, RuntimeError)) else None
        if cause is None:
            raise
        raise _io_error(path, cause) from error


def _os_error_in_chain(error: BaseException) -> OSError | None:
    """`error` itself or the first OSError it was raised from or while handling (torch wraps them)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _io_error(path: Path, error: OSError) -> OSError:
    code = error.errno if error.errno is not None else errno.EIO
    reason = error.strerror or os.strerror(code)
    return OSError(code, f"could not write {str(path)!r}: {reason}; the previous version of the file, if any, "
                         f"is intact")


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc/self/status)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the temp files `atomic_write` leaves when its process is killed mid-write.

    Args:
        folder: the run folder.

    Only names of the form `.<phasetrain file>.<8 characters>.tmp` directly in `folder` are
    removed (e.g. `.checkpoint_step_40.pt.k2j4_x9a.tmp`); every other file is left alone. Call it
    at run start while holding the folder's `RunLock`, so no live writer's temp file is taken.
    Returns the removed paths.
    """
    removed = []
    for entry in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else ():
        match = TEMP_FILE_NAME.match(entry.name)
        if match and is_run_file_name(match.group("target")) and entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def check_log_dir(log_dir: Any) -> Path:
    """`log_dir` as a Path: it must be a str or os.PathLike naming a folder (not empty, not bytes).

    Args:
        log_dir: the run folder argument as the user passed it.

    Raises:
        TypeError: naming `log_dir`, its value and type, for anything else (e.g. 123, None, b"runs").
        ValueError: for an empty string.
    """
    if isinstance(log_dir, (bytes, bytearray)) or not isinstance(log_dir, (str, os.PathLike)):
        raise TypeError(f"log_dir must be a str or pathlib.Path naming the run folder, got {log_dir!r} "
                        f"({type(log_dir).__name__})")
    path = Path(log_dir)
    if str(log_dir) == "":
        raise ValueError("log_dir must name a folder, got an empty string")
    return path


def prepare_log_dir(path: str | os.PathLike) -> Path:
    """Create the run folder `path` and prove it writable by writing and removing a probe file, so a
    bad `log_dir` fails before training starts (also as root, where `os.access` always says yes)."""
    path = check_log_dir(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"log_dir {str(path)!r} cannot be written: {error.strerror or error}") from None
    return path
