"""PhaseTransitionTrainer: a training loop that records what a run does and finds where it changes.

The loop reads top to bottom like a hand-written one; the bookkeeping is delegated: `UpdateStep`
does the mechanics of an update (precision, accumulation, clipping) and the run's `RunRecorder`
owns everything recorded (metric store, monitors, online detection, streams, checkpoint files,
meta), exactly as it does for the Lightning and Hugging Face callbacks. Conventions:
- a step is the 1-based global optimizer step (step s is the s-th parameter update);
- `train_loss`, `train_acc` (per sample) and `grad_norm` (per update) at step s are means over the
  steps since the previous record or epoch end; `val_*` are recorded at the step an epoch ends;
- monitors (curvature, weight norm) run after the backward pass of step s and before its update,
  so every number at step s describes the same weights.
"""
from __future__ import annotations

import copy
import difflib
import math
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from phasetrain.loop.accuracy import batch_accuracy, batch_correct, is_plain_classification
from phasetrain.loop.batches import as_device, batch_size, check_first_batch, check_loader, pair_on_device, split_batch
from phasetrain.loop.callbacks import Callback, EarlyStopping, build_callbacks
from phasetrain.loop.config import TrainerConfig, check_training_objects
from phasetrain.loop.evaluation import validation_pass
from phasetrain.loop.interrupts import StopSignals
from phasetrain.loop.rng import EpochOrder
from phasetrain.loop.update import UpdateStep, autocast
from phasetrain.monitors.base import Monitor, StepContext
from phasetrain.monitors.norms import global_grad_norm
from phasetrain.run import distributed
from phasetrain.run.checkpoints import load_checkpoint_file
from phasetrain.run.checks import check_int
from phasetrain.run.recorder import RunRecorder, RunViews
from phasetrain.run.resume_checks import (
    check_resume_compatible,
    hyperparameters,
    reapply_hyperparameters,
    resume_fields,
    validate_checkpoint,
)
from phasetrain.run.state import RunState
from phasetrain.run.summary import KEY_METRICS


class PhaseTransitionTrainer(RunViews):
    """Train a model while recording gradients, curvature and metrics, and find phase transitions.

    `model`, `optimizer`, `loss_fn(outputs, targets) -> scalar loss` and an optional `scheduler`
    are yours; every other argument is a `TrainerConfig` setting (documented there and in the
    README's configuration table), readable as `trainer.<name>`. Files go to `log_dir`:
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
        watch_window: int | None = None,
        watch_detector: Callable[[float, str], Any] | None = None,
        precision: str = "32",
        accumulate_grad_batches: int = 1,
        overwrite: bool = False,
        hessian_budget: float | None = None,
        watch_budget: float | None = 0.01,
    ) -> None:
        check_training_objects(model, optimizer, loss_fn, scheduler)
        self.config = TrainerConfig(
            log_dir=log_dir, log_freq=log_freq, track_gradients=bool(track_gradients),
            track_hessian=bool(track_hessian), hessian_method=hessian_method, hessian_freq=hessian_freq,
            hessian_k=hessian_k, hessian_batches=hessian_batches, hessian_budget=hessian_budget,
            monitors=tuple(monitors), loggers=loggers,
            keep_last_checkpoints=keep_last_checkpoints, watch_metrics=watch_metrics, watch_window=watch_window,
            watch_detector=watch_detector, watch_budget=watch_budget, overwrite=overwrite, device=device,
            checkpoint_freq=checkpoint_freq,
            gradient_clip=gradient_clip,
            early_stopping_patience=early_stopping_patience, early_stopping_min_delta=early_stopping_min_delta,
            scheduler_interval=scheduler_interval, accuracy_fn=accuracy_fn, progress_bar=progress_bar,
            on_nonfinite=on_nonfinite, precision=precision, accumulate_grad_batches=accumulate_grad_batches)
        self.device = as_device(device)
        # `module` is the user's model (the weights a checkpoint holds); `model` is what the loop
        # calls: the same module, wrapped in DistributedDataParallel under torchrun.
        self.module = distributed.unwrap(model).to(self.device)
        self.model = distributed.wrap(model.to(self.device), self.device)
        self.optimizer, self.loss_fn, self.scheduler = optimizer, loss_fn, scheduler
        self.recorder = RunRecorder(self.config, "phasetrain")
        self.recorder.transition_hooks.append(self._on_transition)
        self.log_dir = self.recorder.log_dir
        self.is_main_process = distributed.rank() == 0
        self._update = UpdateStep(self.model, optimizer, self.device, precision, accumulate_grad_batches,
                                  gradient_clip, self.config.track_gradients)
        self.should_stop = False
        self._callbacks: list[Callback] = []
        self._order: EpochOrder | None = None
        self._train_loader: Any = None
        self._signals: StopSignals | None = None
        self._distributed = distributed.is_distributed()  # asked once: the loop asks every update
        self._checks_on_device = self._decides_finiteness_on_device()
        self._any_rank_signalled = False
        self._own_loop_started = False
        # finiteness checked on the device (an accelerator with a fused optimizer), read per record
        self._unread: list[torch.Tensor] = []
        self._bad_since_read: torch.Tensor | None = None
        self._schedule_mark: tuple | None = None

    def __getattr__(self, name: str) -> Any:
        """`trainer.log_freq` and every other setting read from `trainer.config`."""
        config = self.__dict__.get("config")
        if config is not None and name in TrainerConfig.__dataclass_fields__:
            return getattr(config, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def state(self) -> RunState:
        """Where the run is: step, epoch, batches of the epoch consumed, best step, stop reason."""
        return self.recorder.state

    @property
    def monitors(self) -> list[Monitor]:
        """The monitors of the run: weight norm, yours, and the Hessian monitor when tracked."""
        return self.recorder.monitors

    # ------------------------------------------------------------------ public API
    def train(
        self,
        train_loader: Iterable,
        val_loader: Iterable | None = None,
        num_epochs: int = 10,
        callbacks: Sequence[Callback | Callable] | None = None,
        resume_from: str | Path | None = None,
        *,
        allow_changes: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Train for `num_epochs` epochs (in total, counting those before a resume) and return the
        results: the training summary plus `history` (the metric store as a plain dict) and paths.

        `resume_from`: a checkpoint path, or "latest" for this run's newest valid one in `log_dir`.
        A resume first compares the checkpoint with the model, optimizer, scheduler and loader and
        refuses any difference (a ValueError listing them), except those named in `allow_changes`:
        "lr" and other hyperparameter names of the optimizer (the values you set now are kept), or
        "batch_size" (from a checkpoint at an epoch boundary). The first Ctrl-C
        or SIGTERM finishes the current update, writes a checkpoint and returns with
        stop_reason "interrupted"; a second one stops at once.

        Before anything is trained or written, the arguments are checked; so is the first batch of
        `val_loader` (taken from one extra pass that stops there, with every RNG stream restored
        afterwards), so a validation loader that does not yield `(inputs, targets)` pairs is refused
        at once rather than at the first epoch's end. `train_loader`'s batches are checked as they
        come, each before its step."""
        check_int("num_epochs", num_epochs)
        check_loader("train_loader", train_loader)
        if val_loader is not None:
            check_loader("val_loader", val_loader)
        self._callbacks = build_callbacks(callbacks, self.config.early_stopping_patience,
                                          self.config.early_stopping_min_delta)
        if val_loader is not None:  # the one check that iterates, after those that do not
            check_first_batch("val_loader", val_loader)
        self.should_stop = False
        self._distributed = distributed.is_distributed()
        self._checks_on_device = self._decides_finiteness_on_device()
        if self._could_check_on_device_if_fused():
            warnings.warn(f"{type(self.optimizer).__name__} is not fused, so on {self.device} the on_nonfinite check "
                          f"reads one flag per update (a host sync every step); build it with fused=True and the "
                          f"check runs on the device, read once per record", UserWarning, stacklevel=2)
        self._order, self._train_loader = EpochOrder(train_loader), train_loader
        # a resume, or this trainer's own run going on (a second train() call), keeps the folder's files
        self.recorder.open_folder(resuming=resume_from is not None or self.recorder.run_id is not None)
        error: BaseException | None = None
        signals = self._signals = StopSignals()
        bar, interrupted = None, False
        try:
            replay = self._resume(resume_from, train_loader, allow_changes) if resume_from is not None else None
            per_epoch = len(train_loader) if hasattr(train_loader, "__len__") else None
            total = num_epochs * per_epoch // self.config.accumulate_grad_batches if per_epoch else None
            self.recorder.start(self.device, planned_steps=total, optimizer=self.optimizer)
            self._schedule_mark = self._scheduler_position() if self._checks_on_device else None
            bar = progress_bar(self.config.progress_bar if self.is_main_process else False, total, self.state.step)
            with signals:
                for callback in self._callbacks:
                    callback.on_train_start(self)
                while self.state.epoch < num_epochs and not self.should_stop:
                    self._train_epoch(train_loader, bar, replay)
                    replay = None
                    if self.should_stop and self.state.batch_in_epoch:
                        break
                    self._end_epoch(val_loader)
                interrupted = self._stop_signalled()  # under DDP: a signal on any rank
                if not interrupted:
                    self.state.finished = True
                    self.recorder.save_checkpoint("final_model.pt", self._checkpoint())
        except BaseException as raised:
            error = raised
            raise
        finally:
            if bar is not None:
                bar.close()
            self._signals = None
            self.recorder.finish(error, interrupted=interrupted and error is None)
        results = self.get_training_summary()
        results.update(history=self.history.to_dict(), log_dir=str(self.log_dir))
        for callback in self._callbacks:
            callback.on_train_end(self, results)
        return results

    def load_checkpoint(self, path: str | Path) -> dict[str, Any]:
        """Restore model, optimizer, scheduler, step, epoch and metric history from `path`
        (loaded with `weights_only=True`) and return the checkpoint dict."""
        checkpoint = load_checkpoint_file(path, map_location=self.device)
        validate_checkpoint(checkpoint, path)
        self._restore(checkpoint)
        return checkpoint

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        self.module.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None and checkpoint.get("scheduler") is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.recorder.load_state_dict(checkpoint)

    def log_step(self, step: int, epoch: int, loss: float | torch.Tensor, acc: float | torch.Tensor | None = None,
                 grad_norm: float | torch.Tensor | None = None, *, batch: tuple[Any, Any] | None = None,
                 **metrics: float | torch.Tensor) -> None:
        """Record one step's figures from a hand-written loop (`_log_step` is its original name).

        Values may be floats or 0-d tensors. The monitors due since the previous call run too
        (weight norm; curvature with `track_hessian`, on `hessian_batches` or on `batch`, an
        `(inputs, targets)` pair), on the weights as they are now: after your `optimizer.step()`
        if you call it there. Streams to `metrics.jsonl` at once and rewrites `metrics.json` at
        most every few seconds; call `finish()` at the end (or `save_metrics()`, which keeps the
        run folder until the trainer is gone).
        """
        check_int("step", step)
        previous = self.state.step
        if not self._own_loop_started:
            self._start_own_loop(batch)
        record = {"train_loss": loss, "train_acc": acc, "grad_norm": grad_norm, "epoch": epoch, **metrics}
        self.recorder.record(step, record)
        due = self.recorder.monitors_due(step, since=previous + 1)
        if due:
            pair = split_batch(batch, "log_step(batch=...)") if batch is not None else (None, None)
            ctx = StepContext(self.module, self.loss_fn, self.optimizer, step, epoch, pair, self.device)
            self.recorder.run_monitors(ctx, due)
        self.state.step, self.state.epoch = max(previous, step), epoch
        self.recorder.save_metrics_now_and_then()

    _log_step = log_step

    def finish(self) -> Path:
        """End a hand-written loop's run: feed the online detectors what the watch budget held back,
        write metrics.json, close the streams and release the run folder, so another trainer may
        use it; a later `log_step` continues this run. Returns metrics.json's path. (`train()`
        finishes its own run; here, without a hand-written run going on, this is `save_metrics()`.)"""
        if not self._own_loop_started:
            return self.save_metrics()
        self._own_loop_started = False
        return self.recorder.finish()

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Record extra named values at `step` (e.g. from a callback): into the history, the
        file streams and the online detectors, like every built-in metric."""
        self.recorder.record(step, metrics)

    def grad_norm(self) -> float:
        """Global L2 norm of the model's current gradients: the one-liner for hand-written loops."""
        return float(global_grad_norm(self.module))

    def request_stop(self, reason: str) -> None:
        """Ask the loop to stop after the current step (used by early stopping and callbacks)."""
        self.should_stop, self.state.stop_reason = True, reason

    # ------------------------------------------------------------------ the loop
    def _train_epoch(self, loader: Iterable, bar: Any, replay: tuple | None) -> None:
        self.model.train()
        per_epoch = len(loader) if hasattr(loader, "__len__") else None
        state, update, accumulate = self.state, self._update, self.config.accumulate_grad_batches
        micro: list[tuple] = []
        for batch in self._order.iterate(state.epoch, state.batch_in_epoch, replay):
            state.batch_in_epoch += 1
            inputs, targets = pair_on_device(batch, self.device, "train_loader")
            if not micro:
                self.optimizer.zero_grad(set_to_none=True)
            last = len(micro) + 1 == accumulate or state.batch_in_epoch == per_epoch
            outputs, loss = update.forward_backward(self._forward, self.loss_fn, inputs, targets, last)
            micro.append(self._batch_figures(outputs, loss, targets))
            if last:
                self._optimizer_step(micro, (inputs, targets), bar)
                micro = []
                if self.should_stop:
                    break
        else:
            if micro:  # a loader without len() ended inside an accumulation group
                self._optimizer_step(micro, (inputs, targets), bar)
        self._settle_nonfinite()  # what was checked on the device is read by the epoch's end

    def _batch_figures(self, outputs: Any, loss: torch.Tensor, targets: Any) -> tuple:
        """(loss, batch size, correct count, predictions) of a micro-batch: the loss as a float
        where reads are free (CPU), else a device tensor; the arg-max count of a plain
        classification batch left to the window (`predictions`, counted once per record)."""
        value = loss.item() if self._update.reads_on_host else loss.detach()
        if self.config.accuracy_fn is None and is_plain_classification(outputs, targets):
            return value, targets.shape[0], None, (outputs, targets)
        n = batch_size(targets)
        return value, n, batch_correct(outputs, targets, n, self.config.accuracy_fn), None

    def _optimizer_step(self, micro: list, batch: tuple[Any, Any], bar: Any) -> None:
        state = self.state
        step = state.step + 1
        grad_norm = self._update.grad_norm()
        losses = [loss for loss, _, _, _ in micro]
        skip = None
        if self._checks_on_device:
            skip = self._guard_on_device(losses, grad_norm)
        elif not self._finite(losses, grad_norm, step):
            return
        records = step % self.config.log_freq == 0
        measured: dict[str, float] = {}
        due = self.recorder.monitors_due(step)
        if due:
            ctx = StepContext(self.module, self.loss_fn, self.optimizer, step, state.epoch, batch, self.device)
            measured = self.recorder.run_monitors(ctx, due, record=not records)  # else in the training record
        self._update.apply(skip)
        state.step = step
        if self.scheduler is not None and self.config.scheduler_interval == "step":
            self.scheduler.step()
        self.recorder.window.add_update(micro, grad_norm)
        checkpoint_due = bool(self.config.checkpoint_freq) and step % self.config.checkpoint_freq == 0
        if (records or checkpoint_due) and self._settle_nonfinite():
            return
        if records:
            self._log_train_record(step, bar, measured)
        if self._stop_signalled():
            if self._settle_nonfinite():
                return
            self.request_stop("interrupted")
            self.recorder.save_step_checkpoint(self._checkpoint())
        elif checkpoint_due:
            self.recorder.save_step_checkpoint(self._checkpoint())

    def _end_epoch(self, val_loader: Iterable | None) -> None:
        if val_loader is not None:
            accuracy_fn = self.config.accuracy_fn
            val = validation_pass(self.model, self.loss_fn, val_loader, self.device, self._forward_under_autocast,
                                  lambda outputs, targets: batch_accuracy(outputs, targets, accuracy_fn))
            self.recorder.record(self.state.step, val)
        else:
            val = {}
        means, improved = self.recorder.end_epoch()
        epoch_metrics: dict[str, Any] = {"epoch": self.state.epoch, "step": self.state.step, **means,
                                         "lr": self._lr(), **val}
        monitored = epoch_metrics.get("val_loss", epoch_metrics.get("train_loss"))
        self._step_epoch_scheduler(monitored)
        self.state.epoch += 1
        self.state.batch_in_epoch = 0
        if improved:
            self.recorder.save_best(self._checkpoint())
        for callback in self._callbacks:
            callback.on_epoch_end(self, epoch_metrics["epoch"], epoch_metrics)
        if self._distributed:  # every rank stops together
            stop = torch.tensor([float(self.should_stop)], device=self.device)
            self.should_stop = bool(distributed.all_reduce_sum(stop).item())
        if any(isinstance(c, EarlyStopping) and c.stopped_epoch is not None for c in self._callbacks):
            self.state.stopped_early = True
        self.recorder.save_metrics_now_and_then()

    def _forward(self, inputs: Any) -> Any:
        """The model on a batch's inputs: a dict as keyword arguments, a tuple or list as
        positional ones, anything else as the one argument (training enters autocast around it)."""
        if isinstance(inputs, dict):
            return self.model(**inputs)
        if isinstance(inputs, (tuple, list)):
            return self.model(*inputs)
        return self.model(inputs)

    def _forward_under_autocast(self, inputs: Any) -> Any:
        with autocast(self.device, self.config.precision):
            return self._forward(inputs)

    def _finite(self, losses: list, grad_norm: float | torch.Tensor | None, step: int) -> bool:
        """Apply `on_nonfinite`; True when the update may go ahead. Losses and the norm are host
        floats on a CPU (no sync) or device tensors (one host sync); under DDP one tiny all-reduce
        makes every rank decide alike. Checks the loss, and the gradient norm when it is
        computed; with fp16 an overflowing gradient is the scaler's business (it skips that
        update), not a failure."""
        on_host = self._update.reads_on_host
        total = summed(losses)
        checked_norm = grad_norm if grad_norm is not None and self.config.precision != "fp16" else None
        both = total if checked_norm is None else total + checked_norm
        if self._distributed:  # the stop signals of all ranks travel in the same reduction
            nonfinite = (not math.isfinite(both)) if on_host else (~torch.isfinite(both)).double()
            flags = torch.stack([torch.as_tensor(nonfinite, dtype=torch.float64, device=self.device),
                                 torch.tensor(float(self._signalled_here()), dtype=torch.float64, device=self.device)])
            nonfinite, signalled = distributed.all_reduce_sum(flags).tolist()
            finite, self._any_rank_signalled = not nonfinite, bool(signalled)
        else:
            finite = math.isfinite(both if on_host else both.item())
        if finite:
            return True
        if self.config.on_nonfinite == "skip":
            self._count_skipped(step, 1)
            return False
        self._stop_for_nonfinite(step, sum(float(value) for value in losses) / len(losses),
                                 float("nan") if grad_norm is None else float(grad_norm))
        return False

    def _decides_finiteness_on_device(self) -> bool:
        """Whether finiteness is decided on the device and read at the next record (no host sync
        per step): an accelerator, one process, and an optimizer that skips on a found-inf tensor."""
        return self._update.can_skip_on_device and not self._distributed

    def _could_check_on_device_if_fused(self) -> bool:
        """An accelerator run that syncs per update only because its optimizer, which has a fused
        implementation (a `fused` default: Adam, AdamW, SGD, ...), was built without it."""
        defaults = self.optimizer.defaults
        return (not self._checks_on_device and not self._distributed and not self._update.reads_on_host
                and self.config.precision != "fp16" and "fused" in defaults and not defaults["fused"])

    def _guard_on_device(self, losses: list[torch.Tensor], grad_norm: torch.Tensor | None) -> torch.Tensor:
        """The device-side `on_nonfinite`: remember this update's loss and norm, and return the
        found-inf the optimizer skips on: this update's own for "skip"; for "stop" and "raise"
        any since the last read, so the weights stay those before the first non-finite update."""
        total = summed(losses)
        norm = total if grad_norm is None else grad_norm
        self._unread.append(torch.stack((total, norm)))
        bad = ~torch.isfinite(total + norm)
        if self.config.on_nonfinite != "skip":
            bad = bad if self._bad_since_read is None else bad | self._bad_since_read
            self._bad_since_read = bad
        return bad.float()

    def _settle_nonfinite(self) -> bool:
        """Read the losses and norms checked on the device since the last read (one host sync)
        and apply `on_nonfinite` to them; True when that stopped the run. A stop rewinds the
        step count (and a per-step scheduler) to the update before the first non-finite one,
        whose weights the skipped updates kept, and drops the figures since the last record."""
        if not self._unread:
            return False
        values = torch.stack(self._unread).tolist()
        self._unread, self._bad_since_read = [], None
        first = self.state.step - len(values) + 1
        bad = [i for i, (loss, norm) in enumerate(values) if not math.isfinite(loss + norm)]
        if bad and self.config.on_nonfinite == "skip":
            self._count_skipped(first + bad[-1], len(bad))
        elif bad:
            loss, norm = values[bad[0]]
            self._rewind(first + bad[0] - 1)
            self._stop_for_nonfinite(first + bad[0], loss, norm)
            return True
        self._schedule_mark = self._scheduler_position()
        return False

    def _scheduler_position(self) -> tuple | None:
        """(step, scheduler state, learning rates) of a per-step scheduler, to rewind it to."""
        if self.scheduler is None or self.config.scheduler_interval != "step":
            return None
        return (self.state.step, copy.deepcopy(self.scheduler.state_dict()),
                [group["lr"] for group in self.optimizer.param_groups])

    def _rewind(self, step: int) -> None:
        """Back to the end of `step`: the updates after it were skipped on the device."""
        undone = self.state.step - step
        self.state.step = step
        self.state.batch_in_epoch -= undone * self.config.accumulate_grad_batches
        self.recorder.window.reset()
        if self._schedule_mark is not None:
            marked_step, state, rates = self._schedule_mark
            self.scheduler.load_state_dict(state)
            for group, rate in zip(self.optimizer.param_groups, rates):
                group["lr"] = rate
            for _ in range(step - marked_step):
                self.scheduler.step()

    def _count_skipped(self, step: int, count: int) -> None:
        self.state.nonfinite_skipped += count
        self.recorder.record(step, {"nonfinite_skipped": self.state.nonfinite_skipped})

    def _stop_for_nonfinite(self, step: int, loss: float, norm: float) -> None:
        """`on_nonfinite` "stop" or "raise" at `step`: the last finite state is the current one."""
        message = f"non-finite loss or gradient norm at step {step} (loss={loss:.4g}, grad_norm={norm:.4g})"
        self.recorder.save_step_checkpoint(self._checkpoint())
        if self.config.on_nonfinite == "raise":
            raise FloatingPointError(message + f"; last finite state saved as checkpoint_step_{self.state.step}.pt")
        self.request_stop(message + f"; stopped, last finite state saved as checkpoint_step_{self.state.step}.pt")

    def _signalled_here(self) -> bool:
        return self._signals is not None and self._signals.interrupted

    def _stop_signalled(self) -> bool:
        """Ctrl-C or SIGTERM arrived (on any rank: under DDP the flag rides on the per-update reduction)."""
        return self._any_rank_signalled if self._distributed else self._signalled_here()

    def _log_train_record(self, step: int, bar: Any, measured: dict[str, float]) -> None:
        """The training record of `step`: the window's means, lr, epoch and what monitors `measured`."""
        record = self.recorder.record_window(step, {"lr": self._lr(), "epoch": self.state.epoch, **measured})
        if not bar.disable:
            bar.update(step - bar.n)
            bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k in ("train_loss", "train_acc")},
                            refresh=False)
        for callback in self._callbacks:
            callback.on_log(self, step, record)

    def _on_transition(self, transition: Any) -> None:
        for callback in self._callbacks:
            callback.on_phase_transition(self, transition)

    def _step_epoch_scheduler(self, monitored: float | None) -> None:
        if self.scheduler is None or self.config.scheduler_interval != "epoch":
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
        """What the loop adds to a checkpoint; the recorder adds history, counters and detectors."""
        state = self.state
        return {
            "step": state.step,
            "epoch": state.epoch if state.batch_in_epoch else max(state.epoch - 1, 0),
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "update": self._update.state_dict(),
            "rng": self._order.now() if self._order is not None else None,
            "rng_epoch_start": self._order.epoch_start if self._order is not None else None,
            "callbacks": [c.state_dict() for c in self._callbacks],
            **resume_fields(self.optimizer, self.scheduler, self._train_loader),
        }

    def _resume(self, resume_from: str | Path, loader: Any, allow_changes: Sequence[str]) -> tuple:
        """Check the checkpoint against what is live, then restore everything from it; return the
        RNG states that replay its epoch."""
        if str(resume_from) == "latest":
            path, checkpoint = self.recorder.latest_checkpoint(map_location=self.device)
        else:
            path = Path(resume_from)
            if not path.exists() and difflib.get_close_matches(str(resume_from), ["latest"], cutoff=0.6):
                raise ValueError(f"resume_from={str(resume_from)!r} is not a file; did you mean 'latest' (this "
                                 f"run's newest checkpoint in log_dir)?")
            checkpoint = load_checkpoint_file(path, map_location=self.device)
        validate_checkpoint(checkpoint, path)
        live = hyperparameters(self.optimizer)
        accepted = check_resume_compatible(checkpoint, model=self.module, optimizer=self.optimizer,
                                           scheduler=self.scheduler, train_loader=loader,
                                           allow_changes=allow_changes, path=path)
        for change in accepted:
            warnings.warn(f"resuming with a change you allowed: {change}", UserWarning, stacklevel=3)
        self.recorder.adopt_run(checkpoint)
        self._restore(checkpoint)
        reapply_hyperparameters(self.optimizer, live, allow_changes, self.scheduler)
        self._update.load_state_dict(checkpoint["update"])
        for callback, state in zip(self._callbacks, checkpoint["callbacks"]):
            callback.load_state_dict(state)
        return checkpoint["rng_epoch_start"], checkpoint["rng"]

    def _start_own_loop(self, batch: Any) -> None:
        """The first `log_step` of a hand-written loop: streams open; curvature needs a batch."""
        if self.config.track_hessian and self.config.hessian_batches is None and batch is None:
            raise ValueError("track_hessian=True in a hand-written loop needs curvature batches: pass "
                             "hessian_batches=[(inputs, targets), ...] to the trainer, or "
                             "log_step(..., batch=(inputs, targets)); got neither")
        self.recorder.open_folder(resuming=self.recorder.run_id is not None)
        self.recorder.start(self.device, optimizer=self.optimizer)
        self._own_loop_started = True  # until finish()


def summed(losses: list) -> float | torch.Tensor:
    """The sum of an update's micro-batch losses (host floats or 0-d device tensors), without a
    kernel for the usual single one."""
    if len(losses) == 1:
        return losses[0]
    return torch.stack(losses).sum() if isinstance(losses[0], torch.Tensor) else sum(losses)


def progress_bar(enabled: bool | None, total: int | None, initial: int = 0, unit: str = "step") -> Any:
    """A tqdm bar; `enabled=None` shows it only when stderr is a terminal or in a Jupyter kernel."""
    if enabled is None:
        enabled = sys.stderr.isatty() or "ipykernel" in sys.modules
    return tqdm(total=total, initial=initial, disable=not enabled, unit=unit, dynamic_ncols=True)
