"""A run's settings, written once: `RecordingConfig` (what every front end records), checked when
built (the generic checks are `phasetrain.run.checks`). The native trainer extends it with the
loop's own settings (`phasetrain.loop.config`)."""
from __future__ import annotations

import dataclasses
import difflib
import re
import warnings
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from phasetrain.run.checks import (
    check_choice,
    check_fraction_of_time,
    check_int,
    check_metric_names,
)
from phasetrain.run.summary import KEY_METRICS


def default_log_dir() -> Path:
    """`runs/run_<YYYYmmdd-HHMMSS>`: where a run goes when no `log_dir` is given."""
    return Path("runs") / datetime.now().strftime("run_%Y%m%d-%H%M%S")


def jsonable_setting(value: Any) -> Any:
    """A setting as the meta stores it: JSON scalars and lists as they are, objects by class name."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [jsonable_setting(item) for item in value]
    if callable(value) and hasattr(value, "__qualname__"):
        return value.__qualname__
    return type(value).__name__


# Watched names: a name that no built-in metric, monitor or callback ever records is watched in vain,
# so `check_watch_metrics` warns (it does not refuse: a callback may `log_metrics` any name, and a user
# monitor's names are only known once it has run) and suggests the closest known name.
BUILT_IN_METRICS = (
    "train_loss", "train_acc", "grad_norm", "lr", "epoch", "weight_norm", "val_loss", "val_acc",
    "nonfinite_skipped", "hessian_diag_mean", "hessian_diag_mean_stderr", "hessian_diag_std",
    "hessian_diag_std_stderr", "hessian_diag_max", "hessian_trace", "hessian_eos_ratio",
)
HESSIAN_EIGENVALUE = re.compile(r"^hessian_eig_[1-9]\d*$")  # hessian_eig_1 ... hessian_eig_k


def is_built_in_metric(name: str) -> bool:
    """True for a name phasetrain's loop or its built-in monitors record."""
    return name in BUILT_IN_METRICS or HESSIAN_EIGENVALUE.match(name) is not None


def check_watch_metrics(watch_metrics: Sequence[str], extra_names: Iterable[str] = ()) -> list[str]:
    """Warn (UserWarning) about each watched name that phasetrain does not record, with a did-you-mean.

    Args:
        watch_metrics: the metric names to watch for transitions, as passed to the trainer.
        extra_names: further names known to be recorded (user monitors' or logged metrics' names).

    Returns the names warned about. A name the user's own code records is fine: pass it in
    `extra_names`, or ignore the warning.
    """
    known = [*BUILT_IN_METRICS, "hessian_eig_1", *extra_names]
    unknown = [name for name in watch_metrics if not is_built_in_metric(name) and name not in known]
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else f"; phasetrain records: {', '.join(BUILT_IN_METRICS)}"
        warnings.warn(f"watch_metrics names {name!r}, which phasetrain does not record: it is watched only if a "
                      f"monitor or callback logs it{hint}", UserWarning, stacklevel=2)
    return unknown


def optimizer_settings(optimizer: Any) -> dict[str, Any]:
    """An optimizer's class and the hyperparameters of its first parameter group (lr, momentum,
    weight_decay, betas, ...), as JSON values: what `phasetrain compare --by weight_decay` reads.
    Under a scheduler, `lr` is the rate the schedule started from (`initial_lr`), not its position."""
    group = optimizer.param_groups[0]
    settings: dict[str, Any] = {"class": type(optimizer).__name__}
    for name, value in group.items():
        if name not in ("params", "initial_lr") and (value is None or isinstance(value, (bool, int, float, str,
                                                                                             tuple, list))):
            settings[name] = jsonable_setting(value)
    if "initial_lr" in group:
        settings["lr"] = jsonable_setting(group["initial_lr"])
    return settings


@dataclasses.dataclass
class RecordingConfig:
    """What a run records and where: the settings every front end shares (the trainer, the
    Lightning and Hugging Face callbacks, a hand-written loop). Checked when built; stored in
    `metrics.json`'s meta under "config"."""

    log_dir: str | Path | None = None
    """The run folder (created; must be writable). None: `runs/run_<timestamp>`."""
    log_freq: int = 10
    """Steps between training records (loss, accuracy, gradient and weight norms, lr)."""
    track_gradients: bool = True
    """Record `grad_norm`: the global L2 norm of all gradients, before clipping, per update."""
    track_hessian: bool = False
    """Run the Hessian monitor every `hessian_freq` steps."""
    hessian_method: str = "diagonal"
    """"diagonal": hessian_diag_mean/std/max and hessian_trace; "eigenvalues": hessian_eig_1..k
    (and hessian_eos_ratio for SGD)."""
    hessian_freq: int = 100
    """Steps between curvature measurements."""
    hessian_k: int = 3
    """Eigenvalues recorded with hessian_method="eigenvalues"."""
    hessian_budget: float | None = None
    """A fraction of training wall time (e.g. 0.05) curvature may take: the monitor then picks its
    own steps, spending only the budget earned so far, all of it while the watched metrics move and
    half on plateaus, at least `hessian_freq` steps apart (`phasetrain.monitors.budget`).
    None: every `hessian_freq` steps."""
    hessian_batches: Sequence[Any] | None = None
    """Fixed curvature batches [(inputs, targets), ...] (averaged); None: the batch of the first measured update."""
    monitors: Sequence[Any] = ()
    """Extra `phasetrain.Monitor` objects, run at the steps they choose."""
    loggers: Sequence[Any] | str | None = ("jsonl",)
    """Metric streams besides metrics.json: "jsonl", "csv", "tensorboard", or objects with
    log(step, metrics), flush(), close()."""
    keep_last_checkpoints: int | None = None
    """Keep only the newest K step checkpoints (best_model.pt and final_model.pt are always kept)."""
    watch_metrics: Sequence[str] = KEY_METRICS
    """Metrics the online detector watches (on_phase_transition fires for their transitions)."""
    watch_detector: Any = None
    """Another online detector for the watched metrics: a factory `(window_steps, metric) ->
    StreamDetector` (`update(step, value) -> [Transition]`, `state_dict`, `load_state_dict`).
    None: phasetrain's OnlineDetector."""
    overwrite: bool = False
    """A new run in a folder that holds another run's files: False refuses (naming the ways out);
    True deletes that run's files first (all of them, never other files)."""
    watch_window: int | None = None
    """The online detector's smallest window in steps (at least 10 records of a metric). None: the
    automatic window of offline detection, 1% of the planned run (100 steps when the length of the
    run is not known in advance, as in a hand-written loop)."""
    watch_budget: float | None = 0.01
    """The largest fraction of wall time online detection may take. A check costs about a
    millisecond whatever the step time; on loops of sub-millisecond steps records are held back
    and checked together, which confirms a change later (in steps) but finds the same changes.
    None: every record is checked at the full cadence (about four times a window)."""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ValueError/TypeError naming the first bad setting, its value and what is allowed."""
        from phasetrain.monitors.hessian import METHODS
        from phasetrain.run.files import check_log_dir
        from phasetrain.run.streams import check_logger_spec

        if self.log_dir is not None:
            check_log_dir(self.log_dir)
        if self.watch_detector is not None and not callable(self.watch_detector):
            raise TypeError(f"watch_detector must be a factory (window_steps, metric) -> StreamDetector, "
                            f"got {self.watch_detector!r}")
        if not isinstance(self.overwrite, bool):
            raise TypeError(f"overwrite must be True or False, got {self.overwrite!r}")
        for name in ("log_freq", "hessian_freq", "hessian_k"):
            check_int(name, getattr(self, name))
        check_int("watch_window", self.watch_window, allow_none=True)
        check_int("keep_last_checkpoints", self.keep_last_checkpoints, allow_none=True)
        check_choice("hessian_method", self.hessian_method, tuple(METHODS))
        check_fraction_of_time("hessian_budget", self.hessian_budget)
        check_fraction_of_time("watch_budget", self.watch_budget)
        check_metric_names("watch_metrics", self.watch_metrics)
        check_watch_metrics(self.watch_metrics, [name for m in self.monitors for name in getattr(m, "names", ())])
        check_logger_spec(self.loggers)
        for index, monitor in enumerate(self.monitors):
            if not (hasattr(monitor, "should_run") and hasattr(monitor, "compute")):
                raise TypeError(f"monitors[{index}] must be a phasetrain Monitor (should_run, compute), "
                                f"got {monitor!r}")

    def to_meta(self) -> dict[str, Any]:
        """The settings as JSON values (objects by class name; curvature batches by count). The
        folder is not repeated here: the meta holds it as "log_dir"."""
        meta = {}
        for field in dataclasses.fields(self):
            if field.name == "log_dir":
                continue
            value = getattr(self, field.name)
            if field.name == "hessian_batches":
                value = None if value is None else len(value)
            meta[field.name] = jsonable_setting(value)
        return meta
