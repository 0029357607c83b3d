"""What both framework callbacks share: monitors, the metric store, metrics.json/jsonl and detection.

Framework-free (torch and phasetrain only). A callback translates its framework's hooks into
`window.add_batch` / `window.add_grad_norm` (a `StepAccumulator`), `run_monitors`, `log_window`,
`record` and `save`; the recorder keeps the numbers in
the trainer's shape: same metric names, 1-based global optimizer steps, `metrics.json` written
atomically with `save_metrics`, every record streamed to `metrics.jsonl` as it is made.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from phasetrain.run import config as check
from phasetrain.run.files import prepare_log_dir
from phasetrain.run.averages import StepAccumulator
from phasetrain.detect import Transition, detect_in_history
from phasetrain.run.history import MetricHistory, load_metrics, save_metrics
from phasetrain.run.streams import JsonlLogger
from phasetrain.monitors.base import Monitor, StepContext
from phasetrain.monitors.hessian import HessianMonitor
from phasetrain.monitors.norms import WeightNormMonitor
from phasetrain.run.distributed import rank
from phasetrain.run.summary import KEY_METRICS, training_summary
from phasetrain.run.watch import TransitionWatcher

LOGGER = logging.getLogger("phasetrain")
TransitionHook = Callable[[Transition], Any]


@dataclasses.dataclass
class RecorderConfig:
    """The trainer-mirroring settings of a framework callback (see `PhaseTransitionTrainer`)."""

    log_dir: str | Path
    log_freq: int = 10
    track_gradients: bool = True
    track_hessian: bool = False
    hessian_method: str = "diagonal"
    hessian_freq: int = 100
    hessian_k: int = 3
    hessian_batches: Sequence[tuple[Any, Any]] | None = None
    monitors: Sequence[Monitor] = ()
    watch_metrics: Sequence[str] = KEY_METRICS
    watch_window: int = 100
    on_phase_transition: TransitionHook | None = None

    def check(self) -> None:
        """Raise ValueError/TypeError naming the first bad argument."""
        if not isinstance(self.log_dir, (str, Path)):
            raise TypeError(f"log_dir must be a str or pathlib.Path, got {self.log_dir!r}")
        check.check_int("log_freq", self.log_freq)
        check.check_choice("hessian_method", self.hessian_method, check.HESSIAN_METHODS)
        check.check_int("hessian_freq", self.hessian_freq)
        check.check_int("hessian_k", self.hessian_k)
        check.check_int("watch_window", self.watch_window)
        check.check_metric_names("watch_metrics", self.watch_metrics)
        for index, monitor in enumerate(self.monitors):
            if not (hasattr(monitor, "should_run") and hasattr(monitor, "compute")):
                raise TypeError(f"monitors[{index}] must be a phasetrain Monitor (should_run, compute), got {monitor!r}")
        if self.on_phase_transition is not None and not callable(self.on_phase_transition):
            raise TypeError(f"on_phase_transition must be callable (transition) -> None, got {self.on_phase_transition!r}")


class RunRecorder:
    """Metric store, monitors, sinks and online detection of one run driven by a framework."""

    def __init__(self, config: RecorderConfig, framework: str) -> None:
        config.check()
        self.config, self.framework = config, framework
        self.log_dir = Path(config.log_dir)
        self.monitors: list[Monitor] = [WeightNormMonitor(freq=config.log_freq), *config.monitors]
        if config.track_hessian:
            self.monitors.append(HessianMonitor(method=config.hessian_method, freq=config.hessian_freq,
                                                k=config.hessian_k, batches=config.hessian_batches))
        self.history = MetricHistory()
        self.watcher = TransitionWatcher(config.watch_metrics, config.watch_window)
        self.window = StepAccumulator(torch.device("cpu"))
        self.counters: dict[str, Any] = {"step": 0, "epochs_run": 0, "wall_time_s": 0.0, "finished": False,
                                         "stopped_early": False, "stop_reason": None}
        self._jsonl: JsonlLogger | None = None
        self._started: float | None = None
        self._writes = rank() == 0
        if self._writes:
            prepare_log_dir(self.log_dir)  # a bad path fails when the callback is built, not at the first save

    # ------------------------------------------------------------------ run boundaries
    def start(self, device: torch.device) -> None:
        """Open `metrics.jsonl` (append; rank 0 only under DDP) and start the wall clock."""
        self._writes = rank() == 0
        if self.window.device != device:
            pending = self.window.state_dict()
            self.window.device = device
            self.window.load_state_dict(pending)
        if self._jsonl is None and self._writes:
            self._jsonl = JsonlLogger(self.log_dir / "metrics.jsonl")
        self._started = time.perf_counter()
        self.counters["finished"] = False

    def set_log_freq(self, log_freq: int) -> None:
        """Change the record interval (and the weight-norm monitor's) to the framework's own."""
        check.check_int("log_freq", log_freq)
        self.config.log_freq = self.monitors[0].freq = log_freq

    def save(self) -> Path:
        """Write `metrics.json` atomically (rank 0 only under DDP) and flush `metrics.jsonl`; returns
        the json path."""
        self._tick()
        path = self.log_dir / "metrics.json"
        if not self._writes:
            return path
        self.log_dir.mkdir(parents=True, exist_ok=True)
        save_metrics(path, self.history, self.meta())
        if self._jsonl is not None:
            self._jsonl.flush()
        return path

    def finish(self, stop_reason: str | None = None) -> Path:
        """End of the run (normal when `stop_reason` is None): final save, close the sinks."""
        self.counters["finished"] = stop_reason is None
        if stop_reason is not None:
            self.counters["stop_reason"] = stop_reason
        path = self.save()
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        self._started = None
        return path

    def _tick(self) -> None:
        if self._started is not None:
            now = time.perf_counter()
            self.counters["wall_time_s"] += now - self._started
            self._started = now

    # ------------------------------------------------------------------ recording
    def log_window(self, step: int, extra: dict[str, float]) -> dict[str, float]:
        """Record the means since the last record (one host sync) plus `extra` at `step`."""
        means, _ = self.window.read()
        record = {**means, **extra}
        self.record(step, record)
        return record

    def run_monitors(self, ctx: StepContext) -> None:
        """Run the monitors due at `ctx.step` and record what they return."""
        for monitor in self.monitors:
            if monitor.should_run(ctx.step):
                self.record(ctx.step, monitor.compute(ctx))

    def record(self, step: int, metrics: dict[str, float]) -> None:
        """Store `metrics` at `step`, stream them to metrics.jsonl, feed the online detectors.

        A metric already recorded at `step` or later (a second evaluation at the same step) keeps
        its first value: every curve's steps stay strictly increasing, as the detectors need.
        """
        metrics = {name: float(value) for name, value in metrics.items()
                   if value is not None and _last_step(self.history, name) < step}
        if not metrics:
            return
        self.history.log(step, metrics)
        self.counters["step"] = max(self.counters["step"], step)
        if self._jsonl is not None:
            self._jsonl.log(step, metrics)
        for transition in self.watcher.observe(step, metrics):
            LOGGER.info("phase transition in %s at step %s (%s, score %.3g)", transition.metric, transition.step,
                        transition.direction, transition.score)
            if self.config.on_phase_transition is not None:
                self.config.on_phase_transition(transition)

    # ------------------------------------------------------------------ reading back
    @property
    def transitions(self) -> list[Transition]:
        """Transitions the online detectors have confirmed so far, in the order found."""
        return list(self.watcher.found)

    def find_transitions(self, metric: str, window_size: int | None) -> list[Transition]:
        """Offline detection on the whole recorded `metric` (KeyError naming the recorded ones)."""
        check.check_int("window_size", window_size, allow_none=True)
        return detect_in_history(self.history, metric, window_size)

    def summary(self) -> dict[str, Any]:
        """`phasetrain.summary.training_summary` of what has been recorded."""
        return training_summary(self.history, self.meta())

    def meta(self) -> dict[str, Any]:
        """The run's meta data in `metrics.json`, with the keys the trainer writes."""
        config = self.config
        return {
            "total_training_steps": self.counters["step"],
            "epochs_run": self.counters["epochs_run"],
            "best_step": self._best_step(),
            "stopped_early": self.counters["stopped_early"],
            "stop_reason": self.counters["stop_reason"],
            "finished": self.counters["finished"],
            "wall_time_s": round(self.counters["wall_time_s"], 3),
            "log_dir": str(self.log_dir),
            "device": str(self.window.device),
            "framework": self.framework,
            "config": {"log_freq": config.log_freq, "track_gradients": config.track_gradients,
                       "track_hessian": config.track_hessian, "hessian_method": config.hessian_method,
                       "hessian_freq": config.hessian_freq},
            "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def _best_step(self) -> int | None:
        """Step of the lowest val_loss (train_loss when there is no validation), as the trainer reports."""
        for name in ("val_loss", "train_loss"):
            if name in self.history:
                values = self.history.values(name)
                if np.isfinite(values).any():
                    return int(self.history.steps(name)[int(np.nanargmin(values))])
        return None

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """History, open window, monitors, detectors and counters (tensors, numbers, lists only)."""
        return {
            "history": {k: {n: torch.from_numpy(a) for n, a in v.items()} for k, v in self.history.state_dict().items()},
            "window": self.window.state_dict(),
            "monitors": [m.state_dict() for m in self.monitors],
            "watcher": self.watcher.state_dict(),
            "counters": dict(self.counters),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.history.load_state_dict(state["history"])
        self.window.load_state_dict(state["window"])
        for monitor, monitor_state in zip(self.monitors, state["monitors"]):
            monitor.load_state_dict(monitor_state)
        self.watcher.load_state_dict(state["watcher"])
        self.counters.update(state["counters"])

    def restore_from_file(self, up_to_step: int) -> None:
        """Resume from the `metrics.json` already in `log_dir`: keep its records up to `up_to_step`
        (a checkpoint's step) and replay them into the online detectors without firing hooks."""
        path = self.log_dir / "metrics.json"
        if not path.is_file():
            return
        history, meta = load_metrics(path)
        kept = {name: {"steps": [int(s) for s in history.steps(name) if s <= up_to_step],
                       "values": [float(v) for s, v in zip(history.steps(name), history.values(name)) if s <= up_to_step]}
                for name in history.names()}
        self.history = MetricHistory.from_dict(kept)
        self.watcher = TransitionWatcher(self.config.watch_metrics, self.config.watch_window)
        for name in self.config.watch_metrics:
            if name in self.history:
                for step, value in zip(self.history.steps(name), self.history.values(name)):
                    self.watcher.observe(int(step), {name: float(value)})
        self.counters["step"] = up_to_step
        self.counters["epochs_run"] = int(meta.get("epochs_run") or 0)
        self.counters["wall_time_s"] = float(meta.get("wall_time_s") or 0.0)



def _last_step(history: MetricHistory, name: str) -> int:
    last = history.last_step(name)
    return -1 if last is None else last


class RecorderViews:
    """What both callbacks offer to read a run, over their `recorder` (the trainer's names)."""

    recorder: RunRecorder

    @property
    def history(self) -> MetricHistory:
        """The run's metric store (what metrics.json holds)."""
        return self.recorder.history

    @property
    def transitions(self) -> list[Transition]:
        """Transitions confirmed online so far."""
        return self.recorder.transitions

    def detect_phase_transitions(self, metric: str = "val_acc", window_size: int | None = 100) -> list[int]:
        """Global steps at which `metric` changes abruptly (offline detection over the whole run)."""
        return [t.step for t in self.recorder.find_transitions(metric, window_size)]

    def find_transitions(self, metric: str = "val_acc", window_size: int | None = 100) -> list[Transition]:
        """Full `Transition` records of `metric` (offline detection over the whole run)."""
        return self.recorder.find_transitions(metric, window_size)

    def get_training_summary(self) -> dict[str, Any]:
        """Final and best figures, step counts and detected transitions (as the trainer reports)."""
        return self.recorder.summary()

    def save_metrics(self) -> Path:
        """Write metrics.json now (atomically) and return its path."""
        return self.recorder.save()
