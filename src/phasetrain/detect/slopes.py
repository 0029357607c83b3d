"""Changes of slope (kinks): a trend that bends abruptly, such as sharpness levelling off.

At the edge of stability the top Hessian eigenvalue climbs (progressive sharpening) and then
stops at 2/lr: its level does not jump, its slope does. At scale h (steps) the curve is
binned into bins of h/8 steps and four adjacent windows of h steps are fitted with lines
(least squares in the points' own steps): LL, L | R, RR around a boundary. The bend is
d = slope(R) - slope(L). It counts when all of these hold:

- score: |d| / SE(d) >= 8, with SE from the scatter of the points about the two fits (so
  bumps and correlated noise, which a white-noise estimate would miss, widen it);
- effect: |d| * h >= 5% of the curve's range, and >= 2 * that scatter (the bend moves the
  curve visibly within one window);
- abrupt: |d| >= 2 * |slope(L) - slope(LL)| and >= 2 * |slope(RR) - slope(R)| (a smooth
  curved trend bends as much between every pair of neighbouring windows; a kink bends
  at one boundary only);
- continuous: the two fits meet at the boundary within |d| * h / 2 (else it is a level change).

Scales double from the finest window up to a quarter of the curve; the finest scale that sees
a bend locates it and hides coarser views of it within two windows.
"""
from __future__ import annotations

import numpy as np

from phasetrain.detect.candidates import MIN_SIDE_POINTS, finest_window
from phasetrain.detect.prepare import Curve, step_type
from phasetrain.detect.scan import geometry, window_sums
from phasetrain.detect.transition import Transition

MIN_SLOPE_SCORE = 8.0
MIN_SLOPE_RELATIVE = 0.05
MIN_SLOPE_ABRUPTNESS = 2.0
MIN_SLOPE_EFFECT = 2.0
WINDOWS_PER_SCAN = 4  # LL, L, R, RR: a scale needs 4 windows of the curve


def window_fits(t: np.ndarray, y: np.ndarray, var: np.ndarray, delta: float, side: int, t0: float) -> dict:
    """Line fits of every run of `side` consecutive bins of width `delta` steps (bins start at t0).

    Per window start bin i (shape (bins - side + 1,)): m (records), xbar and cxx (position
    and spread of the records, in bins from bin i, from their exact steps), ybar, slope (per
    bin), scatter2 (residual variance about the line) and noise2 (mean noise variance).
    """
    x = (t - t0) / delta
    k = x.astype(np.int64)
    u = x - k
    bins = int(k[-1]) + 1
    count = np.bincount(k, minlength=bins).astype(np.int64)

    def per_bin(w: np.ndarray) -> np.ndarray:
        return np.bincount(k, weights=w, minlength=bins)

    ref = 0.5 * (float(y.min()) + float(y.max()))
    yc = y - ref
    u1, u2, sy, uy, yy, v = (per_bin(w) for w in (u, u * u, yc, u * yc, yc * yc, var))
    m = window_sums(count, side)
    sx = window_sums(count, side, 1) + window_sums(u1, side)
    sxx = window_sums(count, side, 2) + 2 * window_sums(u1, side, 1) + window_sums(u2, side)
    s_y = window_sums(sy, side)
    sxy = window_sums(sy, side, 1) + window_sums(uy, side)
    mf = np.maximum(m, 1).astype(np.float64)
    xbar, ybar = sx / mf, s_y / mf
    cxx = sxx - sx * xbar
    ok = (m >= MIN_SIDE_POINTS) & (cxx > 1e-12 * side * side * mf)
    cxx = np.where(ok, cxx, 1.0)
    cxy = sxy - xbar * s_y
    slope = cxy / cxx
    ssr = np.maximum(window_sums(yy, side) - ybar * s_y - slope * cxy, 0.0)
    return {
        "m": m, "ok": ok, "xbar": xbar, "cxx": cxx, "ybar": ybar + ref, "slope": slope,
        "scatter2": ssr / np.maximum(mf - 2, 1), "noise2": window_sums(v, side) / mf,
    }


def detect_slopes(
    curve: Curve, smooth: np.ndarray, var: np.ndarray, window: float | None, max_window: float | None
) -> list[Transition]:
    """The kinks of a prepared curve, sorted by step (see the module docstring).

    curve: the validated curve (its steps t and analysis-scale values); smooth: its spike-
    filtered values, shape (n,); var: per-point noise variance, shape (n,); window,
    max_window: finest and largest window in steps (None: as for level changes / a quarter
    of the curve). Returned transitions have kind="slope"; level_before/level_after are the
    slopes in value units per step (log units per step on a log scale).
    """
    t = curve.t
    if t.size < 4 * MIN_SIDE_POINTS:
        return []
    value_range = float(smooth.max() - smooth.min())
    if not value_range > 0:
        return []
    h, span, spacing = finest_window(t, window)
    largest = span / WINDOWS_PER_SCAN if max_window is None else min(max_window, span / WINDOWS_PER_SCAN)
    h = max(h, MIN_SIDE_POINTS * spacing)
    accepted: list[tuple[float, float, Transition]] = []  # (boundary step, reach, transition)
    while h <= largest:
        geo = geometry(h, spacing, span, t.size, MIN_SIDE_POINTS)
        for at, found in scale_kinks(curve, smooth, var, geo.delta, geo.side, value_range):
            reach = 2 * geo.side * geo.delta
            if not any(abs(at - other) <= max(reach, r) for other, r, _ in accepted):
                accepted.append((at, reach, found))
        h *= 2
    return sorted((found for _, _, found in accepted), key=lambda tr: tr.step)


def scale_kinks(
    curve: Curve, smooth: np.ndarray, var: np.ndarray, delta: float, side: int, value_range: float
) -> list[tuple[float, Transition]]:
    """(boundary step, transition) of the strongest boundary of each run that passes every test.

    curve, smooth, var: as for `detect_slopes`; delta: bin width in steps; side: bins per
    window (a window is side * delta steps); value_range: the range of the filtered curve.
    """
    t = curve.t
    t0 = float(t[0])
    fits = window_fits(t, smooth, var, delta, side, t0)
    n_windows = fits["m"].size
    c = np.arange(2 * side, n_windows - side)  # boundary bins: LL, L, R, RR all inside
    if c.size == 0:
        return []
    ll, left, right, rr = c - 2 * side, c - side, c, c + side
    slope = fits["slope"]
    d = slope[right] - slope[left]
    spread2 = np.maximum(fits["scatter2"], fits["noise2"])
    se = np.sqrt(spread2[left] / fits["cxx"][left] + spread2[right] / fits["cxx"][right])
    score = np.abs(d) / np.maximum(se, 1e-12 * value_range)
    at_left = fits["ybar"][left] + slope[left] * (side - fits["xbar"][left])
    at_right = fits["ybar"][right] - slope[right] * fits["xbar"][right]
    bend = np.abs(d) * side  # how far the bend moves the curve over one window
    ok = (
        fits["ok"][ll] & fits["ok"][left] & fits["ok"][right] & fits["ok"][rr]
        & (score >= MIN_SLOPE_SCORE)
        & (bend >= MIN_SLOPE_RELATIVE * value_range)
        & (bend >= MIN_SLOPE_EFFECT * np.sqrt(np.maximum(fits["scatter2"][left], fits["scatter2"][right])))
        & (np.abs(d) >= MIN_SLOPE_ABRUPTNESS * np.abs(slope[left] - slope[ll]))
        & (np.abs(d) >= MIN_SLOPE_ABRUPTNESS * np.abs(slope[rr] - slope[right]))
        & (np.abs(at_right - at_left) <= 0.5 * bend)
    )
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return []
    as_step = step_type(t)
    found = []
    run_starts = np.flatnonzero(np.diff(idx, prepend=-2) > 1)
    for start, stop in zip(run_starts, np.append(run_starts[1:], idx.size)):
        run = idx[start:stop]
        i = int(run[np.argmax(score[run])])
        boundary = t0 + c[i] * delta
        at = min(int(np.searchsorted(t, boundary)), t.size - 1)
        lo = max(int(np.searchsorted(t, boundary - side * delta / 2, side="right")) - 1, 0)
        hi = min(int(np.searchsorted(t, boundary + side * delta / 2)), t.size - 1)
        before, after = slope[left[i]] / delta, slope[right[i]] / delta
        largest = max(abs(before), abs(after))
        found.append((boundary, Transition(
            step=as_step(t[at]),
            start_step=as_step(t[lo]),
            end_step=as_step(t[hi]),
            level_before=float(before),
            level_after=float(after),
            magnitude=float(abs(after - before)),
            relative_magnitude=float(abs(after - before) / largest) if largest > 0 else 0.0,
            direction="up" if d[i] > 0 else "down",
            score=float(score[i]),
            kind="slope",
        )))
    return found
