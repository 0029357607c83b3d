"""Offline detection of abrupt level changes in a whole training curve."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from phasetrain.detect.candidates import (
    DEFAULT_THRESHOLDS,
    MIN_CURVE_POINTS,
    Thresholds,
    finest_window,
    scale_candidates,
    scans,
    select,
)
from phasetrain.detect.prepare import Curve, check_scale, check_window_size, prepare_curve, step_type
from phasetrain.detect.regimes import (
    MIN_CYCLE_CHANGES,
    detect_regimes,
    merge_overlapping,
    recurring_changes,
    spike_trains,
)
from phasetrain.detect.robust import median7, noise_floor, noise_variance, range_floor
from phasetrain.detect.slopes import detect_slopes
from phasetrain.detect.transition import Transition

__all__ = ["KINDS", "LevelDetector", "Thresholds", "detect_in_curve", "detect_transitions"]

KINDS = ("level", "slope", "regime")
EARLY_SCORE_FACTOR = 2.0  # changes found only on the log-step axis clear twice min_score
EARLY_WINDOWS = 2  # ... and lie within 2 finest windows of the curve's start
EARLY_SPAN_WINDOWS = 16  # the log-step axis reads the first 16 finest windows of the curve


def detect_transitions(
    values: object,
    steps: object | None = None,
    window_size: float | None = None,
    *,
    scale: str = "auto",
    max_window: float | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    kinds: tuple[str, ...] | list[str] = ("level",),
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
    thresholds: apply to level changes. kinds: which kinds to report, any of "level",
    "slope" (kinks, see `slopes`) and "regime" (sustained oscillations, see `regimes`);
    with "regime", the level and slope changes inside a regime (its bumps) are part of it
    and not reported, and kinks at the corners of a level change are never reported.
    Curves with fewer than 8 finite points return [].
    """
    window = check_window_size(window_size)
    max_window = check_window_size(max_window, "max_window")
    if not isinstance(thresholds, Thresholds):
        raise TypeError(f"thresholds must be a Thresholds, got {type(thresholds).__name__}")
    kinds = check_kinds(kinds)
    curve = prepare_curve(values, steps, scale)
    return detect_in_curve(curve, window, max_window, thresholds, kinds)


def check_kinds(kinds: object) -> tuple[str, ...]:
    """`kinds` as a tuple of known kinds (at least one); raise otherwise."""
    if isinstance(kinds, str) or not isinstance(kinds, (tuple, list)) or not kinds:
        raise TypeError(f"kinds must be a non-empty tuple or list of {KINDS}, got {kinds!r}")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown kinds {unknown!r}; known kinds: {KINDS}")
    return tuple(kinds)


def detect_in_curve(
    curve: Curve,
    window: float | None,
    max_window: float | None,
    thresholds: Thresholds,
    kinds: tuple[str, ...] = ("level",),
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
    value_range = max(value_range, range_floor(float(y.min()), float(y.max()), curve.log, curve.quantum))
    candidates = []
    for scan in scans(t, smooth, var, window, max_window):
        candidates.extend(scale_candidates(scan, value_range, thresholds))
    levels = [found for _, found in select(curve, smooth, candidates, [])]
    early = early_levels(curve, smooth, var, levels, window, thresholds, value_range)
    levels = sorted(levels + early, key=lambda tr: tr.step)
    found = list(levels) if "level" in kinds else []
    if "slope" in kinds:
        found += [k for k in detect_slopes(curve, smooth, var, window, max_window) if not near_level(k, levels)]
    if "regime" in kinds:
        trains = spike_trains(curve, smooth, var, window)  # of short spikes, which the spike filter removed
        rest = y - level_steps(curve, levels)
        chains = recurring_changes(curve, smooth, rest, var, levels, window)
        regimes = explained_regimes(curve, rest, var, window, levels)
        # rough from the first record through changes that recur from a later start: the curve's
        # steep start (or a spike) ran into the windows that see the oscillation; the changes place it
        regimes = [r for r in regimes if r.start_step > t[0]
                   or not any(c.start_step > t[0] and c.start_step <= r.end_step for c in chains)]
        regimes += trains
        h0 = finest_window(t, window)[0]
        # a regime from the first record on is how the curve is, not a change: it only holds bumps
        inside = [(r.start_step + (h0 if r.start_step > t[0] else -h0), r.end_step) for r in regimes]
        # a regime of recurring changes holds them all, its first one too
        inside += [(r.start_step - h0, r.end_step) for r in chains]
        regimes = merge_overlapping(regimes + chains)  # one per regime
        found = [tr for tr in found if not any(lo < tr.step <= hi for lo, hi in inside)]
        found += [r for r in regimes if r.start_step > t[0]]
    return sorted(found, key=lambda tr: tr.step)


def early_levels(
    curve: Curve,
    smooth: np.ndarray,
    var: np.ndarray,
    levels: list[Transition],
    window: float | None,
    thresholds: Thresholds,
    value_range: float,
) -> list[Transition]:
    """Level changes near the curve's start, found on a log-step axis.

    On steps t the first window and a half cannot be tested (no window fits before them).
    Read on u = log(1 + (t - t0) / spacing) over the first 16 finest windows of the curve,
    early records are spread out and late ones packed, so a change at the 5th record has
    windows on both sides at the finer log scales. Kept: changes the step axis could not
    test (within two finest windows of the start) and did not find, that are abrupt in
    steps too (over at most as many steps as came before their midpoint: an exponential
    approach, abrupt on a log axis, is not) and clear twice the z-score threshold (early
    windows are short, and a strong early trend can hide in their noisy slopes).

    curve, smooth, var: the prepared curve, its spike-filtered values and noise variance
    (shape (n,)); levels: the changes found on the step axis; window: the finest window in
    steps (None: the default); thresholds: the level thresholds; value_range: the range the
    relative-magnitude test uses.
    """
    strict = replace(thresholds, min_score=EARLY_SCORE_FACTOR * thresholds.min_score)
    h0, _, spacing = finest_window(curve.t, window)
    # only the start is read: the records up to EARLY_SPAN_WINDOWS finest windows in
    n = max(int(np.searchsorted(curve.t, curve.t[0] + EARLY_SPAN_WINDOWS * h0, side="right")), MIN_CURVE_POINTS)
    t, y, smooth, var = curve.t[:n], curve.y[:n], smooth[:n], var[:n]
    u = np.log1p((t - t[0]) / spacing)
    axis = Curve(t=u, y=y, log=curve.log, quantum=curve.quantum)
    candidates = []
    for scan in scans(u, smooth, var, None, None):
        candidates.extend(scale_candidates(scan, value_range, strict))
    as_step = step_type(t)
    out = []
    for _, found in select(axis, smooth, candidates, []):
        at, lo, hi = (int(np.searchsorted(u, v)) for v in (found.step, found.start_step, found.end_step))
        step, start, end = (float(t[min(i, t.size - 1)]) for i in (at, lo, hi))
        if step - t[0] > EARLY_WINDOWS * h0 or end - start > step - t[0]:
            continue
        if any(abs(step - lv.step) <= max(end - start, h0, lv.end_step - lv.start_step) for lv in levels):
            continue
        out.append(replace(found, step=as_step(step), start_step=as_step(start), end_step=as_step(end)))
    return out


def explained_regimes(curve: Curve, rest: np.ndarray, var: np.ndarray, window: float | None,
                      levels: list[Transition]) -> list[Transition]:
    """Regimes that level changes do not explain: a staircase of a few steps is not an
    oscillation. A regime of the curve counts when the curve less its level changes (see
    `level_steps`) is rough there too, or when it holds at least MIN_CYCLE_CHANGES level
    changes (bumps read as steps); a regime of the curve less its level changes counts too.
    One that starts at the first record counts only when it holds MIN_CYCLE_CHANGES.
    rest: curve.y less its level changes, shape (n,)."""
    raw = detect_regimes(curve, var, window)
    of_rest = detect_regimes(replace(curve, y=rest), var, window)

    def meets(a: Transition, b: Transition) -> bool:
        return a.start_step <= b.end_step and b.start_step <= a.end_step

    def holds_cycles(r: Transition) -> bool:
        return sum(r.start_step <= lv.step <= r.end_step for lv in levels) >= MIN_CYCLE_CHANGES

    kept = [r for r in raw if any(meets(r, o) for o in of_rest) or holds_cycles(r)]
    kept += [o for o in of_rest if not any(meets(o, r) for r in raw)]
    # rough from the first record: how the curve is (a cycle), or the steep start of a decay;
    # it stands for no change and only hides bumps read as level changes, so it needs some
    return [r for r in kept if r.start_step > curve.t[0] or holds_cycles(r)]


def level_steps(curve: Curve, levels: list[Transition]) -> np.ndarray:
    """The level changes as a curve on the analysis scale, shape (n,): 0 before the first,
    each a linear ramp from its start_step to its end_step by its jump."""
    to_scale = np.log if curve.log else np.asarray
    out = np.zeros(curve.t.size)
    for tr in levels:
        jump = float(to_scale(tr.level_after) - to_scale(tr.level_before))
        span = max(float(tr.end_step - tr.start_step), 1e-12)
        out += jump * np.clip((curve.t - tr.start_step) / span, 0.0, 1.0)
    return out


def near_level(kink: Transition, levels: list[Transition]) -> bool:
    """True when a kink lies on a level change or within its own window of one's start or end
    (the corners of a sigmoid or a step are bends too)."""
    reach = kink.end_step - kink.start_step
    return any(lv.start_step - reach <= kink.step <= lv.end_step + reach for lv in levels)


class LevelDetector:
    """`detect_transitions` with fixed settings, as a `Detector` (see `base`).

    window_size, scale, max_window, thresholds, kinds: as for `detect_transitions`.
    """

    def __init__(
        self,
        window_size: float | None = None,
        *,
        scale: str = "auto",
        max_window: float | None = None,
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
        kinds: tuple[str, ...] | list[str] = ("level",),
    ) -> None:
        self.window_size = check_window_size(window_size)
        self.max_window = check_window_size(max_window, "max_window")
        self.scale = check_scale(scale)
        if not isinstance(thresholds, Thresholds):
            raise TypeError(f"thresholds must be a Thresholds, got {type(thresholds).__name__}")
        self.thresholds = thresholds
        self.kinds = check_kinds(kinds)

    def detect(self, values: object, steps: object | None = None) -> list[Transition]:
        """The transitions of one curve (values shape (n,), steps shape (n,) or None: 1..n)."""
        return detect_transitions(
            values, steps, self.window_size, scale=self.scale, max_window=self.max_window,
            thresholds=self.thresholds, kinds=self.kinds,
        )


