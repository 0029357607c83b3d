"""One scale of the level-change scan: two local line fits on either side of a gap.

At scale h (steps) the curve is binned into bins of width delta = h / BINS_PER_WINDOW.
For each centre bin k a line is fitted (least squares over the points, x = bin index)
to the `side` bins left of a gap of `gap` bins on either side of k, and another to the
`side` bins right of it. Both lines are extrapolated to k; their difference is the jump.
Because both sides are fitted with lines, a linear trend gives no jump, and a curved trend
(quadratic) gives none either to first order (the two one-sided fits err alike).
The gap lets a transition of up to about h steps fall between the windows.
Window sums are direct correlations with at most 8 taps, so one scale costs O(n + bins).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BINS_PER_WINDOW = 8


@dataclass(frozen=True)
class Geometry:
    """Bin layout of one scale: bin width (steps), bins per side window, gap bins per side."""

    delta: float
    side: int
    gap: int

    @property
    def reach(self) -> float:
        """Steps from a centre to the far edge of a side window."""
        return (self.gap + self.side + 0.5) * self.delta


def geometry(h: float, spacing: float, span: float, n: int, min_points: int) -> Geometry:
    """Layout for scale `h` steps on a curve of `n` points over `span` steps, recorded every
    `spacing` steps (median). Bins are never finer than the spacing, nor more than 2n."""
    delta = max(h / BINS_PER_WINDOW, spacing, span / (2 * max(n, 1)))
    side = max(min_points, round(h / delta))
    return Geometry(delta=delta, side=side, gap=side // 2)


@dataclass(frozen=True)
class ScaleScan:
    """Per centre bin: the fitted lines either side, the jump and its uncertainties.

    centre: bin indices (int, shape (m,)); lines are y = level + slope * (x - centre) with
    x the continuous bin coordinate (t - t0) / delta - 0.5; slopes are per bin (0 where the
    side's mean is the better level estimate). trend: how far the steeper fitted side line moves over
    two windows (the trend a jump must beat). se: standard error of the jump from the local
    noise; scatter: the larger residual sigma of the two side fits; noise: the larger local
    noise sigma of the two sides.
    """

    geometry: Geometry
    t0: float
    centre: np.ndarray
    level_left: np.ndarray
    slope_left: np.ndarray
    level_right: np.ndarray
    slope_right: np.ndarray
    trend: np.ndarray
    se: np.ndarray
    scatter: np.ndarray
    noise: np.ndarray
    valid: np.ndarray

    @property
    def jump(self) -> np.ndarray:
        return self.level_right - self.level_left

    def centre_step(self, i: int | np.ndarray) -> np.ndarray:
        return self.t0 + (self.centre[i] + 0.5) * self.geometry.delta

    def to_x(self, t: np.ndarray) -> np.ndarray:
        return (t - self.t0) / self.geometry.delta - 0.5


def window_sums(a: np.ndarray, size: int, power: int = 0) -> np.ndarray:
    """sum_j a[i + j] * j**power over j = 0..size-1, for every start i: shape (a.size - size + 1,).

    A direct correlation with a kernel of `size` (<= 8) taps: every sum is formed from its own
    window only, so unlike differences of prefix sums it loses no precision on long curves
    (integer inputs stay exact integers).
    """
    kernel = np.arange(size, dtype=a.dtype) ** power
    return np.convolve(a, kernel[::-1], mode="valid")


def scan_scale(
    t: np.ndarray, y: np.ndarray, var: np.ndarray, geo: Geometry, min_points: int, origin: float | None = None
) -> ScaleScan | None:
    """Fit both sides at every centre bin of scale `geo`; None if the curve is too short.

    t, y, var: steps, values and per-point noise variance, shape (n,). min_points: records a
    side window needs. Bins are aligned to `origin` (default t[0]), so a part of a longer
    curve is binned as the whole curve would be. The window moments are local (about each
    centre, from per-window sums), so any length of curve is exact in its counts and keeps
    the precision of its values.
    """
    origin = float(t[0]) if origin is None else origin
    t0 = origin + np.floor((t[0] - origin) / geo.delta) * geo.delta
    k = ((t - t0) / geo.delta).astype(np.int64)
    bins = int(k[-1]) + 1
    reach = geo.gap + geo.side
    if bins < 2 * reach + 1:
        return None
    ref = 0.5 * (float(y.min()) + float(y.max()))  # values about mid-range: sums of squares keep their digits
    yc = y - ref
    count = np.bincount(k, minlength=bins).astype(np.int64)
    sum_y = np.bincount(k, weights=yc, minlength=bins)
    c0, c1, c2 = (window_sums(count, geo.side, p) for p in (0, 1, 2))
    y0, y1 = window_sums(sum_y, geo.side), window_sums(sum_y, geo.side, 1)
    yy0 = window_sums(np.bincount(k, weights=yc * yc, minlength=bins), geo.side)
    v0 = window_sums(np.bincount(k, weights=var, minlength=bins), geo.side)
    centres = bins - 2 * reach
    centre = np.arange(reach, bins - reach, dtype=np.int64)

    def fit(first: int):
        """Line fit of the side window whose first bin is `first` bins from each centre."""
        window = slice(reach + first, reach + first + centres)
        m = c0[window]
        sx = c1[window] + first * m  # moments about the centre bin (exact integers)
        sxx = c2[window] + 2 * first * c1[window] + first * first * m
        mf = np.maximum(m, 1).astype(np.float64)
        sy = y0[window]
        sxy = y1[window] + first * sy
        xbar, ybar = sx / mf, sy / mf
        cxx = sxx - sx.astype(np.float64) * xbar
        cxy = sxy - xbar * sy
        ok = (m >= min_points) & (cxx > 0)
        cxx = np.where(ok, cxx, 1.0)
        fitted = cxy / cxx
        ssr = np.maximum(yy0[window] - ybar * sy - fitted * cxy, 0.0)
        scatter2 = ssr / np.maximum(mf - 2, 1)
        noise2 = v0[window] / mf
        # The side's level at the centre: the line extrapolated (variance noise2 (1/m + xbar^2/cxx)),
        # or the side's mean when that has the smaller mean squared error (variance noise2/m plus
        # the squared bias (slope * xbar)^2 it risks), i.e. when the slope is within one standard
        # error of 0. Flat plateaus then get the full power of a mean.
        extrapolated = noise2 * (1.0 / mf + xbar * xbar / cxx)
        flat = noise2 / mf + (fitted * xbar) ** 2
        sloped = extrapolated <= flat
        slope = np.where(sloped, fitted, 0.0)
        level = ref + ybar - slope * xbar
        return level, slope, fitted, np.where(sloped, extrapolated, flat), scatter2, noise2, ok

    lv_l, sl_l, fit_l, var_l, sc_l, no_l, ok_l = fit(-reach)
    lv_r, sl_r, fit_r, var_r, sc_r, no_r, ok_r = fit(geo.gap + 1)

    return ScaleScan(
        geometry=geo,
        t0=t0,
        centre=centre,
        level_left=lv_l,
        slope_left=sl_l,
        level_right=lv_r,
        slope_right=sl_r,
        trend=np.maximum(np.abs(fit_l), np.abs(fit_r)) * (2 * geo.gap + geo.side),
        se=np.sqrt(var_l + var_r),
        scatter=np.sqrt(np.maximum(sc_l, sc_r)),
        noise=np.sqrt(np.maximum(no_l, no_r)),
        valid=ok_l & ok_r,
    )
