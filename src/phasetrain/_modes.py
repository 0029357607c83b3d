"""Eval mode for a measurement, with every module's own train/eval mode restored afterwards."""
from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn


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
