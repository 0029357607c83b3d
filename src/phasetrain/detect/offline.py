"""Offline detection of abrupt level changes in a whole training curve."""
from __future__ import annotations

import numpy as np

from phasetrain.detect.candidates import (
    DEFAULT_THRESHOLDS,
    MIN_CURVE_POINTS,
    Thresholds,
    scale_candidates,
    scans,
    select,
)
from phasetrain.detect.prepare import Curve, check_window_size, prepare_curve
from phasetrain.detect.robust import median7, noise_floor, noise_variance
from phasetrain.detect.transition import Transition

__all__ = ["Thresholds", "detect_in_curve", "detect_transitions"]


def detect_transitions(
    values: object,
    steps: object | None = None,
    window_size: float | None = None,
    *,
    scale: str = "auto",
    max_window: float | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> list[Transition]:
    """Find the abrupt changes of a 1-D training curve, sorted by step.

    values: shape (n,); NaN/inf are ignored. steps: strictly increasing global steps
    (default 1..n); spacing may be irregular. window_size (steps): the shortest stretch of
    curve over which a level is measured: the detector compares straight-line fits (or means,
    where a side is flat) of windows of window_size, 2*window_size, 4*window_size, ... steps
    on either side of a gap of the same length, so a change counts when it completes within
    about the gap and is fast against the trend on both sides. Windows hold at least 3
    records, so on sparse curves the smallest window is 3 recording intervals; a window_size
    above 1/8 of the curve's span is reduced to that. None: 1% of the span (at least 8
    intervals). max_window (steps): the largest window (so transitions up to about that
    long are found); None: as large as the curve allows. Spikes of up to 3 records are
    removed before fitting. scale: "log" analyses log(values) (losses spanning
    decades), "auto" picks log for positive curves whose values span a factor >= 10, except
    rising curves bounded by 1 (accuracies).
    Curves with fewer than 8 finite points return [].
    """
    window = check_window_size(window_size)
    max_window = check_window_size(max_window, "max_window")
    if not isinstance(thresholds, Thresholds):
        raise TypeError(f"thresholds must be a Thresholds, got {type(thresholds).__name__}")
    curve = prepare_curve(values, steps, scale)
    return detect_in_curve(curve, window, max_window, thresholds)


def detect_in_curve(
    curve: Curve, window: float | None, max_window: float | None, thresholds: Thresholds
) -> list[Transition]:
    """`detect_transitions` on a prepared curve."""
    t, y = curve.t, curve.y
    if t.size < MIN_CURVE_POINTS:
        return []
    smooth = median7(y)
    value_range = float(smooth.max() - smooth.min())
    if not value_range > 0:
        return []
    var = np.maximum(noise_variance(t, y), noise_floor(y, curve.log, curve.quantum, value_range))
    candidates = []
    for scan in scans(t, smooth, var, window, max_window):
        candidates.extend(scale_candidates(scan, value_range, thresholds))
    chosen = select(curve, smooth, candidates, [])
    return sorted((found for _, found in chosen), key=lambda tr: tr.step)


