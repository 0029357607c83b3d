"""Checkpoint files: atomic saves, and loads that never run pickled code.

A checkpoint is a dict of tensors and plain containers written with `torch.save` to a temp file
and renamed into place, so a kill or a full disk leaves the previous file intact. Loading uses
`torch.load(weights_only=True)`: a file that needs anything beyond tensors, numbers, strings and
containers is refused with an explanation, never unpickled.
"""
from __future__ import annotations

import os
import pickle
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from phasetrain.run.files import STEP_CHECKPOINT_NAME, atomic_write

CHECKPOINT_FORMAT = "phasetrain-checkpoint"
CHECKPOINT_VERSION = 2  # 2: the recorder's state (window, epoch totals) beside the run state


class CheckpointError(ValueError):
    """A file that is missing, truncated, foreign or refused as unsafe."""


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
    """Write `checkpoint` to `path` atomically (temp file, fsync, rename)."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **checkpoint}
    atomic_write(path, lambda f: torch.save(payload, f))


# the prefix torch.compile's wrapper puts before the wrapped module's state_dict keys
COMPILED_PREFIX = "_orig_mod."


def load_checkpoint_file(path: str | os.PathLike, map_location: Any = "cpu", **load_options: Any) -> dict[str, Any]:
    """Read and check a phasetrain checkpoint with `torch.load(weights_only=True)`.

    Args:
        path: the checkpoint file.
        map_location: where tensors go, as for `torch.load`.
        **load_options: further `torch.load` keywords (e.g. `mmap=True` to read a file's keys
            without reading its tensors).

    Raises CheckpointError (a ValueError) naming the path for a missing, truncated, damaged,
    non-checkpoint or unsafe file; never a raw error from inside torch.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if not _is_zip_archive(path):  # torch.save writes zip archives; anything else is damaged or foreign
        raise CheckpointError(f"{str(path)!r} is truncated or not a torch checkpoint: not a zip archive "
                              f"({path.stat().st_size} bytes)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, **load_options)
    except pickle.UnpicklingError as error:
        if "global" not in str(error).lower():  # a damaged pickle stream, not a refused class
            raise CheckpointError(f"{str(path)!r} is truncated or not a torch checkpoint: its pickle data "
                                  f"is damaged") from None
        raise CheckpointError(
            f"refused to load {str(path)!r}: it holds objects other than tensors and plain containers, "
            f"and unpickling them could run arbitrary code ({error.__class__.__name__}: "
            f"{_refused_detail(error)})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError, TypeError,
            AttributeError, OverflowError, MemoryError, struct.error) as error:
        # torch reading a damaged archive raises any of these from deep inside; none escapes as itself
        raise CheckpointError(f"{str(path)!r} is truncated or not a torch checkpoint: "
                              f"{error.__class__.__name__}: {error}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{str(path)!r} is a torch file but not a phasetrain checkpoint (no format tag)")
    if checkpoint.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has checkpoint version {checkpoint.get('version')!r}; "
            f"this phasetrain reads {CHECKPOINT_VERSION}"
        )
    model = checkpoint.get("model")
    if isinstance(model, dict) and model and all(key.startswith(COMPILED_PREFIX) for key in model):
        # written by an earlier phasetrain from a compiled model: the plain module's keys
        checkpoint["model"] = {key[len(COMPILED_PREFIX):]: value for key, value in model.items()}
    return checkpoint


def _is_zip_archive(path: Path) -> bool:
    try:
        return zipfile.is_zipfile(path)
    except (OSError, ValueError, struct.error, zipfile.BadZipFile):  # is_zipfile itself trips on some damage
        return False


def _refused_detail(error: pickle.UnpicklingError) -> str:
    """The line of torch's refusal that names the class it would not load."""
    lines = [line.strip() for line in str(error).splitlines() if "global" in line.lower()]
    return lines[0] if lines else "no detail"


def checkpoint_path(log_dir: str | os.PathLike, step: int) -> Path:
    """`log_dir/checkpoint_step_{step}.pt`."""
    return Path(log_dir) / f"checkpoint_step_{step}.pt"


def checkpoint_run_id(path: str | os.PathLike) -> str | None:
    """The `run_id` stored in the checkpoint at `path` (None when it has none: an older file).

    Reads the file memory-mapped, so the tensors are not read. Raises CheckpointError for an
    unreadable file.
    """
    run_id = load_checkpoint_file(path, mmap=True).get("run_id")
    return run_id if isinstance(run_id, str) else None


def step_checkpoints(log_dir: str | os.PathLike, run_id: str | None = None) -> list[tuple[int, Path]]:
    """The `checkpoint_step_*.pt` files directly in `log_dir`, as (step, path), oldest first.

    Args:
        log_dir: the run folder.
        run_id: when given, only the files whose stored `run_id` equals it (each file is opened
            memory-mapped; unreadable files and files of other or unknown runs are left out). None
            lists every file by name alone.

    Symbolic links are ignored, so a run folder never leads a resume or a prune outside itself.
    """
    found = []
    for entry in Path(log_dir).iterdir() if Path(log_dir).is_dir() else ():
        match = STEP_CHECKPOINT_NAME.match(entry.name)
        if match and entry.is_file() and not entry.is_symlink():
            found.append((int(match.group(1)), entry))
    if run_id is not None:
        found = [(step, path) for step, path in found if _run_id_or_none(path) == run_id]
    return sorted(found)


def _run_id_or_none(path: Path) -> str | None:
    try:
        return checkpoint_run_id(path)
    except CheckpointError:
        return None


def prune_checkpoints(log_dir: str | os.PathLike, keep: int, run_id: str | None) -> list[Path]:
    """Delete the step checkpoints of run `run_id` in `log_dir` but the `keep` highest-step ones.

    Args:
        log_dir: the run folder.
        keep: how many of the run's step checkpoints to keep (>= 1).
        run_id: the current run's id; files of other runs, of no run (older phasetrain) and
            unreadable files are never counted nor deleted. None: every step checkpoint counts
            (only for folders written before run ids existed).

    Call it after the new checkpoint is written, so the kept ones always include it.
    `best_model.pt` and `final_model.pt` are never touched. Returns the deleted paths.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be an int >= 1, got {keep!r}")
    old = [path for _, path in step_checkpoints(log_dir, run_id)[:-keep]]
    for path in old:
        path.unlink(missing_ok=True)
    return old


def latest_checkpoint(log_dir: str | os.PathLike, map_location: Any = "cpu",
                      run_id: str | None = None) -> tuple[Path, dict[str, Any]]:
    """The newest readable checkpoint in `log_dir`: the highest-step `checkpoint_step_*.pt` or
    `final_model.pt`, whichever holds the later step.

    Args:
        log_dir: the run folder.
        map_location: where tensors go, as for `torch.load`.
        run_id: when given, files whose stored `run_id` differs (another run, or none) are
            skipped, so a resume never picks up another run's file.

    Unreadable files are skipped with a RuntimeWarning naming them. Raises FileNotFoundError if
    none is valid.
    """
    final_path = Path(log_dir) / "final_model.pt"
    newest_first = [path for _, path in reversed(step_checkpoints(log_dir))]
    final = _try_load(final_path, map_location, run_id) if final_path.is_file() else None
    for path in newest_first:
        checkpoint = _try_load(path, map_location, run_id)
        if checkpoint is not None:
            if final is not None and final["step"] >= checkpoint["step"]:
                return final_path, final
            return path, checkpoint
    if final is not None:
        return final_path, final
    owner = f" of run {run_id}" if run_id is not None else ""
    raise FileNotFoundError(f"no valid checkpoint{owner} in {str(log_dir)!r} to resume from")


def _try_load(path: Path, map_location: Any, run_id: str | None) -> dict[str, Any] | None:
    try:
        checkpoint = load_checkpoint_file(path, map_location)
    except CheckpointError as error:
        warnings.warn(f"skipping unreadable checkpoint: {error}", RuntimeWarning, stacklevel=3)
        return None
    if run_id is not None and checkpoint.get("run_id") != run_id:
        return None
    if isinstance(checkpoint.get("step"), bool) or not isinstance(checkpoint.get("step"), int):
        warnings.warn(f"skipping checkpoint {str(path)!r}: its 'step' is {checkpoint.get('step')!r}, not an int",
                      RuntimeWarning, stacklevel=3)
        return None
    return checkpoint
