"""Input checks and the value transform (linear or log) applied before detection."""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import numpy as np

from phasetrain.detect.robust import quantum

SCALES = ("auto", "linear", "log")
# "auto" reads a curve on a log scale when it is positive and its robust spread
# (99th over 1st percentile) covers at least this factor, as losses do (see reads_as_log).
AUTO_LOG_RATIO = 10.0


@dataclass(frozen=True)
class Curve:
    """A validated curve: finite points only, on the analysis scale.

    t: steps, float64, strictly increasing, shape (n,). y: values on the analysis scale.
    log: True when y = log(values). quantum: the grid step of the values in their own units
    when they take few distinct levels (see `robust.quantum`), else 0.
    """

    t: np.ndarray
    y: np.ndarray
    log: bool
    quantum: float = 0.0

    def to_values(self, y: float) -> float:
        """Map a level on the analysis scale back to the curve's units."""
        return math.exp(y) if self.log else float(y)


def step_type(t: np.ndarray) -> type:
    """How steps `t` are reported in a `Transition`: `int` when every one is whole (optimizer
    steps), else `float` (epochs, tokens in millions, ...)."""
    return int if bool(np.all(t == np.round(t))) else float


def check_window_size(window_size: object, name: str = "window_size") -> float | None:
    """Return `window_size` as a float (steps), or None; raise for anything else."""
    if window_size is None:
        return None
    if isinstance(window_size, bool) or not isinstance(window_size, Real):
        raise TypeError(f"{name} must be a positive number of steps or None, got {window_size!r}")
    if not math.isfinite(window_size) or window_size <= 0:
        raise ValueError(f"{name} must be a positive, finite number of steps or None, got {window_size!r}")
    return float(window_size)


def check_scale(scale: object) -> str:
    """Return `scale` if it is one of SCALES; raise otherwise."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    return str(scale)


def check_steps_values(values: object, steps: object | None) -> tuple[np.ndarray, np.ndarray]:
    """Validate `values` (1-D, real) and `steps` (same length, finite, strictly increasing).

    Returns float64 arrays (t, y); `steps=None` means 1, 2, ..., n.
    """
    try:
        y = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"values must be a 1-D sequence of real numbers, got {type(values).__name__}") from None
    if y.ndim != 1:
        raise ValueError(f"values must be 1-D, got an array of shape {y.shape}")
    if steps is None:
        return np.arange(1, y.size + 1, dtype=np.float64), y
    try:
        t = np.asarray(steps, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"steps must be a 1-D sequence of real numbers, got {type(steps).__name__}") from None
    if t.ndim != 1 or t.size != y.size:
        raise ValueError(f"steps must be 1-D with one step per value ({y.size}), got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("steps must all be finite")
    if t.size > 1 and not np.all(np.diff(t) > 0):
        bad = int(np.argmin(np.diff(t) > 0))
        raise ValueError(
            f"steps must be strictly increasing, but steps[{bad}]={t[bad]:g} >= steps[{bad + 1}]={t[bad + 1]:g}"
        )
    return t, y


def prepare_curve(values: object, steps: object | None, scale: str) -> Curve:
    """Validate the input, drop non-finite values and put the curve on its analysis scale."""
    scale = check_scale(scale)
    t, y = check_steps_values(values, steps)
    keep = np.isfinite(y)
    t, y = t[keep], y[keep]
    grid = quantum(y)
    use_log = scale == "log" or (scale == "auto" and reads_as_log(y))
    if use_log:
        if y.size and y.min() <= 0:
            raise ValueError(f"scale='log' needs positive values, got a minimum of {y.min():g}")
        y = np.log(y)
    return Curve(t=t, y=y, log=use_log, quantum=grid)


def reads_as_log(y: np.ndarray, min_ratio: float = AUTO_LOG_RATIO) -> bool:
    """True for positive curves spanning a factor >= min_ratio (robustly), such as losses,
    except rising curves bounded by 1 (accuracies), whose changes people read linearly."""
    if y.size < 2 or y.min() <= 0:
        return False
    low, high = np.percentile(y, [1.0, 99.0])
    quarter = max(1, y.size // 4)
    rising_fraction = y.max() <= 1 and np.median(y[-quarter:]) > np.median(y[:quarter])
    return bool(high >= min_ratio * low and not rising_fraction)
