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


def check_metric_names(name: str, value: Any) -> None:
    """`value` must be a sequence of metric names (a bare string is refused: it would be read letter by letter)."""
    if isinstance(value, str) or not all(isinstance(m, str) for m in value):
        raise TypeError(f"{name} must be a sequence of metric names, got {value!r}")


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


HESSIAN_METHODS = ("diagonal", "eigenvalues")
SCHEDULER_INTERVALS = ("epoch", "step")
NONFINITE_POLICIES = ("stop", "skip", "raise")
PRECISIONS = ("32", "bf16", "fp16")


def check_trainer_arguments(*, model: Any, optimizer: Any, loss_fn: Any, hessian_method: Any, hessian_freq: Any,
                            checkpoint_freq: Any, log_freq: Any, scheduler: Any, gradient_clip: Any,
                            early_stopping_patience: Any, early_stopping_min_delta: Any, scheduler_interval: Any,
                            accuracy_fn: Any, keep_last_checkpoints: Any, on_nonfinite: Any, hessian_k: Any,
                            watch_metrics: Any, watch_window: Any, precision: Any, accumulate_grad_batches: Any) -> None:
    """Every PhaseTransitionTrainer argument checked before anything is built or moved."""
    import torch
    from torch import nn

    from phasetrain.run.distributed import unwrap

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable (outputs, targets) -> loss tensor, got {loss_fn!r}")
    check_choice("hessian_method", hessian_method, HESSIAN_METHODS)
    for name, value in (("hessian_freq", hessian_freq), ("log_freq", log_freq), ("hessian_k", hessian_k),
                        ("watch_window", watch_window), ("accumulate_grad_batches", accumulate_grad_batches)):
        check_int(name, value)
    for name, value in (("checkpoint_freq", checkpoint_freq), ("early_stopping_patience", early_stopping_patience),
                        ("keep_last_checkpoints", keep_last_checkpoints)):
        check_int(name, value, allow_none=True)
    check_float("gradient_clip", gradient_clip, strict=True, allow_none=True)
    check_float("early_stopping_min_delta", early_stopping_min_delta)
    check_choice("scheduler_interval", scheduler_interval, SCHEDULER_INTERVALS)
    check_choice("on_nonfinite", on_nonfinite, NONFINITE_POLICIES)
    check_choice("precision", precision, PRECISIONS)
    check_metric_names("watch_metrics", watch_metrics)
    if scheduler is not None and not hasattr(scheduler, "step"):
        raise TypeError(f"scheduler must be a torch.optim.lr_scheduler object with .step(), got {scheduler!r}")
    if accuracy_fn is not None and not callable(accuracy_fn):
        raise TypeError(f"accuracy_fn must be callable (outputs, targets) -> accuracy in [0, 1], got {accuracy_fn!r}")
    check_optimizer_covers_model(unwrap(model), optimizer)
