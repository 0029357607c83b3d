"""One scale of the level-change scan: two local line fits on either side of a gap.

At scale h (steps) the curve is binned into bins of width delta = h / BINS_PER_WINDOW.
For each centre bin k a line is fitted (least squares over the points, x = bin index)
to the `side` bins left of a gap of `gap` bins on either side of k, and another to the
`side` bins right of it. Both lines are extrapolated to k; their difference is the jump.
Because both sides are fitted with lines, a linear trend gives no jump, and a curved trend
(quadratic) gives none either to first order (the two one-sided fits err alike).
The gap lets a transition of up to about h steps fall between the windows.
All window sums come from prefix sums, so one scale costs O(n + bins).
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
    side = max(min_points, int(round(h / delta)))
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


def _prefix(a: np.ndarray) -> np.ndarray:
    out = np.zeros(a.size + 1, dtype=a.dtype)
    np.cumsum(a, out=out[1:])
    return out


def scan_scale(
    t: np.ndarray, y: np.ndarray, var: np.ndarray, geo: Geometry, min_points: int, origin: float | None = None
) -> ScaleScan | None:
    """Fit both sides at every centre bin of scale `geo`; None if the curve is too short.

    Bins are aligned to `origin` (default t[0]), so a part of a longer curve is binned as
    the whole curve would be.
    """
    origin = float(t[0]) if origin is None else origin
    t0 = origin + np.floor((t[0] - origin) / geo.delta) * geo.delta
    k = ((t - t0) / geo.delta).astype(np.int64)
    bins = int(k[-1]) + 1
    reach = geo.gap + geo.side
    if bins < 2 * reach + 1:
        return None
    # integer moments are exact (so differences of prefix sums lose nothing) while they fit int64
    exact = t.size * float(bins) ** 2 < 2.0**62
    x = np.arange(bins, dtype=np.int64 if exact else np.float64)
    count = np.bincount(k, minlength=bins).astype(x.dtype)
    pc, pcx, pcxx = _prefix(count), _prefix(count * x), _prefix(count * x * x)
    sum_y = np.bincount(k, weights=y, minlength=bins)
    py, pxy = _prefix(sum_y), _prefix(sum_y * x)
    pyy = _prefix(np.bincount(k, weights=y * y, minlength=bins))
    pv = _prefix(np.bincount(k, weights=var, minlength=bins))
    centre = np.arange(reach, bins - reach, dtype=x.dtype)

    def fit(lo: np.ndarray, hi: np.ndarray):
        m = pc[hi] - pc[lo]
        sx = pcx[hi] - pcx[lo] - centre * m  # moments about the centre bin
        sxx = pcxx[hi] - pcxx[lo] - 2 * centre * (pcx[hi] - pcx[lo]) + centre * centre * m
        mf = np.maximum(m, 1).astype(np.float64)
        sy = py[hi] - py[lo]
        sxy = pxy[hi] - pxy[lo] - centre * sy
        xbar, ybar = sx / mf, sy / mf
        cxx = sxx - sx.astype(np.float64) * xbar
        cxy = sxy - xbar * sy
        ok = (m >= min_points) & (cxx > 0)
        cxx = np.where(ok, cxx, 1.0)
        fitted = cxy / cxx
        ssr = np.maximum(pyy[hi] - pyy[lo] - ybar * sy - fitted * cxy, 0.0)
        scatter2 = ssr / np.maximum(mf - 2, 1)
        noise2 = (pv[hi] - pv[lo]) / mf
        # The side's level at the centre: the line extrapolated (variance noise2 (1/m + xbar^2/cxx)),
        # or the side's mean when that has the smaller mean squared error (variance noise2/m plus
        # the squared bias (slope * xbar)^2 it risks), i.e. when the slope is within one standard
        # error of 0. Flat plateaus then get the full power of a mean.
        extrapolated = noise2 * (1.0 / mf + xbar * xbar / cxx)
        flat = noise2 / mf + (fitted * xbar) ** 2
        sloped = extrapolated <= flat
        slope = np.where(sloped, fitted, 0.0)
        level = ybar - slope * xbar
        return level, slope, fitted, np.where(sloped, extrapolated, flat), scatter2, noise2, ok

    lv_l, sl_l, fit_l, var_l, sc_l, no_l, ok_l = fit(centre - reach, centre - geo.gap)
    lv_r, sl_r, fit_r, var_r, sc_r, no_r, ok_r = fit(centre + geo.gap + 1, centre + reach + 1)

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
