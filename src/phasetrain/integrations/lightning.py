"""phasetrain inside Lightning: `PhaseTransitionCallback` records what `PhaseTransitionTrainer` records.

Where each number comes from (Lightning 2.x hook order, checked in its source and by the tests):
- `grad_norm`: global L2 norm of the gradients in `on_before_optimizer_step`, which Lightning calls
  after the backward pass and BEFORE it clips (`gradient_clip_val`), with AMP gradients already
  unscaled: the pre-clipping norm, as the trainer records it;
- monitors (weight norm, curvature, yours) run in that same hook, after backward and before the
  update of step s, so every number at step s describes the same weights;
- `train_loss`: the loss `training_step` returned (`outputs["loss"]` or the tensor), undoing
  Lightning's division by `accumulate_grad_batches`; `train_acc` only from `accuracy_fn` or from a
  metric the module logs every step under `acc_key` (default "train_acc", or "train_acc_step"),
  looked for once, after the first batch, so a module that logs none pays nothing per step;
- `val_loss`, `val_acc`: the module's logged `trainer.callback_metrics["val_loss"]` / `["val_acc"]`,
  read in `on_validation_end` (after the module's own `on_validation_epoch_end`, where metrics are
  often logged), recorded at the global step where validation ran; sanity checks are skipped;
- step s is Lightning's `trainer.global_step` after the s-th optimizer step (1-based), in phasetrain's
  run folder; Lightning's loggers get the same update's figures at s - 1, the step Lightning itself
  logs that update's metrics at (its `global_step` while the update runs, validation after it included),
  so their rows join Lightning's own by step.
Per-step figures stay on the device; they are read to the host once per `log_freq` steps.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from phasetrain.monitors.base import Monitor, StepContext
from phasetrain.monitors.norms import global_grad_norm
from phasetrain.run.recorder import RunViews, callback_recorder
from phasetrain.run.summary import KEY_METRICS

try:
    import lightning.pytorch as pl
except ImportError as error:  # the extra is optional; say how to get it
    raise ImportError("phasetrain.integrations.lightning needs Lightning: "
                      "pip install 'phasetrain[lightning]'") from error

# What Lightning already has from the module itself; everything else phasetrain measures (grad_norm,
# weight_norm, hessian_*, your monitors' metrics, transitions) is also sent to Lightning's loggers.
FRAMEWORK_METRICS = frozenset({"train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch"})


class LightningLoggers:
    """A recorder stream that forwards phasetrain's own measurements to every logger of a
    Lightning `Trainer` (TensorBoard, CSV, W&B, MLflow, ...) at Lightning's step for the same update.

    phasetrain's step s (the s-th optimizer update) is logged at s - 1: Lightning logs the metrics of
    an update, and of a validation run right after it, at its `global_step` as it was during the
    update (0-based)."""

    def __init__(self, trainer: "pl.Trainer") -> None:
        self.trainer = trainer
        self.step = 0  # phasetrain's step of the latest record, which any transition it confirms belongs to

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Send the metrics of phasetrain's `step` that Lightning does not already have to each of
        its loggers, at Lightning's step for that update."""
        self.step = step
        forwarded = {name: value for name, value in metrics.items() if name not in FRAMEWORK_METRICS}
        if forwarded:
            for logger in self.trainer.loggers:
                logger.log_metrics(forwarded, step=step - 1)

    def flush(self) -> None:
        """Lightning's loggers flush on their own schedule."""

    def close(self) -> None:
        """Lightning closes its loggers itself."""


class PhaseTransitionCallback(RunViews, pl.Callback):
    """Gradient, weight-norm and curvature monitors, `metrics.json` and transition detection for
    a Lightning run; arguments mean what they mean for `PhaseTransitionTrainer` (`RecordingConfig`).

    `loss_fn(outputs, targets) -> loss` (what `pl_module(inputs)` returns against the batch's
    targets) is needed for curvature (`track_hessian=True`), which measures on a fixed batch: the
    `(inputs, targets)` batch of the first step it runs at, unless `hessian_batches` are given.
    `accuracy_fn(step_output, batch)` returns the fraction correct in [0, 1] from what
    `training_step` returned (e.g. a dict with "loss" and "logits") and the batch. Online detection
    watches `watch_metrics` and calls `on_phase_transition(callback, transition)` for each
    transition it confirms. phasetrain's own measurements also go to Lightning's loggers.
    """

    def __init__(
        self,
        log_dir: str | Path,
        log_freq: int = 10,
        track_gradients: bool = True,
        track_hessian: bool = False,
        hessian_method: str = "diagonal",
        hessian_freq: int = 100,
        monitors: Sequence[Monitor] = (),
        *,
        loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
        accuracy_fn: Callable[[Any, Any], Any] | None = None,
        acc_key: str | None = "train_acc",
        hessian_k: int = 3,
        hessian_budget: float | None = None,
        hessian_batches: Sequence[tuple[Any, Any]] | None = None,
        loggers: Sequence[Any] | None = ("jsonl",),
        keep_last_checkpoints: int | None = None,
        overwrite: bool = False,
        watch_metrics: Sequence[str] = KEY_METRICS,
        watch_window: int | None = None,
        watch_detector: Callable[..., Any] | None = None,
        watch_budget: float | None = 0.01,
        on_phase_transition: Callable[..., Any] | None = None,
    ) -> None:
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable (outputs, targets) -> loss tensor, got {loss_fn!r}")
        if track_hessian and loss_fn is None:
            raise ValueError("loss_fn is required when track_hessian=True: curvature needs loss_fn(outputs, targets), "
                             "got loss_fn=None")
        if accuracy_fn is not None and not callable(accuracy_fn):
            raise TypeError(f"accuracy_fn must be callable (step_output, batch) -> accuracy in [0, 1], "
                            f"got {accuracy_fn!r}")
        if acc_key is not None and not isinstance(acc_key, str):
            raise TypeError(f"acc_key must be a metric name (str) or None, got {acc_key!r}")
        self.recorder = callback_recorder("lightning", self, on_phase_transition, log_dir=log_dir, log_freq=log_freq,
                                          track_gradients=bool(track_gradients), track_hessian=bool(track_hessian),
                                          hessian_method=hessian_method, hessian_freq=hessian_freq,
                                          hessian_k=hessian_k, hessian_budget=hessian_budget,
                                          hessian_batches=hessian_batches, monitors=tuple(monitors), loggers=loggers,
                                          keep_last_checkpoints=keep_last_checkpoints, overwrite=overwrite,
                                          watch_metrics=watch_metrics,
                                          watch_window=watch_window, watch_detector=watch_detector,
                                          watch_budget=watch_budget)
        self.loss_fn, self.accuracy_fn, self.acc_key = loss_fn, accuracy_fn, acc_key
        self._params: list[torch.Tensor] = []
        self._batch: Any = None
        self._acc_keys: list[str] | None = None
        self._loggers: LightningLoggers | None = None

    # ------------------------------------------------------------------ Lightning hooks
    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._params = [p for p in pl_module.parameters() if p.requires_grad]
        self._acc_keys = None
        # a resume (ckpt_path, or a callback whose state was restored) continues the folder's run
        self.recorder.open_folder(resuming=bool(trainer.ckpt_path) or len(self.recorder.history) > 0)
        planned = trainer.estimated_stepping_batches
        self.recorder.start(pl_module.device, planned_steps=int(planned) if planned != float("inf") else None,
                            optimizer=trainer.optimizers[0] if trainer.optimizers else None)
        if trainer.loggers and self.recorder.writes:
            self._loggers = LightningLoggers(trainer)
            self.recorder.streams.append(self._loggers)

    def on_train_batch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: Any,
                             batch_idx: int) -> None:
        self._batch = batch

    def on_before_optimizer_step(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                                 optimizer: torch.optim.Optimizer) -> None:
        step = trainer.global_step + 1
        if self.recorder.config.track_gradients:
            self.recorder.window.add_grad_norm(global_grad_norm(self._params))
        due = self.recorder.monitors_due(step)
        if due:
            ctx = StepContext(pl_module, self.loss_fn, getattr(optimizer, "optimizer", optimizer), step,
                              trainer.current_epoch, _as_pair(self._batch), pl_module.device)
            self.recorder.run_monitors(ctx, due)

    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        if trainer.accumulate_grad_batches > 1:
            loss = loss * trainer.accumulate_grad_batches
        size = _batch_size(batch)
        self.recorder.window.add_batch(loss, size, self._correct(trainer, outputs, batch, size))
        step = self.recorder.state.step = trainer.global_step
        last_record = self.recorder.history.last_step("train_loss") or 0
        if step % self.recorder.config.log_freq == 0 and step > last_record:
            lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
            self.recorder.record_window(step, {"lr": lr, "epoch": trainer.current_epoch})

    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        logged = trainer.callback_metrics
        self.recorder.record(trainer.global_step,
                             {name: logged[name] for name in ("val_loss", "val_acc") if name in logged})

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self.recorder.end_epoch()
        self.recorder.save_metrics()

    def on_save_checkpoint(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                           checkpoint: dict[str, Any]) -> None:
        self.recorder.save_metrics()

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        stoppers = [c for c in trainer.callbacks if isinstance(c, pl.callbacks.EarlyStopping) and c.stopped_epoch > 0]
        if stoppers:
            self.recorder.state.stopped_early = True
            self.recorder.state.stop_reason = f"early stopping: {stoppers[0].monitor} stopped improving"
        self.recorder.finish()

    def on_exception(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", exception: BaseException) -> None:
        self.recorder.finish(exception)

    def state_dict(self) -> dict[str, Any]:
        """The recorder's state, so Lightning checkpoints carry the history (loads with weights_only)."""
        return self.recorder.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.recorder.load_state_dict(state_dict)

    # ------------------------------------------------------------------ helpers
    def _log_transition(self, transition: Any) -> None:
        """Send a confirmed transition to Lightning's loggers: `transition_step/<metric>` (phasetrain's
        step of the transition), logged with the record that confirmed it."""
        if self._loggers is not None:
            self._loggers.log(self._loggers.step, {f"transition_step/{transition.metric}": transition.step})

    def _correct(self, trainer: "pl.Trainer", outputs: Any, batch: Any, size: int) -> torch.Tensor | None:
        """Correct predictions in the batch (0-d tensor, samples), or None when no accuracy is known."""
        if self.accuracy_fn is not None:
            with torch.no_grad():
                return torch.as_tensor(self.accuracy_fn(outputs, batch), dtype=torch.float64) * size
        if self._acc_keys is None:  # first batch of the run: is the accuracy logged? (later: not asked again)
            logged = trainer.callback_metrics
            self._acc_keys = [key for key in (self.acc_key, f"{self.acc_key}_step") if self.acc_key and key in logged]
        if not self._acc_keys:
            return None
        logged = trainer.callback_metrics
        value = next((logged[key] for key in self._acc_keys if key in logged), None)
        return None if value is None else value.detach().double() * size


def _as_pair(batch: Any) -> tuple[Any, Any]:
    """`(inputs, targets)` for a monitor's StepContext; a batch that is not a pair becomes (batch, None)."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    return batch, None


def _batch_size(batch: Any) -> int:
    """Samples in a batch: the first dimension of its targets (or of the batch itself), else 1."""
    targets = _as_pair(batch)[1]
    for candidate in (targets, batch):
        if isinstance(candidate, torch.Tensor) and candidate.dim() > 0:
            return int(candidate.shape[0])
    return 1
