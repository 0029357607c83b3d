"""Checks made before a resume restores anything: is the checkpoint whole, and does it fit the live run?

Two pure functions, run on the loaded checkpoint dict before any `load_state_dict`:

- `validate_checkpoint(checkpoint, path)`: every required key is there with the right type, else a
  `CheckpointError` naming the file and the key (never a raw KeyError/TypeError later).
- `check_resume_compatible(checkpoint, model=..., optimizer=..., ...)`: the live model, optimizer,
  scheduler and training data match what the checkpoint was saved with; every difference is
  listed in one `ResumeMismatch` (a ValueError). A deliberate change of optimizer
  hyperparameters (e.g. the learning rate) or of the batch size is accepted when named in
  `allow_changes`; `reapply_hyperparameters` then puts the live values back after
  `optimizer.load_state_dict` (which would otherwise restore the saved ones).

What a checkpoint stores for these checks (`resume_fields` builds them at save time):
`optimizer_class` and `scheduler_class` (qualified class names, scheduler None without one) and
`data = {"batch_size": int | None, "batches_per_epoch": int | None}` (None where the loader does
not say). Checkpoints without them (older files) skip those comparisons; the optimizer's saved
param_groups are compared in any case.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from phasetrain.run.checkpoints import CheckpointError
from phasetrain.run.state import RunState

# key -> allowed types, for what the trainer's checkpoints hold at the top level
TRAINER_CHECKPOINT_KEYS: dict[str, tuple[type, ...]] = {
    "step": (int,), "epoch": (int,), "model": (dict,), "optimizer": (dict,), "scheduler": (dict, type(None)),
    "update": (dict,), "history": (dict,), "run_state": (dict,), "rng": (dict, type(None)),
    "rng_epoch_start": (dict, type(None)),
    "callbacks": (list,), "monitors": (list,), "watcher": (dict,), "window": (dict,), "epoch_totals": (dict,),
}
# written since run ids exist; optional so older checkpoints stay readable
OPTIONAL_CHECKPOINT_KEYS: dict[str, tuple[type, ...]] = {
    "run_id": (str,), "optimizer_class": (str,), "scheduler_class": (str, type(None)), "data": (dict,),
}
# param_group entries that choose an implementation, not the mathematics: changing them is harmless
IMPLEMENTATION_KEYS = frozenset({"foreach", "fused", "capturable", "differentiable"})
BATCH_SIZE = "batch_size"


class ResumeMismatch(ValueError):
    """The live model/optimizer/scheduler/data differ from those the checkpoint was saved with."""


def validate_checkpoint(checkpoint: Mapping[str, Any], path: str | os.PathLike,
                        required: Mapping[str, tuple[type, ...]] = TRAINER_CHECKPOINT_KEYS) -> None:
    """Raise CheckpointError naming `path` and the key when `checkpoint` lacks a key or holds a wrong type.

    Args:
        checkpoint: the dict `load_checkpoint_file` returned.
        path: the file it came from (for the message).
        required: key -> allowed types of the top-level entries that must be present; the
            optional entries (`OPTIONAL_CHECKPOINT_KEYS`) are type-checked when present.

    Also checks the optimizer state's layout (`state`, `param_groups` with `params` lists) and
    that `run_state` holds only known counters.
    """
    where = f"checkpoint {str(path)!r}"
    for key in required:
        if key not in checkpoint:
            raise CheckpointError(f"{where} has no {key!r} entry; it was not written by this phasetrain trainer "
                                  f"or is damaged")
    for key, types in {**required, **OPTIONAL_CHECKPOINT_KEYS}.items():
        value = checkpoint.get(key)
        if key in checkpoint and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
            allowed = " or ".join("None" if t is type(None) else t.__name__ for t in types)
            raise CheckpointError(f"{where}: {key!r} must be {allowed}, got {type(value).__name__}")
    optimizer = checkpoint.get("optimizer")
    if isinstance(optimizer, dict):
        groups = optimizer.get("param_groups")
        if not isinstance(optimizer.get("state"), dict) or not isinstance(groups, list) or not all(
                isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups):
            raise CheckpointError(f"{where}: 'optimizer' is not an optimizer state_dict "
                                  f"(needs 'state' and 'param_groups' with 'params' lists)")
    run_state = checkpoint.get("run_state")
    if isinstance(run_state, dict):
        known = {field.name for field in dataclasses.fields(RunState)}
        unknown = sorted(set(run_state) - known)
        if unknown:
            raise CheckpointError(f"{where}: 'run_state' has unknown entries {unknown}; known: {sorted(known)}")


def class_name(obj: Any) -> str | None:
    """`module.QualName` of `obj`'s class, or None for None."""
    return None if obj is None else f"{type(obj).__module__}.{type(obj).__qualname__}"


def data_description(loader: Any) -> dict[str, int | None]:
    """`{"batch_size": ..., "batches_per_epoch": ...}` of a training loader, None where it does not say.

    Args:
        loader: the training loader (a DataLoader gives both; a list gives its length only).

    Never iterates the loader.
    """
    size = getattr(loader, "batch_size", None)
    if size is None:
        size = getattr(getattr(loader, "batch_sampler", None), "batch_size", None)
    try:
        length = len(loader)
    except TypeError:
        length = None
    return {"batch_size": size if isinstance(size, int) else None, "batches_per_epoch": length}


def resume_fields(optimizer: torch.optim.Optimizer, scheduler: Any, train_loader: Any) -> dict[str, Any]:
    """The entries every checkpoint must carry for `check_resume_compatible` (add `run_id` beside them).

    Args:
        optimizer: the live optimizer.
        scheduler: the live scheduler, or None.
        train_loader: the training loader of the run.
    """
    return {"optimizer_class": class_name(optimizer), "scheduler_class": class_name(scheduler),
            "data": data_description(train_loader)}


def hyperparameters(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """The live optimizer's hyperparameters per param group (everything but `params`), copied."""
    return [{key: value for key, value in group.items() if key != "params"} for group in optimizer.param_groups]


def check_resume_compatible(checkpoint: Mapping[str, Any], *, model: nn.Module, optimizer: torch.optim.Optimizer,
                            scheduler: Any = None, train_loader: Any = None, allow_changes: Iterable[str] = (),
                            path: str | os.PathLike | None = None) -> list[str]:
    """Compare the checkpoint with the live objects before anything is restored.

    Args:
        checkpoint: a checkpoint that passed `validate_checkpoint`.
        model: the live model (unwrapped from DDP).
        optimizer: the live optimizer, as the user built it for this resume.
        scheduler: the live scheduler, or None.
        train_loader: the live training loader, or None to skip the data checks.
        allow_changes: differences to accept: "batch_size" (batch size or loader length; only from
            a checkpoint taken at an epoch boundary, since a mid-epoch position counts batches of the
            old size) and names of optimizer hyperparameters ("lr", "weight_decay", "momentum",
            "betas", ...; "lr" covers the scheduler's "initial_lr"). The model's parameters and the
            optimizer and scheduler classes must always match.
        path: the checkpoint file, for the message.

    Returns:
        One line per accepted difference (for a warning or the log); empty when all match.

    Raises:
        ResumeMismatch: listing every difference not accepted, and how to accept those that can be.
        ValueError: for an entry of `allow_changes` that is neither "batch_size" nor a hyperparameter
            of the optimizer.
    """
    allowed = _check_allow_changes(allow_changes, optimizer)
    refused: list[str] = []
    accepted: list[str] = []
    refused += _model_differences(checkpoint["model"], model.state_dict())
    refused += _class_difference("optimizer", checkpoint.get("optimizer_class"), class_name(optimizer),
                                 "optimizer_class" in checkpoint)
    refused += _class_difference("scheduler", checkpoint.get("scheduler_class"), class_name(scheduler),
                                 "scheduler_class" in checkpoint)
    if (checkpoint.get("scheduler") is None) != (scheduler is None) and "scheduler_class" not in checkpoint:
        refused.append("scheduler: the checkpoint was saved "
                       f"{'without' if checkpoint.get('scheduler') is None else 'with'} "
                       f"one, the live run has {'one' if scheduler is not None else 'none'}")
    for line, key in _group_differences(checkpoint["optimizer"]["param_groups"], optimizer.param_groups):
        (accepted if key in allowed or (key == "initial_lr" and "lr" in allowed) else refused).append(line)
    if train_loader is not None and isinstance(checkpoint.get("data"), dict):
        live = data_description(train_loader)
        changed = [f"{name}: checkpoint {checkpoint['data'].get(name)!r}, live {live[name]!r}" for name in live
                   if checkpoint["data"].get(name) is not None and live[name] is not None
                   and checkpoint["data"].get(name) != live[name]]
        position = int(checkpoint.get("run_state", {}).get("batch_in_epoch", 0) or 0)
        if changed and BATCH_SIZE in allowed and position == 0:
            accepted += changed
        elif changed and BATCH_SIZE in allowed:
            refused += [line + f" (the checkpoint is at batch {position} of an epoch; a change of batch size is "
                               f"possible only from a checkpoint at an epoch boundary)" for line in changed]
        else:
            refused += changed
    if refused:
        where = f" {str(path)!r}" if path is not None else ""
        hint = ("; to resume with deliberate changes of hyperparameters or batch size, name them in "
                "allow_changes (e.g. allow_changes=('lr', 'batch_size')); the model, the optimizer class and "
                "the scheduler class must match")
        raise ResumeMismatch(f"cannot resume from checkpoint{where}: the live run differs from it in "
                             f"{len(refused)} way(s):\n  - " + "\n  - ".join(refused) + "\n" + hint)
    return accepted


def reapply_hyperparameters(optimizer: torch.optim.Optimizer, live: Sequence[Mapping[str, Any]],
                            allow_changes: Iterable[str], scheduler: Any = None) -> None:
    """After `optimizer.load_state_dict`, put back the live values of the allowed hyperparameters.

    Args:
        optimizer: the optimizer that has just loaded the checkpoint's state (and its saved
            hyperparameters).
        live: `hyperparameters(optimizer)` taken before the load.
        allow_changes: the same `allow_changes` given to `check_resume_compatible`.
        scheduler: the live scheduler; with "lr" allowed its `base_lrs` become the live
            `initial_lr`s (or `lr`s), so the schedule continues from the new rate.
    """
    names = {"lr", "initial_lr"} if "lr" in set(allow_changes) else set()
    names |= set(allow_changes) - {BATCH_SIZE}
    for group, values in zip(optimizer.param_groups, live):
        for name in names & set(values):
            group[name] = values[name]
    if "lr" in names and scheduler is not None and hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [values.get("initial_lr", values["lr"]) for values in live]


def _check_allow_changes(allow_changes: Iterable[str], optimizer: torch.optim.Optimizer) -> set[str]:
    if isinstance(allow_changes, str):
        raise TypeError(f"allow_changes must be a sequence of names, e.g. ('lr',), got the string {allow_changes!r}")
    names = set(allow_changes)
    known = {BATCH_SIZE} | {key for group in optimizer.param_groups for key in group if key != "params"}
    unknown = sorted(map(str, names - known))
    if unknown:
        raise ValueError(f"allow_changes got {unknown}; allowed: {sorted(known - IMPLEMENTATION_KEYS)}")
    return names | ({"initial_lr"} if "lr" in names else set())


def _model_differences(saved: Mapping[str, Any], live: Mapping[str, torch.Tensor]) -> list[str]:
    lines = []
    missing, unexpected = sorted(set(live) - set(saved)), sorted(set(saved) - set(live))
    if missing:
        lines.append(f"model: parameters/buffers missing from the checkpoint: {_few(missing)}")
    if unexpected:
        lines.append(f"model: the checkpoint has parameters/buffers the live model lacks: {_few(unexpected)}")
    for name in sorted(set(saved) & set(live)):
        saved_shape = tuple(saved[name].shape) if isinstance(saved[name], torch.Tensor) else None
        if saved_shape != tuple(live[name].shape):
            lines.append(f"model: {name!r} has shape {saved_shape} in the checkpoint, {tuple(live[name].shape)} live")
    return lines


def _class_difference(what: str, saved: str | None, live: str | None, stored: bool) -> list[str]:
    if stored and saved != live:
        return [f"{what}: the checkpoint was saved with {saved or 'none'}, the live run has {live or 'none'}"]
    return []


def _group_differences(saved: Sequence[Mapping[str, Any]], live: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(message, hyperparameter name) per difference; name "" for structural ones (never allowable)."""
    if len(saved) != len(live):
        return [(f"optimizer: {len(saved)} param group(s) in the checkpoint, {len(live)} live", "")]
    found = []
    for index, (old, new) in enumerate(zip(saved, live)):
        if len(old["params"]) != len(new["params"]):
            line = (f"optimizer group {index}: {len(old['params'])} parameters in the checkpoint, "
                    f"{len(new['params'])} live")
            found.append((line, ""))
        # under a scheduler, lr is the schedule's position (restored with it); its start, initial_lr, is the setting
        scheduled = {"lr"} if "initial_lr" in old and "initial_lr" in new else set()
        for key in sorted((set(old) | set(new)) - {"params"} - IMPLEMENTATION_KEYS - scheduled):
            if key not in old or key not in new:
                side = "the checkpoint" if key not in old else "the live optimizer"
                found.append((f"optimizer group {index}: {key!r} is missing from {side}", ""))
            elif not _same_value(old[key], new[key]):
                line = (f"optimizer group {index}: {key} = {_plain(old[key])!r} in the checkpoint, "
                        f"{_plain(new[key])!r} live")
                found.append((line, key))
    return found


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def _same_value(a: Any, b: Any) -> bool:
    return _plain(a) == _plain(b)


def _few(names: list[str], limit: int = 5) -> str:
    return ", ".join(repr(n) for n in names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
