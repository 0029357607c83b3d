"""Argument checks that fail before training starts, naming the argument, the value and what is allowed."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    import torch
    from torch import nn


def check_int(name: str, value: Any, minimum: int = 1, allow_none: bool = False) -> None:
    """`value` must be an int >= minimum (bools are not ints here), or None when allowed."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        allowed = f"an int >= {minimum}" + (" or None" if allow_none else "")
        raise TypeError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        allowed = f"an int >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def check_float(name: str, value: Any, minimum: float = 0.0, strict: bool = False, allow_none: bool = False) -> None:
    """`value` must be a finite real number >= minimum (> minimum when strict), or None when allowed."""
    if value is None and allow_none:
        return
    relation = ">" if strict else ">="
    allowed = f"a finite number {relation} {minimum}" + (" or None" if allow_none else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """`value` must be one of `choices`."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")


def check_optimizer_covers_model(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """The model must have trainable parameters and the optimizer must update at least one of them."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("model has no trainable parameters (every parameter has requires_grad=False)")
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if not any(id(p) in optimized for p in trainable):
        raise ValueError("optimizer holds none of the model's trainable parameters; "
                         "build it from model.parameters() of the same model instance")
