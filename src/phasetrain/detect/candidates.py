"""The level-change machinery shared by the offline and online detectors.

Scales (`geometries`, `scans`), the thresholds a jump must clear (`Thresholds`,
`scale_candidates`), and the choice and measurement of transitions among candidates
(`select`, `widest`, `describe`).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from phasetrain.detect.prepare import Curve, step_type
from phasetrain.detect.scan import Geometry, ScaleScan, geometry, scan_scale
from phasetrain.detect.transition import Transition

MIN_SIDE_POINTS = 3  # points a side window needs for a line fit with a usable residual
MIN_CURVE_POINTS = 2 * MIN_SIDE_POINTS + 2  # shorter curves hold no testable change: []
DEFAULT_WINDOW_FRACTION = 1 / 100  # window_size=None: 1% of the curve's span ...
DEFAULT_WINDOW_POINTS = 8  # ... but at least 8 recording intervals
MIN_QUANTA = 5  # a change of quantised values (accuracy on n examples) must span 5 grid steps
MAX_WINDOW_SPANS = 8  # a window_size above 1/8 of the span is reduced to it (else nothing fits)


@dataclass(frozen=True)
class Thresholds:
    """What a level change must clear to count as a transition (all must hold).

    min_score: jump / standard error (z-score against the local noise).
    min_relative_magnitude: jump / the curve's range (of the spike-filtered curve).
    min_abruptness: jump / how far the steeper side's trend moves over two windows.
    min_effect: jump / the scatter of the points about the side fits.
    """

    min_score: float = 8.0
    min_relative_magnitude: float = 0.05
    min_abruptness: float = 1.0
    min_effect: float = 2.0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise ValueError(f"Thresholds.{name} must be a finite number >= 0, got {value!r}")


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Candidate:
    """A centre bin of one scale whose jump clears every threshold."""

    scan: ScaleScan
    index: int
    score: float

    @property
    def step(self) -> float:
        return float(self.scan.centre_step(self.index))

    @property
    def reach(self) -> float:
        return self.scan.geometry.reach



def select(
    curve: Curve, smooth: np.ndarray, candidates: list[Candidate], prior: list[tuple[float, float]]
) -> list[tuple[Candidate, Transition]]:
    """Turn candidates (finest scale first, strongest first within a scale) into transitions.

    A candidate whose change lies within its reach of an accepted one (or of a `prior`
    (step, reach) pair) is the same change seen again, or two merged, and is dropped; the finest
    scale wins, which keeps close
    transitions apart. Each accepted one is then measured at the scale that sees all of it.
    Sorted step lists keep this O(C log C) in the number of candidates C.
    """
    as_step = step_type(curve.t)
    taken: list[float] = []  # accepted here, sorted; their reach is <= any later candidate's
    accepted: list[tuple[Candidate, Transition]] = []
    for cand in candidates:
        # an accepted change inside this candidate's gap is the change it sees: skip unmeasured
        if count_within(taken, cand.step, (cand.scan.geometry.gap + 0.5) * cand.scan.geometry.delta):
            continue
        found = describe(curve, smooth, cand, as_step)
        if found is None:
            continue
        # the centre of a candidate may sit anywhere in its gap; where the change is, is `found.step`
        if any(abs(found.step - step) <= max(cand.reach, reach) for step, reach in prior):
            continue
        if count_within(taken, found.step, cand.reach):
            continue
        accepted.append((cand, found))
        bisect.insort(taken, float(found.step))
    others = sorted(taken + [step for step, _ in prior])
    by_scale: dict[float, list[Candidate]] = {}
    for cand in candidates:
        by_scale.setdefault(cand.reach, []).append(cand)
    scales = []
    for reach, group in sorted(by_scale.items()):
        group = sorted(group, key=lambda c: c.step)
        scales.append((reach, [c.step for c in group], group))
    return [(cand, widest(curve, smooth, cand, found, scales, others, as_step)) for cand, found in accepted]


def count_within(sorted_steps: list[float], step: float, reach: float) -> int:
    """How many of `sorted_steps` lie within `reach` of `step` (inclusive)."""
    return bisect.bisect_right(sorted_steps, step + reach) - bisect.bisect_left(sorted_steps, step - reach)


def widest(
    curve: Curve,
    smooth: np.ndarray,
    cand: Candidate,
    found: Transition,
    scales: list[tuple[float, list[float], list[Candidate]]],
    others: list[float],
    as_step: type,
) -> Transition:
    """Re-measure a transition at the scale that sees all of it.

    The finest scale that detects a change separates neighbouring transitions best, but a
    change wider than its gap is seen only in part. Among the coarser candidates (`scales`:
    (reach, their steps, candidates sorted by step), finest first) at the same place whose windows hold
    no other transition (`others`: sorted accepted steps), take the finest one whose jump is
    within 10% of the largest.
    """
    pool = []
    for reach, steps, group in scales:
        if reach <= cand.reach:
            continue
        lo = bisect.bisect_left(steps, cand.step - cand.reach)
        hi = bisect.bisect_right(steps, cand.step + cand.reach)
        pool += [c for c in group[lo:hi] if count_within(others, c.step, c.reach) <= 1]
    if not pool:
        return found
    largest = max(abs(c.scan.jump[c.index]) for c in pool)
    if largest <= 1.1 * abs(cand.scan.jump[cand.index]):
        return found
    for c in pool:  # finest first
        if abs(c.scan.jump[c.index]) >= 0.9 * largest:
            wider = describe(curve, smooth, c, as_step)
            if wider is not None and wider.direction == found.direction:
                return wider
    return found


def geometries(window: float, spacing: float, span: float, n: int, max_window: float) -> list[Geometry]:
    """Scale layouts for windows h0, 2 h0, 4 h0, ... <= max(max_window, h0), finest first.

    h0 = window, at least MIN_SIDE_POINTS recording intervals. `span` and `n` (steps and
    points of the curve) only bound the number of bins.
    """
    h = max(window, MIN_SIDE_POINTS * spacing)
    layouts: list[Geometry] = []
    while not layouts or h <= max_window:
        geo = geometry(h, spacing, span, n, MIN_SIDE_POINTS)
        if not layouts or geo != layouts[-1]:
            layouts.append(geo)
        h *= 2
    return layouts


def finest_window(t: np.ndarray, window: float | None) -> tuple[float, float, float]:
    """(h0, span, spacing) in steps for a curve recorded at steps `t` (n >= 2): the finest
    window for `window_size=window` (None: 1% of the span, at least 8 intervals), at most
    1/8 of the span; the span; and the median recording interval."""
    span = float(t[-1] - t[0])
    spacing = float(np.median(np.diff(t)))
    if window is None:
        window = max(span * DEFAULT_WINDOW_FRACTION, DEFAULT_WINDOW_POINTS * spacing)
    return min(window, span / MAX_WINDOW_SPANS), span, spacing


def scans(t: np.ndarray, y: np.ndarray, var: np.ndarray, window: float | None, max_window: float | None):
    """Scans at every scale whose windows fit the curve (see `geometries`)."""
    window, span, spacing = finest_window(t, window)
    for geo in geometries(window, spacing, span, t.size, span if max_window is None else max_window):
        scan = scan_scale(t, y, var, geo, MIN_SIDE_POINTS)
        if scan is None:
            return
        yield scan


def scale_candidates(
    scan: ScaleScan, value_range: float, th: Thresholds, eligible: np.ndarray | None = None
) -> list[Candidate]:
    """The strongest centre of each run of centres that clear all thresholds (and are
    `eligible`, a mask over the centres, when given), strongest first."""
    jump = np.abs(scan.jump)
    score = jump / np.maximum(scan.se, 1e-12 * value_range)
    ok = (
        scan.valid
        & (score >= th.min_score)
        & (jump >= th.min_relative_magnitude * value_range)
        & (jump >= th.min_abruptness * scan.trend)
        & (jump >= th.min_effect * scan.scatter)
    )
    if eligible is not None:
        ok &= eligible
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return []
    # Within a run, centres whose windows are clean fit their lines to the noise level; a
    # window that reaches into the next change fits badly (and may even show a larger jump).
    # So the run's centre is the one with the best score discounted by the misfit.
    fit_score = score / np.maximum(1.0, scan.scatter / np.maximum(scan.noise, 1e-300))
    run_starts = np.flatnonzero(np.diff(idx, prepend=-2) > 1)
    best = np.maximum.reduceat(fit_score[idx], run_starts)
    picks = []
    for start, stop, top in zip(run_starts, np.append(run_starts[1:], idx.size), best):
        run = idx[start:stop]
        at = int(run[np.argmax(fit_score[run] >= top)])
        picks.append(Candidate(scan, at, float(score[at])))
    return sorted(picks, key=lambda c: -c.score)


def describe(curve: Curve, smooth: np.ndarray, cand: Candidate, as_step: type) -> Transition | None:
    """Locate the change around a candidate and measure it; None if it does not persist.

    Against the two fitted lines L (before) and R (after), each point's progress is
    f = (y - L) / (R - L). The change must persist: the median progress is near 0 over the
    left window and near 1 over the right one (a spike inside a window fails this).
    """
    scan, i = cand.scan, cand.index
    geo = scan.geometry
    t = curve.t
    lo, hi = np.searchsorted(t, [cand.step - geo.reach, cand.step + geo.reach], side="left")
    hi = max(hi, lo + 1)
    tt, yy = t[lo:hi], smooth[lo:hi]
    x = scan.to_x(tt) - scan.centre[i]
    before = scan.level_left[i] + scan.slope_left[i] * x
    after = scan.level_right[i] + scan.slope_right[i] * x
    jump = scan.jump[i]
    gap = after - before
    gap = np.where((np.sign(gap) == np.sign(jump)) & (np.abs(gap) >= 0.5 * abs(jump)), gap, jump)
    progress = (yy - before) / gap
    left, right = x <= -(geo.gap + 0.5), x >= geo.gap + 0.5
    if not (left.any() and right.any()):
        return None
    if abs(np.median(progress[left])) > 0.35 or abs(np.median(progress[right]) - 1) > 0.35:
        return None
    crossings = np.flatnonzero((progress[:-1] < 0.5) & (progress[1:] >= 0.5)) + 1
    if crossings.size:
        mid = int(crossings[np.argmin(np.abs(tt[crossings] - cand.step))])
    else:
        mid = int(np.argmin(np.abs(tt - cand.step)))
    early = np.flatnonzero(progress[:mid] <= 0.1)
    start = int(early[-1]) if early.size else 0
    late = np.flatnonzero(progress[mid:] >= 0.9)
    end = mid + int(late[0]) if late.size else tt.size - 1
    level_before = curve.to_values(before[start])
    level_after = curve.to_values(after[end])
    magnitude = abs(level_after - level_before)
    if magnitude < MIN_QUANTA * curve.quantum:
        return None
    largest = max(abs(level_before), abs(level_after))
    return Transition(
        step=as_step(tt[mid]),
        start_step=as_step(tt[start]),
        end_step=as_step(tt[end]),
        level_before=level_before,
        level_after=level_after,
        magnitude=magnitude,
        relative_magnitude=magnitude / largest if largest > 0 else 0.0,
        direction="up" if jump > 0 else "down",
        score=cand.score,
    )
