"""Crash-safe file writes: every file a run leaves is either the old version or the new one."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write `path` through `write(fileobj)` into a temp file beside it, fsync, then rename.

    A kill or a full disk at any moment leaves either the previous file or the complete new one,
    never a truncated file. The temp file is removed when writing fails.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def prepare_log_dir(path: str | os.PathLike) -> Path:
    """Create the run folder `path` and prove it writable by writing and removing a probe file, so a
    bad `log_dir` fails before training starts (also as root, where `os.access` always says yes)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"log_dir {str(path)!r} cannot be written: {error.strerror or error}") from None
    return path
