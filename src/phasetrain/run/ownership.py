"""Which run owns a run folder, and refusing to mix two runs' files in one folder.

Every run has a run id (`new_run_id()`, 32 hex digits). The run that owns a folder is named in
`run.json` (written by `claim_folder` when the run starts), and the same id is stored in every
checkpoint (`checkpoint["run_id"]`) and in `metrics.json`'s meta (`meta["run_id"]`). A new run
refuses a folder that already holds a run's files (`check_folder_free`) unless it resumes that
run or is told `overwrite=True`, which first removes every one of the old run's files
(`clear_run_files`) and nothing else.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path

from phasetrain.run.files import atomic_write, is_run_file_name

RUN_FILE = "run.json"
RUN_FORMAT = "phasetrain-run"
TENSORBOARD_DIR = "tensorboard"


class RunFolderInUse(ValueError):
    """A new run was pointed at a folder that holds another run's files."""


def new_run_id() -> str:
    """A fresh run id: uuid4 as 32 lowercase hex digits."""
    return uuid.uuid4().hex


def run_files(folder: str | os.PathLike) -> list[Path]:
    """phasetrain's files directly in `folder`, sorted: run.json, metrics.json/.jsonl/.csv,
    checkpoint_step_*.pt, best_model.pt, final_model.pt, and the tensorboard/ folder.

    Args:
        folder: the run folder (missing: an empty list).

    Symbolic links with those names count too (they are removed, never followed).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(entry for entry in folder.iterdir()
                  if (is_run_file_name(entry.name) and (entry.is_file() or entry.is_symlink()))
                  or (entry.name == TENSORBOARD_DIR and (entry.is_dir() or entry.is_symlink())))


def folder_run_id(folder: str | os.PathLike) -> str | None:
    """The id of the run that owns `folder`: `run.json`'s `run_id`, else `metrics.json`'s
    `meta.run_id`, else None (no run yet, or one written before run ids existed).

    Args:
        folder: the run folder.

    A `run.json` that is unreadable is treated as absent (it is rewritten atomically, so it is
    only damaged by hand).
    """
    folder = Path(folder)
    for name, keys in ((RUN_FILE, ("run_id",)), ("metrics.json", ("meta", "run_id"))):
        try:
            value = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str) and value:
            return value
    return None


def claim_folder(folder: str | os.PathLike, run_id: str) -> Path:
    """Write `folder/run.json` naming `run_id` as the folder's owner (atomically) and return its path.

    Args:
        folder: the run folder (must exist).
        run_id: the id of the run starting (or resuming) in it.
    """
    if not isinstance(run_id, str) or not run_id:
        raise TypeError(f"run_id must be a non-empty str, got {run_id!r}")
    path = Path(folder) / RUN_FILE
    document = {"format": RUN_FORMAT, "run_id": run_id,
                "claimed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write(path, lambda f: f.write(json.dumps(document, indent=1).encode() + b"\n"))
    return path


def check_folder_free(folder: str | os.PathLike, overwrite: bool = False) -> list[Path]:
    """Make sure a new (not resuming) run may write into `folder`.

    Args:
        folder: the run folder.
        overwrite: False: raise RunFolderInUse when `folder` holds any run file. True: remove all of
            them first (`clear_run_files`) and return what was removed.

    Raises:
        RunFolderInUse: naming the folder, the owning run id when known, a few of the files,
            and the three ways out.
    """
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}")
    found = run_files(folder)
    if not found:
        return []
    if overwrite:
        return clear_run_files(folder)
    owner = folder_run_id(folder)
    names = ", ".join(path.name for path in found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
    raise RunFolderInUse(
        f"log_dir {str(folder)!r} already holds the files of run {owner or '(id unknown)'}: {names}. "
        f"Use a new log_dir; continue that run (the trainer: resume_from='latest'; the Lightning callback: "
        f"trainer.fit(..., ckpt_path=...); the Hugging Face callback: trainer.train(resume_from_checkpoint=...)); "
        f"or pass overwrite=True (to the trainer or the callback) to delete all of its files (other files in "
        f"the folder are kept) and start afresh"
    )


def clear_run_files(folder: str | os.PathLike) -> list[Path]:
    """Remove every phasetrain file of `folder` (see `run_files`) and return the removed paths.

    Args:
        folder: the run folder.

    The user's own files and folders, the lock file and stray temp files are kept. `run.json` goes
    last, so a clean-up cut short still names the owner of what is left.
    """
    found = sorted(run_files(folder), key=lambda path: path.name == RUN_FILE)
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return found
