"""Batches, loaders and devices: the plumbing between a user's data and the model."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import islice
from typing import Any

import torch

from phasetrain.loop.rng import capture_rng_state, loader_generators, restore_rng_state
from phasetrain.run.distributed import default_device


def as_device(device: str | torch.device | None) -> torch.device:
    """`device`, or CUDA when available (this rank's GPU under torchrun) and CPU otherwise.

    Args:
        device: None, a device string ("cpu", "cuda", "cuda:1", "mps") or a torch.device.

    Raises:
        ValueError: naming `device`, the value and the devices this machine has, for a malformed
            value or a CUDA/MPS device that is not there (instead of an error from inside torch at
            the first tensor moved).
    """
    if device is None:
        return default_device()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be None, 'cpu', 'cuda', 'cuda:N' or a torch.device; "
                         f"got {device!r} ({error})") from None
    if resolved.type == "cuda" and (not torch.cuda.is_available()
                                    or (resolved.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"device={device!r} is not available on this machine; available: {available_devices()}")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} is not available on this machine; available: {available_devices()}")
    return resolved


def available_devices() -> str:
    """The devices this machine offers, as a readable list ("'cpu', 'cuda:0', 'cuda:1'")."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    return ", ".join(repr(name) for name in names)


def check_loader(name: str, loader: Any) -> None:
    """A loader must be iterable, re-iterable (a fresh pass each epoch) and, when it has a length, non-empty.

    Args:
        name: the argument's name for messages ("train_loader", "val_loader").
        loader: the loader as the user passed it.

    Raises:
        TypeError: for something not iterable, or a single-pass iterator (a generator, `iter(...)`,
            `map(...)`): it would be exhausted after the first epoch and later epochs would train on
            nothing. Checked without iterating.
        ValueError: for a loader of length 0.
    """
    if not hasattr(loader, "__iter__"):
        raise TypeError(f"{name} must be an iterable of (inputs, targets) batches, e.g. a DataLoader; "
                        f"got {type(loader).__name__}")
    if isinstance(loader, Iterator):
        raise TypeError(f"{name} is a single-pass iterator ({type(loader).__name__}): it would be used up after "
                        f"the first epoch; pass something iterated afresh each epoch, e.g. a DataLoader or a list "
                        f"of (inputs, targets) batches")
    if hasattr(loader, "__len__") and len(loader) == 0:
        raise ValueError(f"{name} is empty (len == 0); it must yield at least one (inputs, targets) batch")


def check_first_batch(name: str, loader: Any) -> None:
    """Take `loader`'s first batch and check that it is an `(inputs, targets)` pair (`split_batch`),
    so a malformed loader is refused before training starts rather than where it is first used
    (the validation loader: after a whole epoch). The loader is iterated once more for it (one
    batch); every RNG stream it may draw from is restored afterwards, so the run draws the same
    numbers as without the check. A loader that yields nothing passes here (validation refuses it).

    Args:
        name: the argument's name for messages ("val_loader").
        loader: a loader that passed `check_loader` (iterable afresh).

    Raises:
        TypeError: from `split_batch`, naming `name`.
    """
    generators = loader_generators(loader)
    state = capture_rng_state(generators)
    try:
        first = list(islice(loader, 1))  # the iterator is gone (its workers stopped) before any error is raised
    finally:
        restore_rng_state(state, generators)
    if first:
        split_batch(first[0], name)


def split_batch(batch: Any, source: str) -> tuple[Any, Any]:
    """A batch must be an `(inputs, targets)` pair (tuple or list of length 2).

    Args:
        batch: what the loader yielded (or the user passed).
        source: where it came from, for the message: "train_loader", "val_loader", "log_step(batch=...)".

    Raises:
        TypeError: naming `source` and what it gave; for a mapping (a Hugging Face collator's dict)
            also how to pass one.
    """
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    described = (f"{type(batch).__name__} of length {len(batch)}" if isinstance(batch, (tuple, list))
                 else type(batch).__name__)
    message = (f"each batch must be an (inputs, targets) pair (a tuple or list of length 2); "
               f"got a {described} from {source}")
    if isinstance(batch, Mapping):
        keys = ", ".join(repr(key) for key in list(batch)[:6]) + (", ..." if len(batch) > 6 else "")
        message += (f" (keys {keys}). A dict batch, such as a Hugging Face collator's, is the inputs of a pair, "
                    f"called as model(**inputs): yield (batch, batch['labels']) with loss_fn=lambda outputs, _: "
                    f"outputs.loss (the model's own loss; the labels as targets also give accuracy from (N, C) "
                    f"logits), (batch, None) with that loss_fn (no accuracy), or (inputs, labels) with "
                    f"loss_fn(outputs, labels); e.g. wrap your collator in a collate_fn that returns the pair")
    raise TypeError(message)


def pair_on_device(batch: Any, device: torch.device, source: str) -> tuple[Any, Any]:
    """`batch` as an `(inputs, targets)` pair on `device` (`split_batch`, naming `source` when it
    is not one, then `move_to_device`). The common case, two tensors already there, costs a few
    checks (the loop's hot path)."""
    if type(batch) in (tuple, list) and len(batch) == 2:
        inputs, targets = batch
        if type(inputs) is torch.Tensor and type(targets) is torch.Tensor and inputs.device == device == targets.device:
            return inputs, targets
    return move_to_device(split_batch(batch, source), device)


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move tensors (also inside tuples, lists and mappings) to `device`, without blocking where
    possible. Tensors already there are returned as they are (no dispatch). A mapping comes back as
    a dict (a Hugging Face `BatchEncoding`, a `UserDict`, too: the model is called with `**` on it)."""
    if isinstance(batch, torch.Tensor):
        return batch if batch.device == device else batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(move_to_device(item, device) for item in batch)
    if isinstance(batch, Mapping):
        return {key: move_to_device(value, device) for key, value in batch.items()}
    return batch


def batch_size(targets: Any) -> int:
    """Samples in a batch: the leading dimension of the targets (1 for a scalar target)."""
    return int(targets.shape[0]) if isinstance(targets, torch.Tensor) and targets.dim() > 0 else 1
