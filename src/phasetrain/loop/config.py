"""The native trainer's settings: what every run records (`RecordingConfig`) plus the loop's own."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from phasetrain.run.checks import check_choice, check_float, check_int
from phasetrain.run.config import RecordingConfig

SCHEDULER_INTERVALS = ("epoch", "step")
NONFINITE_POLICIES = ("stop", "skip", "raise")
PRECISIONS = ("32", "bf16", "fp16")


@dataclasses.dataclass
class TrainerConfig(RecordingConfig):
    """Every `PhaseTransitionTrainer` setting besides the model, optimizer, loss and scheduler
    objects; checked when built, stored in the meta. `trainer.config` holds it, and
    `trainer.<setting>` reads it (e.g. `trainer.log_freq`)."""

    device: Any = None
    """None: CUDA when available (this rank's GPU under torchrun), else CPU; or "cpu", "cuda:1", a
    torch.device."""
    checkpoint_freq: int | None = 1000
    """Steps between checkpoint_step_{step}.pt; None: none."""
    gradient_clip: float | None = None
    """Max global gradient norm (clip_grad_norm_); the recorded grad_norm is the norm before clipping."""
    early_stopping_patience: int | None = None
    """Epochs without improvement of val_loss (epoch train_loss without validation) before stopping."""
    early_stopping_min_delta: float = 0.0
    """An epoch improves when its loss < best - min_delta."""
    scheduler_interval: str = "epoch"
    """When scheduler.step() runs: "epoch" (after validation) or "step" (after every update)."""
    accuracy_fn: Callable[[Any, Any], Any] | None = None
    """(outputs, targets) -> fraction correct, for tasks the arg-max rule does not cover."""
    progress_bar: bool | None = None
    """None: a tqdm bar when stderr is a terminal or in Jupyter; True/False to force."""
    on_nonfinite: str = "stop"
    """NaN/Inf loss or gradient norm: "stop" (save the last finite state and stop), "skip" (drop that
    update, count it in nonfinite_skipped) or "raise" (save, then FloatingPointError)."""
    precision: str = "32"
    """"bf16" or "fp16" autocast (fp16 with a gradient scaler); "32": none."""
    accumulate_grad_batches: int = 1
    """Batches per optimizer update."""

    def check(self) -> None:
        """Every setting's check (the recording ones first), naming the first bad one."""
        super().check()
        check_int("accumulate_grad_batches", self.accumulate_grad_batches)
        check_int("checkpoint_freq", self.checkpoint_freq, allow_none=True)
        check_int("early_stopping_patience", self.early_stopping_patience, allow_none=True)
        check_float("gradient_clip", self.gradient_clip, strict=True, allow_none=True)
        check_float("early_stopping_min_delta", self.early_stopping_min_delta)
        check_choice("scheduler_interval", self.scheduler_interval, SCHEDULER_INTERVALS)
        check_choice("on_nonfinite", self.on_nonfinite, NONFINITE_POLICIES)
        check_choice("precision", self.precision, PRECISIONS)
        if self.accuracy_fn is not None and not callable(self.accuracy_fn):
            raise TypeError(f"accuracy_fn must be callable (outputs, targets) -> accuracy in [0, 1], "
                            f"got {self.accuracy_fn!r}")


def check_training_objects(model: Any, optimizer: Any, loss_fn: Any, scheduler: Any) -> None:
    """The model, optimizer, loss and scheduler a trainer is built from: types, and an optimizer that
    updates the model's trainable parameters."""
    import torch
    from torch import nn

    from phasetrain.run.distributed import unwrap

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable (outputs, targets) -> loss tensor, got {loss_fn!r}")
    if scheduler is not None and not hasattr(scheduler, "step"):
        raise TypeError(f"scheduler must be a torch.optim.lr_scheduler object with .step(), got {scheduler!r}")
    trainable = [p for p in unwrap(model).parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("model has no trainable parameters (every parameter has requires_grad=False)")
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if not any(id(p) in optimized for p in trainable):
        raise ValueError("optimizer holds none of the model's trainable parameters; "
                         "build it from model.parameters() of the same model instance")
