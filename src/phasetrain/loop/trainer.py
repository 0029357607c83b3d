"""PhaseTransitionTrainer: a training loop that records what a run does and finds where it changes.

The loop reads top to bottom like a hand-written one; the bookkeeping is delegated: `UpdateStep`
does the mechanics of an update (precision, accumulation, clipping), monitors produce numbers,
`MetricHistory` stores them, callbacks react, `checkpoint` persists. Conventions:
- a step is the 1-based global optimizer step (step s is the s-th parameter update);
- `train_loss`, `train_acc` (per sample) and `grad_norm` (per update) at step s are means over the
  steps since the previous record or epoch end; `val_*` are recorded at the step an epoch ends;
- monitors (curvature, weight norm) run after the backward pass of step s and before its update,
  so every number at step s describes the same weights.
"""
from __future__ import annotations

import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from phasetrain.run import config as check
from phasetrain.run import distributed as parallel
from phasetrain.run.files import prepare_log_dir
from phasetrain.run.averages import EpochTotals, StepAccumulator
from phasetrain.loop.batches import (
    as_device,
    batch_size,
    check_loader,
    move_to_device,
    split_batch,
)
from phasetrain.loop.callbacks import Callback, EarlyStopping, build_callbacks
from phasetrain.run.checkpoints import (
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint_file,
    save_checkpoint,
    step_checkpoints,
)
from phasetrain.loop.accuracy import batch_accuracy, batch_correct
from phasetrain.loop.evaluation import validation_pass
from phasetrain.run.history import MetricHistory, save_metrics, unknown_metric_message
from phasetrain.run.streams import make_loggers
from phasetrain.monitors.base import Monitor, StepContext
from phasetrain.monitors.norms import global_grad_norm
from phasetrain.monitors.norms import WeightNormMonitor
from phasetrain.loop.update import autocast
from phasetrain.loop.rng import EpochOrder
from phasetrain.run.state import RunState
from phasetrain.run.summary import KEY_METRICS, training_summary
from phasetrain.loop.update import UpdateStep
from phasetrain.run.watch import TransitionWatcher

# metrics.json is rewritten whole (O(records)); at epoch ends and from log_step it is rewritten at
# most this often, so full-batch runs (an epoch per step) stay linear. Checkpoints, the end of
# the run and exceptions always write it; metrics.jsonl streams every record as it comes.
METRICS_REWRITE_INTERVAL_S = 5.0


class PhaseTransitionTrainer:
    """Train a model while recording gradients, curvature and metrics, and find phase transitions.

    See the README's configuration table for every argument. Files go to `log_dir`:
    `metrics.json`, `metrics.jsonl`, `checkpoint_step_{step}.pt`, `best_model.pt`, `final_model.pt`.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[Any, Any], torch.Tensor],
        device: str | torch.device | None = None,
        track_gradients: bool = True,
        track_hessian: bool = False,
        hessian_method: str = "diagonal",
        hessian_freq: int = 100,
        log_dir: str | Path | None = None,
        checkpoint_freq: int | None = 1000,
        log_freq: int = 10,
        scheduler: Any = None,
        gradient_clip: float | None = None,
        early_stopping_patience: int | None = None,
        early_stopping_min_delta: float = 0.0,
        *,
        scheduler_interval: str = "epoch",
        accuracy_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        monitors: Sequence[Monitor] = (),
        loggers: Sequence[str] = ("jsonl",),
        progress_bar: bool | None = None,
        keep_last_checkpoints: int | None = None,
        on_nonfinite: str = "stop",
        hessian_k: int = 3,
        hessian_batches: Sequence[tuple[Any, Any]] | None = None,
        watch_metrics: Sequence[str] = KEY_METRICS,
        watch_window: int = 100,
        precision: str = "32",
        accumulate_grad_batches: int = 1,
    ) -> None:
        check.check_trainer_arguments(
            model=model, optimizer=optimizer, loss_fn=loss_fn, hessian_method=hessian_method, hessian_freq=hessian_freq,
            checkpoint_freq=checkpoint_freq, log_freq=log_freq, scheduler=scheduler, gradient_clip=gradient_clip,
            early_stopping_patience=early_stopping_patience, early_stopping_min_delta=early_stopping_min_delta,
            scheduler_interval=scheduler_interval, accuracy_fn=accuracy_fn, keep_last_checkpoints=keep_last_checkpoints,
            on_nonfinite=on_nonfinite, hessian_k=hessian_k, watch_metrics=watch_metrics, watch_window=watch_window,
            precision=precision, accumulate_grad_batches=accumulate_grad_batches)

        self.device = as_device(device)
        self.module = parallel.unwrap(model).to(self.device)
        self.model = parallel.wrap(model.to(self.device), self.device)
        self.optimizer, self.loss_fn, self.scheduler = optimizer, loss_fn, scheduler
        self.track_gradients, self.track_hessian = bool(track_gradients), bool(track_hessian)
        self.hessian_method, self.hessian_freq = hessian_method, hessian_freq
        self.log_dir = Path(log_dir) if log_dir is not None else Path("runs") / datetime.now().strftime("run_%Y%m%d-%H%M%S")
        self.checkpoint_freq, self.log_freq = checkpoint_freq, log_freq
        self.gradient_clip = gradient_clip
        self.early_stopping_patience, self.early_stopping_min_delta = early_stopping_patience, early_stopping_min_delta
        self.scheduler_interval, self.accuracy_fn = scheduler_interval, accuracy_fn
        self.keep_last_checkpoints, self.on_nonfinite = keep_last_checkpoints, on_nonfinite
        self.precision, self.accumulate_grad_batches = precision, accumulate_grad_batches
        self.progress_bar = progress_bar
        self.is_main_process = parallel.rank() == 0
        self.monitors: list[Monitor] = [WeightNormMonitor(freq=log_freq), *monitors]
        if self.track_hessian:
            from phasetrain.monitors.hessian import HessianMonitor

            self.monitors.append(HessianMonitor(method=hessian_method, freq=hessian_freq, k=hessian_k,
                                                batches=hessian_batches))
        self._update = UpdateStep(self.model, optimizer, self.device, precision, accumulate_grad_batches,
                                  gradient_clip, self.track_gradients)
        if self.is_main_process:
            prepare_log_dir(self.log_dir)
        self._loggers = make_loggers(loggers, self.log_dir) if self.is_main_process else []
        self.history = MetricHistory()
        self._rewind_streams()
        self.watcher = TransitionWatcher(watch_metrics, watch_window)
        self.state = RunState()
        self.should_stop = False
        self._callbacks: list[Callback] = []
        self._metrics_written_at = 0.0

    # ------------------------------------------------------------------ public API
    def train(
        self,
        train_loader: Iterable,
        val_loader: Iterable | None = None,
        num_epochs: int = 10,
        callbacks: Sequence[Callback | Callable] | None = None,
        resume_from: str | Path | None = None,
    ) -> dict[str, Any]:
        """Train for `num_epochs` epochs (in total, counting those before a resume) and return the
        results: the training summary plus `history` (the metric store as a plain dict) and paths.
        `resume_from`: a checkpoint path, or "latest" for the newest valid one in `log_dir`."""
        check.check_int("num_epochs", num_epochs)
        check_loader("train_loader", train_loader)
        if val_loader is not None:
            check_loader("val_loader", val_loader)
        self._callbacks = build_callbacks(callbacks, self.early_stopping_patience, self.early_stopping_min_delta)
        self.should_stop = False
        self._order = EpochOrder(train_loader)
        replay = self._resume(resume_from) if resume_from is not None else None
        self._window, self._epoch_totals = StepAccumulator(self.device), EpochTotals()
        if self.state.pending_window is not None:
            self._window.load_state_dict(self.state.pending_window)
            self._epoch_totals.load_state_dict(self.state.pending_epoch_totals)
        started, wall_before = time.perf_counter(), self.state.wall_time_s
        total = num_epochs * len(train_loader) // self.accumulate_grad_batches if hasattr(train_loader, "__len__") else None
        bar = progress_bar(self.progress_bar if self.is_main_process else False, total, self.state.step)
        try:
            for callback in self._callbacks:
                callback.on_train_start(self)
            while self.state.epoch < num_epochs and not self.should_stop:
                self._train_epoch(train_loader, bar, replay)
                replay = None
                if self.should_stop and self.state.batch_in_epoch:
                    break
                self._end_epoch(val_loader)
            self.state.finished = True
            self._save("final_model.pt")
        finally:
            self.state.wall_time_s = wall_before + time.perf_counter() - started
            bar.close()
            self.save_metrics()
            for sink in self._loggers:
                sink.flush()
        results = self.get_training_summary()
        results.update(history=self.history.to_dict(), log_dir=str(self.log_dir))
        for callback in self._callbacks:
            callback.on_train_end(self, results)
        return results

    def detect_phase_transitions(self, metric: str = "val_acc", window_size: int | None = 100) -> list[int]:
        """Global steps at which `metric` changes abruptly (see `phasetrain.detect`)."""
        return [t.step for t in self.find_transitions(metric, window_size)]

    def find_transitions(self, metric: str = "val_acc", window_size: int | None = 100) -> list:
        """Full `Transition` records (step, start/end, levels, magnitude, direction, score) of `metric`."""
        from phasetrain.detect import detect_in_history

        if metric not in self.history:
            raise KeyError(unknown_metric_message(metric, self.history.names()))
        check.check_int("window_size", window_size, allow_none=True)
        steps = self.history.steps(metric)
        if window_size is not None and steps.size >= 8 and window_size > 10 * steps[-1]:
            raise ValueError(f"window_size={window_size} is more than 10x the {steps[-1]} steps {metric!r} was "
                             f"recorded over; use a window of at most {steps[-1]} steps, or None to choose one")
        return detect_in_history(self.history, metric, window_size)

    def get_training_summary(self) -> dict[str, Any]:
        """Final and best figures, step counts, stop reason, wall time and detected transitions."""
        return training_summary(self.history, self._meta())

    def load_checkpoint(self, path: str | Path) -> dict[str, Any]:
        """Restore model, optimizer, scheduler, step, epoch and metric history from `path`
        (loaded with `weights_only=True`) and return the checkpoint dict."""
        checkpoint = load_checkpoint_file(path, map_location=self.device)
        self.module.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None and checkpoint.get("scheduler") is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.history.load_state_dict(checkpoint["history"])
        self.state = RunState.from_dict(checkpoint["run_state"])
        return checkpoint

    def log_step(self, step: int, epoch: int, loss: float | torch.Tensor, acc: float | torch.Tensor | None = None,
                 grad_norm: float | torch.Tensor | None = None, **metrics: float | torch.Tensor) -> None:
        """Record one step's figures from a hand-written loop (the seed's `_log_step`).

        Values may be floats or 0-d tensors. Streams to `metrics.jsonl` at once and rewrites
        `metrics.json` at most every METRICS_REWRITE_INTERVAL_S; call `save_metrics()` at the end.
        """
        record = {"train_loss": loss, "train_acc": acc, "grad_norm": grad_norm, "epoch": epoch, **metrics}
        self._record(step, {k: float(v) for k, v in record.items() if v is not None})
        self.state.step, self.state.epoch = max(self.state.step, step), epoch
        if time.monotonic() - self._metrics_written_at > METRICS_REWRITE_INTERVAL_S:
            self.save_metrics()

    _log_step = log_step

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Record extra named values at `step` (e.g. from a callback): into the history, the
        file streams and the online detectors, like every built-in metric."""
        self._record(step, {name: float(value) for name, value in metrics.items()})

    def grad_norm(self) -> float:
        """Global L2 norm of the model's current gradients: the one-liner for hand-written loops."""
        return float(global_grad_norm(self.module))

    def save_metrics(self) -> Path:
        """Write `metrics.json` atomically (valid JSON at every moment; rank 0 only) and return its path."""
        path = self.log_dir / "metrics.json"
        if self.is_main_process:
            save_metrics(path, self.history, self._meta())
        self._metrics_written_at = time.monotonic()
        return path

    def request_stop(self, reason: str) -> None:
        """Ask the loop to stop after the current step (used by early stopping and callbacks)."""
        self.should_stop, self.state.stop_reason = True, reason

    # ------------------------------------------------------------------ the loop
    def _train_epoch(self, loader: Iterable, bar: Any, replay: tuple | None) -> None:
        self.model.train()
        per_epoch = len(loader) if hasattr(loader, "__len__") else None
        micro: list[tuple[torch.Tensor, int, torch.Tensor | None]] = []
        for batch in self._order.iterate(self.state.epoch, self.state.batch_in_epoch, replay):
            self.state.batch_in_epoch += 1
            inputs, targets = move_to_device(split_batch(batch), self.device)
            if not micro:
                self.optimizer.zero_grad(set_to_none=True)
            last = len(micro) + 1 == self.accumulate_grad_batches or self.state.batch_in_epoch == per_epoch
            outputs, loss = self._update.forward_backward(self._forward, self.loss_fn, inputs, targets, last)
            n = batch_size(targets)
            micro.append((loss.detach(), n, batch_correct(outputs, targets, n, self.accuracy_fn)))
            if last:
                self._optimizer_step(micro, (inputs, targets), bar)
                micro = []
                if self.should_stop:
                    return
        if micro:  # a loader without len() ended inside an accumulation group
            self._optimizer_step(micro, (inputs, targets), bar)

    def _optimizer_step(self, micro: list, batch: tuple[Any, Any], bar: Any) -> None:
        step = self.state.step + 1
        grad_norm = self._update.grad_norm()
        losses = [loss for loss, _, _ in micro]
        if not self._finite(losses, grad_norm, step):
            return
        if self.is_main_process:
            for monitor in self.monitors:
                if monitor.should_run(step):
                    ctx = StepContext(self.module, self.loss_fn, self.optimizer, step, self.state.epoch, batch, self.device)
                    self._record(step, monitor.compute(ctx))
        self._update.apply()
        self.state.step = step
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()
        for loss, n, correct in micro:
            self._window.add_batch(loss, n, correct)
        self._window.add_grad_norm(grad_norm)
        if step % self.log_freq == 0:
            self._log_train_record(step, bar)
        if self.checkpoint_freq and step % self.checkpoint_freq == 0:
            self._save_step_checkpoint(step)

    def _end_epoch(self, val_loader: Iterable | None) -> None:
        means, weights = self._window.read()
        self._epoch_totals.add(means, weights)
        epoch_metrics: dict[str, Any] = {"epoch": self.state.epoch, "step": self.state.step, **self._epoch_totals.means(),
                                         "lr": self._lr()}
        if val_loader is not None:
            val = validation_pass(self.model, self.loss_fn, val_loader, self.device, self._forward,
                                  lambda outputs, targets: batch_accuracy(outputs, targets, self.accuracy_fn))
            self._record(self.state.step, val)
            epoch_metrics.update(val)
        monitored = epoch_metrics.get("val_loss", epoch_metrics.get("train_loss"))
        self._step_epoch_scheduler(monitored)
        self.state.epoch += 1
        self.state.batch_in_epoch = 0
        self.state.epochs_run += 1
        self._epoch_totals = EpochTotals()
        if monitored is not None and monitored < self.state.best_loss:
            self.state.best_loss, self.state.best_step = monitored, self.state.step
            self._save("best_model.pt")
        for callback in self._callbacks:
            callback.on_epoch_end(self, epoch_metrics["epoch"], epoch_metrics)
        if parallel.is_distributed():  # every rank stops together
            self.should_stop = bool(parallel.all_reduce_sum(torch.tensor([float(self.should_stop)], device=self.device)).item())
        if any(isinstance(c, EarlyStopping) and c.stopped_epoch is not None for c in self._callbacks):
            self.state.stopped_early = True
        if time.monotonic() - self._metrics_written_at > METRICS_REWRITE_INTERVAL_S:
            self.save_metrics()

    def _forward(self, inputs: Any) -> Any:
        with autocast(self.device, self.precision):
            if isinstance(inputs, dict):
                return self.model(**inputs)
            if isinstance(inputs, (tuple, list)):
                return self.model(*inputs)
            return self.model(inputs)

    def _finite(self, losses: list[torch.Tensor], grad_norm: torch.Tensor | None, step: int) -> bool:
        """Apply `on_nonfinite`; True when the update may go ahead. One host sync (and, under DDP,
        one tiny all-reduce so every rank decides alike). Checks the loss, and the gradient norm
        when it is computed; with fp16 an overflowing gradient is the scaler's business (it skips
        that update), not a failure."""
        total = losses[0] if len(losses) == 1 else torch.stack(losses).sum()
        checked_norm = grad_norm if grad_norm is not None and self.precision != "fp16" else None
        if parallel.is_distributed():
            both = total if checked_norm is None else total + checked_norm
            finite = not parallel.all_reduce_sum((~torch.isfinite(both)).double().reshape(1)).item()
        else:  # two scalar reads cost less than one more kernel
            finite = math.isfinite(total.item()) and (checked_norm is None or math.isfinite(checked_norm.item()))
        if finite:
            return True
        if self.on_nonfinite == "skip":
            self.state.nonfinite_skipped += 1
            self._record(step, {"nonfinite_skipped": self.state.nonfinite_skipped})
            return False
        loss = torch.stack(losses).double().mean().item()
        norm = float("nan") if grad_norm is None else grad_norm.item()
        message = f"non-finite loss or gradient norm at step {step} (loss={loss:.4g}, grad_norm={norm:.4g})"
        self._save_step_checkpoint(self.state.step)
        if self.on_nonfinite == "raise":
            raise FloatingPointError(message + f"; last finite state saved as checkpoint_step_{self.state.step}.pt")
        self.request_stop(message + f"; stopped, last finite state saved as checkpoint_step_{self.state.step}.pt")
        return False

    def _log_train_record(self, step: int, bar: Any) -> None:
        means, weights = self._window.read()
        self._epoch_totals.add(means, weights)
        record = {**means, "lr": self._lr(), "epoch": self.state.epoch}
        self._record(step, record)
        bar.update(step - bar.n)
        bar.set_postfix({k: f"{v:.4g}" for k, v in means.items() if k != "grad_norm"}, refresh=False)
        for callback in self._callbacks:
            callback.on_log(self, step, record)

    def _record(self, step: int, metrics: dict[str, float]) -> None:
        self.history.log(step, metrics)
        for sink in self._loggers:
            sink.log(step, metrics)
        for transition in self.watcher.observe(step, metrics):
            for callback in self._callbacks:
                callback.on_phase_transition(self, transition)

    def _step_epoch_scheduler(self, monitored: float | None) -> None:
        if self.scheduler is None or self.scheduler_interval != "epoch":
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if monitored is not None:
                self.scheduler.step(monitored)
        else:
            self.scheduler.step()

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # ------------------------------------------------------------------ persistence and resume
    def _checkpoint(self) -> dict[str, Any]:
        self.state.pending_window = self._window.state_dict()
        self.state.pending_epoch_totals = self._epoch_totals.state_dict()
        return {
            "step": self.state.step,
            "epoch": self.state.epoch if self.state.batch_in_epoch else max(self.state.epoch - 1, 0),
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "update": self._update.state_dict(),
            "history": {k: {n: torch.from_numpy(a) for n, a in v.items()} for k, v in self.history.state_dict().items()},
            "run_state": self.state.to_dict(),
            "rng": self._order.now(),
            "rng_epoch_start": self._order.epoch_start,
            "callbacks": [c.state_dict() for c in self._callbacks],
            "monitors": [m.state_dict() for m in self.monitors],
            "watcher": self.watcher.state_dict(),
        }

    def _save(self, name: str) -> None:
        if self.is_main_process:
            save_checkpoint(self.log_dir / name, self._checkpoint())
        parallel.barrier()

    def _save_step_checkpoint(self, step: int) -> None:
        self._save(checkpoint_path(self.log_dir, step).name)
        self.save_metrics()
        if self.keep_last_checkpoints is not None and self.is_main_process:
            for _, old in step_checkpoints(self.log_dir)[: -self.keep_last_checkpoints]:
                old.unlink(missing_ok=True)

    def _resume(self, resume_from: str | Path) -> tuple[dict, dict]:
        """Restore everything from a checkpoint; return the RNG states that replay its epoch."""
        if str(resume_from) == "latest":
            path, checkpoint = latest_checkpoint(self.log_dir, map_location=self.device)
        else:
            path, checkpoint = Path(resume_from), load_checkpoint_file(resume_from, map_location=self.device)
        self.load_checkpoint(path)
        self._update.load_state_dict(checkpoint["update"])
        for callback, state in zip(self._callbacks, checkpoint["callbacks"]):
            callback.load_state_dict(state)
        for monitor, state in zip(self.monitors, checkpoint["monitors"]):
            monitor.load_state_dict(state)
        self.watcher.load_state_dict(checkpoint["watcher"])
        self._rewind_streams()
        return checkpoint["rng_epoch_start"], checkpoint["rng"]

    def _rewind_streams(self) -> None:
        """File streams (metrics.jsonl, metrics.csv) restart from the history: empty for a new
        run, the checkpoint's records after a resume."""
        for sink in self._loggers:
            if hasattr(sink, "rewind"):
                sink.rewind(self.history)

    # ------------------------------------------------------------------ set-up helpers
    def _meta(self) -> dict[str, Any]:
        return {
            **self.state.summary_fields(),
            "log_dir": str(self.log_dir),
            "device": str(self.device),
            "config": {"log_freq": self.log_freq, "checkpoint_freq": self.checkpoint_freq,
                       "track_gradients": self.track_gradients, "track_hessian": self.track_hessian,
                       "hessian_method": self.hessian_method, "hessian_freq": self.hessian_freq,
                       "gradient_clip": self.gradient_clip, "scheduler_interval": self.scheduler_interval,
                       "early_stopping_patience": self.early_stopping_patience,
                       "early_stopping_min_delta": self.early_stopping_min_delta, "precision": self.precision,
                       "accumulate_grad_batches": self.accumulate_grad_batches},
            "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


def progress_bar(enabled: bool | None, total: int | None, initial: int = 0, unit: str = "step") -> Any:
    """A tqdm bar; `enabled=None` shows it only when stderr is a terminal or in a Jupyter kernel."""
    if enabled is None:
        enabled = sys.stderr.isatty() or "ipykernel" in sys.modules
    return tqdm(total=total, initial=initial, disable=not enabled, unit=unit, dynamic_ncols=True)
