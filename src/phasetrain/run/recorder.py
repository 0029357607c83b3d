"""`RunRecorder`: the one owner of a run's truth, whichever front end drives the run.

The native trainer, the Lightning callback, the Hugging Face callback and a hand-written loop
(`trainer.log_step`) are adapters: they translate their events into the calls below, so every
front end records the same metric names at the same steps under the same policies, writes the
same files and reads back through the same API (`RunViews`). Conventions:
- a step is the 1-based global optimizer step (step s is the s-th parameter update);
- per-update figures (loss, correct count, gradient norm) go into `window` as device tensors and
  are read to the host once per record (`record_window`), as means since the previous record;
- a second value of a metric at the same step replaces the first (the latest measurement of the
  same weights); a value at an earlier step than the metric's last is dropped with a warning;
- `best_step` is the step of the lowest `val_loss` record, or of the lowest epoch-mean
  `train_loss` when the run records no validation;
- under DDP every rank records the same numbers (sums are all-reduced, monitor results are
  rank 0's, broadcast), and rank 0 alone writes files.
"""
from __future__ import annotations

import inspect
import logging
import math
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from phasetrain.detect import Transition, detect_in_history
from phasetrain.monitors.base import Monitor, StepContext
from phasetrain.monitors.norms import WeightNormMonitor
from phasetrain.run.averages import EpochTotals, StepAccumulator
from phasetrain.run.checkpoints import checkpoint_path, latest_checkpoint, prune_checkpoints, save_checkpoint
from phasetrain.run.checks import check_int
from phasetrain.run.config import RecordingConfig, default_log_dir, optimizer_settings
from phasetrain.run.distributed import barrier, broadcast_object, is_distributed, rank
from phasetrain.run.files import prepare_log_dir
from phasetrain.run.folder import RunFolder, open_run_folder
from phasetrain.run.history import MetricHistory, load_metrics, save_metrics
from phasetrain.run.state import RunState
from phasetrain.run.streams import close_loggers, make_loggers
from phasetrain.run.summary import training_summary
from phasetrain.run.watch import TransitionWatcher, automatic_window

LOGGER = logging.getLogger("phasetrain")

# metrics.json is rewritten whole (O(records)); at epoch ends and from log_step it is rewritten at
# most this often, so full-batch runs (an epoch per step) stay linear. Checkpoints, the end of
# the run and exceptions always write it; metrics.jsonl streams every record as it comes.
METRICS_REWRITE_INTERVAL_S = 5.0
# best_model.pt is rewritten at most this often too (full-batch runs improve nearly every step): a
# newer best waits in memory as a copy and is written at the next checkpoint, at the end of the run
# (also on an exception or an interrupt), or once the interval has passed. Checkpoints above
# BEST_COPY_LIMIT_BYTES are written at once instead of copied.
BEST_COPY_LIMIT_BYTES = 256 * 2**20


class RunRecorder:
    """Metric store, monitors, online watcher, streams, checkpoint files and meta of one run.

    `config`: what to record and where (checked when built). `framework`: the front end's name,
    stored in the meta ("phasetrain", "lightning", "transformers"). Building a recorder creates
    the run folder if it is missing and proves it writable, and changes no file in it. Files
    change only once `open_folder()` has taken the folder for this run (its lock, its owner id).
    """

    def __init__(self, config: RecordingConfig, framework: str) -> None:
        self.config, self.framework = config, framework
        self.log_dir = Path(config.log_dir) if config.log_dir is not None else default_log_dir()
        self.writes = rank() == 0
        if self.writes:
            prepare_log_dir(self.log_dir)
        self.monitors: list[Monitor] = [WeightNormMonitor(freq=config.log_freq), *config.monitors]
        if config.track_hessian:
            from phasetrain.monitors.hessian import HessianMonitor

            self.monitors.append(HessianMonitor(method=config.hessian_method, freq=config.hessian_freq,
                                                k=config.hessian_k, batches=config.hessian_batches,
                                                budget=config.hessian_budget))
        self.history = MetricHistory()
        self.state = RunState()
        self.window = StepAccumulator(torch.device("cpu"))
        self.epoch_totals = EpochTotals()
        self.watcher = TransitionWatcher(config.watch_metrics, config.watch_window or automatic_window(None),
                                         config.watch_detector, time_budget=config.watch_budget)
        self.transition_hooks: list[Callable[[Transition], Any]] = []
        self.streams: list[Any] = []
        self.device = torch.device("cpu")
        self.optimizer: dict[str, Any] | None = None
        self.folder: RunFolder | None = None
        self.run_id: str | None = None
        self.started = False
        self._pending_best: dict[str, Any] | None = None
        self._best_written_at = -math.inf
        self._clock: float | None = None
        self._metrics_written_at = 0.0
        self._best_changed = False
        self._warned_order: set[str] = set()
        self._told_movement: tuple[bool, int] | None = None  # (moving, monitors) as last told to them

    # ------------------------------------------------------------------ run boundaries
    def open_folder(self, resuming: bool) -> None:
        """Take the run folder for this run before anything is written: its lock (one writer), its
        owner (a new run refuses another run's files unless `overwrite`; a resume reads the id of
        the run it continues), and the removal of temp files that killed writes left. Rank 0
        takes the folder; every rank learns the run id."""
        if self.folder is None and self.writes:
            self.folder = open_run_folder(self.log_dir, resuming=resuming, overwrite=self.config.overwrite)
        run_id = self.folder.run_id if self.folder is not None else None
        self.run_id = broadcast_object(run_id)

    def adopt_run(self, checkpoint: dict[str, Any]) -> None:
        """A resume in a folder that names no owner (written before run ids existed, or a
        checkpoint brought from elsewhere): the checkpoint's run id, or a new one, owns it now."""
        if self.folder is not None and self.folder.run_id is None:
            from phasetrain.run.ownership import new_run_id

            self.folder.adopt(checkpoint.get("run_id") or new_run_id())
        run_id = self.folder.run_id if self.folder is not None else checkpoint.get("run_id")
        self.run_id = broadcast_object(run_id)

    def start(self, device: torch.device, planned_steps: int | None = None, optimizer: Any = None) -> None:
        """The run (or its resumed part) begins: per-step figures live on `device`, the online
        window follows `planned_steps` when `watch_window` is None, the streams open (rank 0)
        holding exactly the history's records, and the wall clock runs. `optimizer`: its class
        and hyperparameters go into the meta's config."""
        self.device = torch.device(device)
        if optimizer is not None:
            self.optimizer = optimizer_settings(optimizer)
        if self.window.device != self.device:
            pending = self.window.state_dict()
            self.window.device = self.device
            self.window.load_state_dict(pending)
        if self.config.watch_window is None:
            self.watcher.window_size = automatic_window(planned_steps)
        if self.folder is not None and not self.streams:
            self.streams = make_loggers(self.config.loggers, self.log_dir)
        for stream in self.streams:
            if hasattr(stream, "rewind"):
                stream.rewind(self.history)
        self.state.finished = False
        self.state.stop_reason, self.state.stopped_early = None, False  # a resumed run is running again
        self._clock = time.perf_counter()
        self.started = True

    def finish(self, error: BaseException | None = None, interrupted: bool = False) -> Path:
        """The run ends: normally, by a stop signal (`interrupted`: stop_reason "interrupted"), or
        by `error` (its type and message become the stop reason unless one is set). Writes
        metrics.json (if the run got as far as `start()`: a resume refused before it leaves the
        folder's files as they were), closes the streams and releases the folder. A new run that
        fails before its first update with nothing recorded and no checkpoint written (a malformed
        first batch, say; not `on_nonfinite="raise"`, which saved its state) removes the files it
        created instead, so the corrected run may start in the same folder."""
        unused = (error is not None and not interrupted and self.state.step == 0 and self.state.stop_reason is None
                  and len(self.history) == 0)
        if interrupted:
            self.state.stop_reason = "interrupted"
        elif error is None:
            self.state.finished = True
        elif self.state.stop_reason is None:
            self.state.stop_reason = f"{type(error).__name__}: {error}".strip()
        try:
            if error is None:
                self.feed_held_records()  # records held back by the watch budget
            self.write_pending_best(force=True)
            path = self.log_dir / "metrics.json"
            # nothing to keep: a new run hands the folder back (a resume, or a saved state, keeps it)
            handed_back = unused and self.folder is not None and bool(self.folder.release_unused())
            if self.started and not handed_back:
                path = self.save_metrics()
        finally:
            self.started = False
            streams, self.streams = self.streams, []
            self._clock = None
            try:
                close_loggers(streams)
            finally:
                if self.folder is not None:
                    self.folder.close()
                    self.folder = None
        return path

    def _tick(self) -> None:
        if self._clock is not None:
            now = time.perf_counter()
            self.state.wall_time_s += now - self._clock
            self._clock = now

    def set_log_freq(self, log_freq: int) -> None:
        """Change the record interval (and the weight-norm monitor's) to the framework's own."""
        check_int("log_freq", log_freq)
        self.config.log_freq = self.monitors[0].freq = log_freq

    # ------------------------------------------------------------------ recording
    def record(self, step: int, metrics: dict[str, Any]) -> None:
        """Store `metrics` (name -> number or 0-d tensor; None skipped) at `step`, stream them,
        feed the online detectors and call `transition_hooks` with what they confirm."""
        step = int(step)
        clean: dict[str, float] = {}
        for name, value in metrics.items():
            if value is None:
                continue
            last = self.history.last_step(name)
            if last is not None and last > step:
                if name not in self._warned_order:
                    self._warned_order.add(name)
                    warnings.warn(f"{name!r} is recorded up to step {last}; a value at step {step} was dropped "
                                  f"(every metric's steps only go forward)", RuntimeWarning, stacklevel=2)
                continue
            clean[name] = float(value)
        if not clean:
            return
        self.history.log(step, clean)
        value = clean.get("val_loss")
        if value is not None and math.isfinite(value) and value < self.state.best_loss:
            self._new_best(step, value)
        for stream in self.streams:
            stream.log(step, clean)
        self._announce(self.watcher.observe(step, clean))

    def feed_held_records(self) -> None:
        """Feed the online detectors the records the watch budget held back, and announce what
        they confirm (before a checkpoint, a metrics.json write and the end of a run)."""
        self._announce(self.watcher.flush())

    def _announce(self, transitions: list[Transition]) -> None:
        """Log the transitions the online detectors confirmed and call the hooks with each."""
        for transition in transitions:
            LOGGER.info("phase transition in %s at step %s (%s, score %.3g)", transition.metric, transition.step,
                        transition.direction, transition.score)
            for hook in self.transition_hooks:
                hook(transition)

    def record_window(self, step: int, extra: dict[str, Any]) -> dict[str, float]:
        """Record the means since the last record (one host sync; summed over DDP ranks) plus
        `extra` at `step`; returns the record."""
        means, weights = self.window.read()
        self.epoch_totals.add(means, weights)
        record = {**means, **{k: v for k, v in extra.items() if v is not None}}
        self.record(step, record)
        return record

    def monitors_due(self, step: int, since: int | None = None) -> list[Monitor]:
        """The monitors that measure at `step`, or at any step from `since` to `step` (a hand-written
        loop that records every few steps). Each is told first whether the watched metrics move
        (`Monitor.note_movement`), when that changed since it was last told: it changes only
        where a record is fed to the watcher, so the loop's steps between records pay nothing
        for it."""
        told = (self.watcher.moving, len(self.monitors))
        if told != self._told_movement:
            for monitor in self.monitors:
                if hasattr(monitor, "note_movement"):  # a duck-typed monitor may lack it
                    monitor.note_movement(told[0])
            self._told_movement = told
        if since is None:
            return [monitor for monitor in self.monitors if monitor.should_run(step)]
        return [monitor for monitor in self.monitors if any(monitor.should_run(s) for s in range(since, step + 1))]

    def run_monitors(self, ctx: StepContext, due: list[Monitor] | None = None, record: bool = True) -> dict[str, float]:
        """Run the monitors due at `ctx.step` (or `due`) and return what they measured, recorded
        unless `record` is False (a front end that records its training figures at the same step
        passes them along, one record instead of two). Every rank runs them; under DDP rank 0's
        numbers are returned on every rank."""
        due = self.monitors_due(ctx.step) if due is None else due
        if not due:
            return {}
        results: dict[str, float] = {}
        for monitor in due:
            results.update(monitor.compute(ctx))
        results = broadcast_object(results)
        if record:
            self.record(ctx.step, results)
        return results

    def end_epoch(self) -> tuple[dict[str, float], bool]:
        """Close an epoch: (the epoch's mean train figures, whether the run's best improved in it).

        Reads the per-step figures since the last record (all ranks take part under DDP). Without
        any validation record in the run, the epoch-mean train_loss decides the best step.
        """
        means, weights = self.window.read()
        self.epoch_totals.add(means, weights)
        epoch_means = self.epoch_totals.means()
        self.epoch_totals = EpochTotals()
        self.state.epochs_run += 1
        loss = epoch_means.get("train_loss")
        if "val_loss" not in self.history and loss is not None and math.isfinite(loss) and loss < self.state.best_loss:
            self._new_best(self.state.step, loss)
        improved, self._best_changed = self._best_changed, False
        return epoch_means, improved

    def _new_best(self, step: int, loss: float) -> None:
        self.state.best_loss, self.state.best_step = loss, step
        self._best_changed = True

    # ------------------------------------------------------------------ files
    def save_metrics(self) -> Path:
        """Write metrics.json atomically (rank 0) and flush the streams; returns its path."""
        self._tick()
        path = self.log_dir / "metrics.json"
        if self.folder is not None:  # only a run that holds its folder writes into it
            save_metrics(path, self.history, self.meta())
            for stream in self.streams:
                stream.flush()
        self._metrics_written_at = time.monotonic()
        return path

    def save_metrics_now_and_then(self) -> None:
        """metrics.json (and a best state kept in memory), at most every METRICS_REWRITE_INTERVAL_S
        (epoch ends, log_step), with the watched records the watch budget held back fed (and
        what they confirm announced) at the same pace."""
        self.write_pending_best()
        if time.monotonic() - self._metrics_written_at > METRICS_REWRITE_INTERVAL_S:
            self.feed_held_records()
            self.save_metrics()

    def save_checkpoint(self, name: str, payload: dict[str, Any]) -> Path:
        """Write `log_dir/name`: the front end's `payload` (model, optimizer, ...) plus the
        recorder's own state, atomically (rank 0; every rank waits for it)."""
        path = self.log_dir / name
        if self.folder is not None:
            save_checkpoint(path, self._with_own_state(payload))
        barrier()
        return path

    def _with_own_state(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint: the front end's `payload`, the recorder's state and the run's id."""
        return {**payload, **self.state_dict(), "run_id": self.run_id}

    def save_best(self, payload: dict[str, Any]) -> None:
        """`best_model.pt` for the state in `payload` (the run's best so far): written now, or, when
        the last one was written less than METRICS_REWRITE_INTERVAL_S ago, kept as a copy and
        written by `write_pending_best` (at the next checkpoint, at the end, or once due)."""
        if self.folder is None and not is_distributed():
            return
        due = time.monotonic() - self._best_written_at >= METRICS_REWRITE_INTERVAL_S
        if due or is_distributed() or _tensor_bytes(payload) > BEST_COPY_LIMIT_BYTES:
            self._pending_best = None  # every rank decides alike (save_checkpoint waits for all)
            self.save_checkpoint("best_model.pt", payload)
            self._best_written_at = time.monotonic()
        else:
            self._pending_best = _copied(self._with_own_state(payload))

    def write_pending_best(self, force: bool = False) -> None:
        """Write a best state kept in memory, when due (or now, with `force`)."""
        if self._pending_best is None:
            return
        if force or time.monotonic() - self._best_written_at >= METRICS_REWRITE_INTERVAL_S:
            if self.folder is not None:
                save_checkpoint(self.log_dir / "best_model.pt", self._pending_best)
            self._pending_best, self._best_written_at = None, time.monotonic()

    def save_step_checkpoint(self, payload: dict[str, Any]) -> Path:
        """`checkpoint_step_{step}.pt` at the current step, metrics.json, then pruning to the
        newest `keep_last_checkpoints`."""
        self.write_pending_best(force=True)
        path = self.save_checkpoint(checkpoint_path(self.log_dir, self.state.step).name, payload)
        self.save_metrics()
        keep = self.config.keep_last_checkpoints
        if keep is not None and self.folder is not None:
            prune_checkpoints(self.log_dir, keep, self.run_id)
        return path

    def latest_checkpoint(self, map_location: Any) -> tuple[Path, dict[str, Any]]:
        """The newest readable checkpoint of this run in its folder (another run's files are never
        seen; unreadable files are skipped with a warning naming them)."""
        return latest_checkpoint(self.log_dir, map_location=map_location, run_id=self.run_id)

    # ------------------------------------------------------------------ reading back
    @property
    def transitions(self) -> list[Transition]:
        """Transitions the online detectors have confirmed so far, in the order found."""
        return list(self.watcher.found)

    def find_transitions(self, metric: str, window_size: float | None = None,
                         kinds: Sequence[str] = ("level",)) -> list[Transition]:
        """Offline detection on the whole recorded `metric`; `window_size` None: the automatic window;
        `kinds`: any of "level", "slope", "regime"."""
        check_int("window_size", window_size, allow_none=True)
        steps = self.history.steps(metric)  # KeyError naming the recorded metrics
        if window_size is not None and steps.size >= 8 and window_size > 10 * steps[-1]:
            raise ValueError(f"window_size={window_size} is more than 10x the {steps[-1]} steps {metric!r} was "
                             f"recorded over; use a window of at most {steps[-1]} steps, or None to choose one")
        return detect_in_history(self.history, metric, window_size, kinds=tuple(kinds))

    def summary(self) -> dict[str, Any]:
        """`training_summary` of what has been recorded (what `phasetrain summary` prints)."""
        return training_summary(self.history, self.meta())

    def meta(self) -> dict[str, Any]:
        """The run's meta data in metrics.json: counters, folder, device, front end, settings."""
        self._tick()
        return {
            **self.state.summary_fields(),
            "run_id": self.run_id,
            "log_dir": str(self.log_dir),
            "device": str(self.device),
            "framework": self.framework,
            "config": {**self.config.to_meta(), **({"optimizer": self.optimizer} if self.optimizer else {})},
            "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """History, counters, open window, monitors and detectors (tensors, numbers, lists only:
        checkpoints load with weights_only=True). Records the watch budget held back are fed first
        (and what they confirm announced), so a resume never reports a transition twice."""
        self.feed_held_records()
        return {
            "history": {k: {n: torch.from_numpy(a) for n, a in v.items()}
                        for k, v in self.history.state_dict().items()},
            "run_state": self.state.to_dict(),
            "window": self.window.state_dict(),
            "epoch_totals": self.epoch_totals.state_dict(),
            "monitors": [m.state_dict() for m in self.monitors],
            "watcher": self.watcher.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (as found in a checkpoint)."""
        self.history.load_state_dict(state["history"])
        self.state = RunState.from_dict(state["run_state"])
        self.window.load_state_dict(state["window"])
        self.epoch_totals.load_state_dict(state["epoch_totals"])
        for monitor, monitor_state in zip(self.monitors, state["monitors"]):
            monitor.load_state_dict(monitor_state)
        self.watcher.load_state_dict(state["watcher"])
        self._told_movement = None

    def restore_from_file(self, up_to_step: int) -> None:
        """Resume from the metrics.json already in the run folder (a framework whose checkpoints do
        not carry the recorder's state): keep its records up to `up_to_step` and replay them into
        the online detectors without calling the hooks."""
        path = self.log_dir / "metrics.json"
        if not path.is_file():
            return
        history, meta = load_metrics(path)
        kept = {}
        for name in history.names():
            steps, values = history.steps(name), history.values(name)
            keep = steps <= up_to_step
            kept[name] = {"steps": steps[keep].tolist(), "values": [None if not math.isfinite(v) else v
                                                                     for v in values[keep].tolist()]}
        self.history = MetricHistory.from_dict(kept)
        self.watcher = TransitionWatcher(self.config.watch_metrics, self.watcher.window_size,
                                         self.config.watch_detector, time_budget=None)  # a replay: all checked
        for step, record in self.history.records():
            self.watcher.observe(step, record)
        self.watcher.time_budget = self.config.watch_budget
        self._told_movement = None
        self.state.step = up_to_step
        self.state.epochs_run = int(meta.get("epochs_run") or 0)
        self.state.wall_time_s = float(meta.get("wall_time_s") or 0.0)
        self.state.best_step = meta.get("best_step")


class RunViews:
    """The read-back API every front end offers over its `recorder`: the same names everywhere."""

    recorder: RunRecorder

    @property
    def history(self) -> MetricHistory:
        """The run's metric store (what metrics.json holds): `steps(name)`, `values(name)`, `names()`."""
        return self.recorder.history

    @property
    def transitions(self) -> list[Transition]:
        """Transitions confirmed online so far."""
        return self.recorder.transitions

    def detect_phase_transitions(self, metric: str = "val_acc", window_size: int | None = None,
                                 kinds: Sequence[str] = ("level",)) -> list[int]:
        """Global steps at which `metric` changes abruptly (offline detection over the whole run).

        `window_size` (steps): the shortest stretch a side of a change must hold; None chooses it
        from the curve (1% of its span, at least 8 recording intervals), as the summary, the report
        and `phasetrain detect` do. `kinds`: "level" (abrupt changes of level, the default
        everywhere), "slope" (kinks: a trend that changes rate, e.g. sharpness levelling off at
        2/lr), "regime" (the start of a sustained oscillation or train of spikes)."""
        return [t.step for t in self.find_transitions(metric, window_size, kinds)]

    def find_transitions(self, metric: str = "val_acc", window_size: int | None = None,
                         kinds: Sequence[str] = ("level",)) -> list[Transition]:
        """Full `Transition` records of `metric` (kind, step, span, levels, magnitude, direction, score)."""
        return self.recorder.find_transitions(metric, window_size, kinds)

    def find_phenomena(self, window_size: int | None = None) -> list:
        """What happened in the run, named: memorisation, grokking (with its delay ratio), plateau
        exits, saddle-to-saddle drops, edge of stability, oscillation regimes, loss spikes,
        catapults; each with its step, evidence and confidence (`phasetrain.detect.Phenomenon`)."""
        from phasetrain.detect import find_phenomena

        return find_phenomena(self.history, window_size)

    def get_training_summary(self) -> dict[str, Any]:
        """Final and best figures, step counts, stop reason, wall time and detected transitions."""
        return self.recorder.summary()

    def save_metrics(self) -> Path:
        """Write metrics.json now (atomically; rank 0) and return its path. Watched records held
        back by the watch budget are fed first (a hand-written loop's last call sees them all)."""
        self.recorder.feed_held_records()
        return self.recorder.save_metrics()


def callback_recorder(framework: str, owner: Any, on_phase_transition: Callable[..., Any] | None,
                      **settings: Any) -> RunRecorder:
    """The recorder of a framework callback `owner` ("lightning", "transformers"): configured by
    `settings` (`RecordingConfig` fields, checked there), calling `on_phase_transition(owner,
    transition)` (when given) and then `owner._log_transition(transition)` for each transition
    confirmed online."""
    recorder = RunRecorder(RecordingConfig(**settings), framework)
    if on_phase_transition is not None:
        recorder.transition_hooks.append(transition_hook(on_phase_transition, owner))
    recorder.transition_hooks.append(owner._log_transition)
    return recorder


def transition_hook(fn: Callable[..., Any], owner: Any,
                    name: str = "on_phase_transition") -> Callable[[Transition], Any]:
    """`fn(owner, transition)`, the one hook signature, as a recorder hook. A function of one
    argument, `fn(transition)` (the form the callbacks took before 0.2), still works and warns."""
    if not callable(fn):
        raise TypeError(f"{name} must be callable (source, transition) -> None, got {fn!r}")
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: assume the current form
        return lambda transition: fn(owner, transition)
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_two = len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in parameters)
    if takes_two:
        return lambda transition: fn(owner, transition)
    warnings.warn(f"{name}(transition) is deprecated; take (source, transition), as the trainer's "
                  f"Callback.on_phase_transition(trainer, transition) does", DeprecationWarning, stacklevel=3)
    return fn


def _tensor_bytes(obj: Any) -> int:
    """Bytes of all tensors in a nested checkpoint payload."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(value) for value in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(value) for value in obj)
    return 0


def _copied(obj: Any) -> Any:
    """A checkpoint payload whose tensors are copies on the CPU (a snapshot the run cannot change)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {key: _copied(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_copied(value) for value in obj]
    if isinstance(obj, tuple):
        return tuple(_copied(value) for value in obj)
    return obj
