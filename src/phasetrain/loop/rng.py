"""Capture and restore every RNG stream a training run draws from, as checkpoint-safe values.

`torch.load(weights_only=True)` refuses numpy arrays and Python's `random.getstate()` tuples, so
states are stored as tensors, ints, floats and lists. Streams: torch (CPU), every CUDA device,
numpy's global generator, Python's `random`, and any `torch.Generator` a data loader owns.
"""
from __future__ import annotations

import random
from typing import Any, Sequence

import numpy as np
import torch


def capture_rng_state(generators: Sequence[torch.Generator] = ()) -> dict[str, Any]:
    """The current state of every global RNG stream plus those of `generators`."""
    mt_name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "generators": [g.get_state() for g in generators],
    }


def restore_rng_state(state: dict[str, Any], generators: Sequence[torch.Generator] = ()) -> None:
    """Set every stream back to `state` (as made by `capture_rng_state` with the same generators)."""
    torch.set_rng_state(state["torch"].cpu())  # RNG states are CPU byte tensors, wherever a checkpoint was mapped
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].cpu().numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"].tolist()), python_state["gauss_next"]))
    for generator, generator_state in zip(generators, state["generators"]):
        generator.set_state(generator_state.cpu())


def loader_generators(loader: Any) -> list[torch.Generator]:
    """The distinct `torch.Generator`s a DataLoader (and its sampler) draw the data order from."""
    found: list[torch.Generator] = []
    for owner in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None),
                  getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


class EpochOrder:
    """Iterates a loader epoch by epoch so that an interrupted epoch can be replayed exactly.

    At each epoch start it saves the RNG state the loader draws its order from (`epoch_start`).
    After a resume, `iterate(..., replay=(epoch_start, now), skip=k)` restores that state, draws
    the same order, skips the k batches already trained on, then restores the state of the moment
    the checkpoint was taken.
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.generators = loader_generators(loader)
        self.epoch_start = capture_rng_state(self.generators)

    def iterate(self, epoch: int, skip: int = 0, replay: tuple[dict, dict] | None = None) -> Any:
        if replay is not None:
            restore_rng_state(replay[0], self.generators)
        self.epoch_start = capture_rng_state(self.generators)
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        iterator = iter(self.loader)
        if replay is not None:
            for _ in range(skip):
                next(iterator)
            restore_rng_state(replay[1], self.generators)
        return iterator

    def now(self) -> dict[str, Any]:
        """The RNG state at this moment, for a checkpoint."""
        return capture_rng_state(self.generators)
