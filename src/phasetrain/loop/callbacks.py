"""Callbacks: code the trainer calls at fixed points of the loop.

Subclass `Callback` and override the hooks you need; every hook receives the trainer first.
Plain functions `fn(trainer, epoch, metrics)` (the style of the original specification) are wrapped in
`FunctionCallback`
and called at each epoch end. A callback that holds state implements `state_dict`/`load_state_dict`
so a resumed run continues exactly.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from phasetrain.detect import Transition
    from phasetrain.loop.trainer import PhaseTransitionTrainer


class Callback:
    """Base class: every hook is a no-op. To stop training, call `trainer.request_stop(reason)`."""

    def on_train_start(self, trainer: "PhaseTransitionTrainer") -> None:
        """Before the first step (also after a resume)."""

    def on_log(self, trainer: "PhaseTransitionTrainer", step: int, metrics: dict[str, float]) -> None:
        """After a record of training metrics is stored (every `log_freq` steps)."""

    def on_epoch_end(self, trainer: "PhaseTransitionTrainer", epoch: int, metrics: dict[str, Any]) -> None:
        """After validation of `epoch` (0-based); `metrics` holds the epoch's figures."""

    def on_phase_transition(self, trainer: "PhaseTransitionTrainer", transition: "Transition") -> None:
        """When the online detector confirms a transition of a watched metric."""

    def on_train_end(self, trainer: "PhaseTransitionTrainer", results: dict[str, Any]) -> None:
        """After the last step, when final files are written."""

    def state_dict(self) -> dict[str, Any]:
        """State to save in checkpoints (tensors, numbers, strings, containers)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


class FunctionCallback(Callback):
    """Adapter for plain callback functions `fn(trainer, epoch, metrics)`, run at epoch ends."""

    def __init__(self, fn: Callable[["PhaseTransitionTrainer", int, dict[str, Any]], Any]) -> None:
        self.fn = fn

    def on_epoch_end(self, trainer: "PhaseTransitionTrainer", epoch: int, metrics: dict[str, Any]) -> None:
        self.fn(trainer, epoch, metrics)


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs.

    The monitored value is read from the epoch metrics (`val_loss`, or `train_loss` when the run
    has no validation set). Lower is better. An epoch improves when value < best - min_delta.
    """

    def __init__(self, patience: int, min_delta: float = 0.0, monitor: str = "val_loss") -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.monitor = monitor
        self.best = math.inf
        self.bad_epochs = 0
        self.stopped_epoch: int | None = None

    def on_epoch_end(self, trainer: "PhaseTransitionTrainer", epoch: int, metrics: dict[str, Any]) -> None:
        value = metrics.get(self.monitor, metrics.get("train_loss"))
        if value is None or not math.isfinite(value):
            return
        if value < self.best - self.min_delta:
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            self.stopped_epoch = epoch
            trainer.request_stop(f"early stopping: {self.monitor} did not improve by more than "
                                 f"{self.min_delta} for {self.patience} epochs")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad_epochs, self.stopped_epoch = state["best"], state["bad_epochs"], state["stopped_epoch"]


def build_callbacks(callbacks: Sequence[Callback | Callable] | None, early_stopping_patience: int | None = None,
                    early_stopping_min_delta: float = 0.0) -> list[Callback]:
    """The callbacks of a run: `Callback` objects as given, functions wrapped in `FunctionCallback`,
    and `EarlyStopping` when a patience is set. Anything else is refused naming its position."""
    built: list[Callback] = []
    for index, callback in enumerate(callbacks or []):
        if isinstance(callback, Callback):
            built.append(callback)
        elif callable(callback):
            built.append(FunctionCallback(callback))
        else:
            raise TypeError(f"callbacks[{index}] must be a phasetrain Callback or a function "
                            f"fn(trainer, epoch, metrics), got {callback!r}")
    if early_stopping_patience is not None:
        built.append(EarlyStopping(early_stopping_patience, early_stopping_min_delta))
    return built
