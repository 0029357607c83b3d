"""Opening a run folder at run start: the checks of ownership.py, lock.py and files.py in their order.

`open_run_folder` is what a front end calls before it writes anything or opens a stream: it
checks `log_dir`, takes the folder's lock, removes temp files of killed writes, and either
claims the folder for a new run (refusing another run's files unless `overwrite=True`) or, for a
resume, reads the id of the run that owns it. `RunFolder.close()` releases the lock at the end.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from phasetrain.run.files import check_log_dir, prepare_log_dir, remove_stale_temp_files
from phasetrain.run.lock import RunLock
from phasetrain.run.ownership import (
    check_folder_free,
    claim_folder,
    clear_run_files,
    folder_run_id,
    new_run_id,
    run_files,
)


@dataclass
class RunFolder:
    """A run folder opened for writing.

    Attributes:
        path: the folder.
        run_id: the run's id; None only when resuming in a folder written before run ids existed
            (then call `adopt(checkpoint.get("run_id") or new_run_id())` once the checkpoint is chosen).
        lock: the held `RunLock`.
        removed_temp_files: temp files of killed writes removed at opening.
        cleared: the old run's files removed because of `overwrite=True`.
        new_run: True when a new run claimed the folder (free, or cleared), False for a resume.
    """

    path: Path
    run_id: str | None
    lock: RunLock
    removed_temp_files: list[Path] = field(default_factory=list)
    cleared: list[Path] = field(default_factory=list)
    new_run: bool = False

    def adopt(self, run_id: str) -> None:
        """Make `run_id` the folder's owner (resume of a folder without one) and write run.json."""
        claim_folder(self.path, run_id)
        self.run_id = run_id

    def release_unused(self) -> list[Path]:
        """A new run that ends before its first update hands the folder back as it found it: its
        files (run.json, metrics files, streams) are removed, so running again is not refused as
        another run's folder. Returns what was removed: nothing for a resume, or once the run
        has written a checkpoint (`on_nonfinite="raise"` at the first update saves one)."""
        if not self.new_run or any(path.suffix == ".pt" for path in run_files(self.path)):
            return []
        return clear_run_files(self.path)

    def close(self) -> None:
        """Release the folder's lock (idempotent)."""
        self.lock.release()


def open_run_folder(log_dir: str | os.PathLike, *, resuming: bool, overwrite: bool = False) -> RunFolder:
    """Check, lock and claim the run folder before a run writes anything.

    Args:
        log_dir: the run folder (created when missing).
        resuming: True when the run continues one in this folder (`resume_from="latest"`, or a
            checkpoint path inside it): the folder's files are kept and its owner's id is read.
        overwrite: for a new run, delete the files of the run already in the folder (all of
            them, nothing else) instead of refusing; must be False when `resuming`.

    Raises:
        TypeError / ValueError: a bad `log_dir` (naming it), or an unwritable folder.
        RunFolderLocked: another process writes into the folder.
        RunFolderInUse: a new run without `overwrite` in a folder holding another run's files.
        ValueError: `overwrite=True` together with `resuming=True`.
    On any error the lock is released again.
    """
    if resuming and overwrite:
        raise ValueError("overwrite=True deletes the run in log_dir, resume_from continues it: pass one of them")
    path = prepare_log_dir(check_log_dir(log_dir))
    lock = RunLock(path).acquire()
    try:
        removed = remove_stale_temp_files(path)
        if resuming:
            return RunFolder(path, folder_run_id(path), lock, removed)
        cleared = check_folder_free(path, overwrite)
        run_id = new_run_id()
        claim_folder(path, run_id)
        return RunFolder(path, run_id, lock, removed, cleared, new_run=True)
    except BaseException:
        lock.release()
        raise
