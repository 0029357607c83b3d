"""The monitor protocol: a probe the trainer runs at chosen steps, returning named floats.

Adding a metric means adding a monitor, not editing the trainer. The trainer calls each monitor
after the backward pass of step `s` and before the optimizer update, so every number recorded at
step `s` (loss, gradient norm, curvature) describes the same weights: those the s-th batch saw.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn


@dataclass
class StepContext:
    """What a monitor may look at during global step `step` (1-based).

    `batch` is the current training batch `(inputs, targets)`, already on `device`; the model's
    `.grad` fields hold this step's gradients (before clipping). A monitor must leave the model's
    parameters, gradients, train/eval mode and the global RNG streams as it found them.
    """

    model: nn.Module
    loss_fn: Callable[[Any, Any], torch.Tensor]
    optimizer: torch.optim.Optimizer
    step: int
    epoch: int
    batch: tuple[Any, Any]
    device: torch.device


class Monitor:
    """Base class of monitors. Subclasses set `freq` and implement `compute`."""

    freq: int = 1

    def should_run(self, step: int) -> bool:
        """True at the steps this monitor measures (default: every `freq`-th step)."""
        return step % self.freq == 0

    def note_movement(self, moving: bool) -> None:
        """Told by the recorder before `should_run` whenever it changed: whether a metric the run
        watches is changing now (`TransitionWatcher.moving`). Ignored by default; a monitor with a time budget
        measures more while metrics move."""

    def compute(self, ctx: StepContext) -> dict[str, float]:
        """Measure and return {metric_name: value}; names are flat snake_case."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """State needed to resume exactly (tensors, ints, floats, lists, dicts only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module of `model` in eval mode (dropout off, batch norm on running statistics)
    for the block, then give each module back the mode it had (a user may freeze some in eval)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
