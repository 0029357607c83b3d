"""Checkpoint files: atomic saves, and loads that never run pickled code.

A checkpoint is a dict of tensors and plain containers written with `torch.save` to a temp file
and renamed into place, so a kill or a full disk leaves the previous file intact. Loading uses
`torch.load(weights_only=True)`: a file that needs anything beyond tensors, numbers, strings and
containers is refused with an explanation, never unpickled.
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from phasetrain.run.files import atomic_write

CHECKPOINT_FORMAT = "phasetrain-checkpoint"
CHECKPOINT_VERSION = 2  # 2: the recorder's state (window, epoch totals) beside the run state
CHECKPOINT_PATTERN = re.compile(r"^checkpoint_step_(\d+)\.pt$")


class CheckpointError(ValueError):
    """A file that is missing, truncated, foreign or refused as unsafe."""


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
    """Write `checkpoint` to `path` atomically (temp file, fsync, rename)."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **checkpoint}
    atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint_file(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read and check a phasetrain checkpoint with `torch.load(weights_only=True)`.

    Raises CheckpointError (a ValueError) naming the path for a missing, truncated, non-checkpoint
    or unsafe file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"refused to load {str(path)!r}: it holds objects other than tensors and plain containers, "
            f"and unpickling them could run arbitrary code ({error.__class__.__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no detail'})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as error:
        raise CheckpointError(f"{str(path)!r} is truncated or not a torch checkpoint: {error}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{str(path)!r} is a torch file but not a phasetrain checkpoint (no format tag)")
    if checkpoint.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has checkpoint version {checkpoint.get('version')!r}; this phasetrain reads {CHECKPOINT_VERSION}"
        )
    return checkpoint


def checkpoint_path(log_dir: str | os.PathLike, step: int) -> Path:
    """`log_dir/checkpoint_step_{step}.pt`."""
    return Path(log_dir) / f"checkpoint_step_{step}.pt"


def step_checkpoints(log_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """The `checkpoint_step_*.pt` files directly in `log_dir`, as (step, path), oldest first.

    Symbolic links are ignored, so a run folder never leads a resume or a prune outside itself.
    """
    found = []
    for entry in Path(log_dir).iterdir() if Path(log_dir).is_dir() else ():
        match = CHECKPOINT_PATTERN.match(entry.name)
        if match and entry.is_file() and not entry.is_symlink():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(log_dir: str | os.PathLike, map_location: Any = "cpu") -> tuple[Path, dict[str, Any]]:
    """The newest readable checkpoint in `log_dir`: the highest-step `checkpoint_step_*.pt` or
    `final_model.pt`, whichever holds the later step.

    Unreadable files are skipped with a warning naming them. Raises FileNotFoundError if none is valid.
    """
    final_path = Path(log_dir) / "final_model.pt"
    newest_first = [path for _, path in reversed(step_checkpoints(log_dir))]
    final = _try_load(final_path, map_location) if final_path.is_file() else None
    for path in newest_first:
        checkpoint = _try_load(path, map_location)
        if checkpoint is not None:
            if final is not None and final["step"] >= checkpoint["step"]:
                return final_path, final
            return path, checkpoint
    if final is not None:
        return final_path, final
    raise FileNotFoundError(f"no valid checkpoint in {str(log_dir)!r} to resume from")


def _try_load(path: Path, map_location: Any) -> dict[str, Any] | None:
    try:
        return load_checkpoint_file(path, map_location)
    except CheckpointError as error:
        warnings.warn(f"skipping unreadable checkpoint: {error}", RuntimeWarning, stacklevel=3)
        return None
