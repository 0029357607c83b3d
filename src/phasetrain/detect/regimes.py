"""Regimes: a sustained oscillation (edge-of-stability bumps, loss spikes that keep coming).

A regime is one event, however many bumps it holds. Its signature is roughness: at a lag of
l records the third difference d_i = y[i+3l] - 3 y[i+2l] + 3 y[i+l] - y[i] cancels any
quadratic trend (and nearly cancels a smooth curved one, whose curvature changes slowly),
has variance 20 sigma^2 under white noise of variance sigma^2, and swings by several bump
heights where bumps of about 2-4 l records (or spikes) keep coming. Over windows of 8 l
records the variance of d about its window mean, against 20 sigma^2 of the local noise, is
the roughness.

A stretch is a regime at lag l when, over at least 3 windows (24 l records):
- the roughness is >= 9 (d swings 3x more than white noise would make it);
- the RMS swing of d is >= 5% of the curve's range (visible bumps, not texture);
- it holds a chain of at least 6 excursions (runs of records beyond 3 noise sigmas on one
  side of the curve's running mean over a window: bumps, dips, spikes), each within a
  window of the previous one; a level step or a bend of the trend makes one or two, three
  alternating steps four.
Lags double from an eighth of the finest window (at least 1 record) to 1/24 of the curve.
A stretch rough from the curve's first window on is returned starting at the first record:
that is no change (a curve that oscillates throughout, such as a cyclic schedule), and
`detect_transitions` does not report it, but it still holds the bumps inside it.
"""
from __future__ import annotations

import numpy as np

from phasetrain.detect.candidates import finest_window
from phasetrain.detect.prepare import Curve
from phasetrain.detect.transition import Transition

MIN_ROUGHNESS = 9.0
MIN_SWING_RELATIVE = 0.05
MIN_EVENTS = 6  # excursions in a chain: 3 alternating steps make 4, bumps and spikes many more
MIN_CYCLE_CHANGES = 4  # level changes alternating at a steady pace that make a slow cycle
WINDOW_LAGS = 8  # a roughness window holds 8 lags
MIN_WINDOWS = 3  # a regime lasts at least 3 roughness windows
ROUGH_SIGMAS = 5.0  # a regime starts and ends where d leaves its noise by this much
EXCURSION_SIGMAS = 3.0  # an excursion leaves the running mean by this many noise sigmas


def rolling_mean(a: np.ndarray, size: int) -> np.ndarray:
    """Mean of every run of `size` consecutive values, shape (a.size - size + 1,)."""
    prefix = np.concatenate([[0.0], np.cumsum(a)])
    return (prefix[size:] - prefix[:-size]) / size


def lag_stretches(y: np.ndarray, var: np.ndarray, lag: int, value_range: float) -> list[tuple[int, int, float, bool]]:
    """(first record, last record, roughness, ongoing) of each regime seen at `lag` records.

    y: values on the analysis scale, shape (n,); var: noise variance per record, shape (n,);
    lag: records between the points of the third difference; value_range: the range the
    swing test is relative to.
    """
    n = y.size
    size = WINDOW_LAGS * lag
    if n < 3 * lag + MIN_WINDOWS * size:
        return []
    # third differences: d[j] reads y[j], y[j + lag], y[j + 2 lag], y[j + 3 lag]
    d = y[3 * lag :] - 3 * y[2 * lag : -lag] + 3 * y[lag : -2 * lag] - y[: -3 * lag]
    noise = var[3 * lag :] + 9 * var[2 * lag : -lag] + 9 * var[lag : -2 * lag] + var[: -3 * lag]
    mean = rolling_mean(d, size)
    swing2 = np.maximum(rolling_mean(d * d, size) - mean * mean, 0.0)
    roughness = swing2 / np.maximum(rolling_mean(noise, size), 1e-300)
    rough = (roughness >= MIN_ROUGHNESS) & (swing2 >= (MIN_SWING_RELATIVE * value_range) ** 2)
    idx = np.flatnonzero(rough)  # window w covers d[w : w + size]
    if idx.size == 0:
        return []
    baseline = np.interp(np.arange(n), np.arange(size // 2, size // 2 + n - size + 1), rolling_mean(y, size))
    sigma = np.sqrt(var)
    found = []
    run_starts = np.flatnonzero(np.diff(idx, prepend=-2) > 1)
    for start, stop in zip(run_starts, np.append(run_starts[1:], idx.size)):
        first, last = int(idx[start]), int(idx[stop - 1])
        if last - first < (MIN_WINDOWS - 1) * size:
            continue
        lo, hi = first, last + size  # the d values these windows cover
        beyond = np.flatnonzero(np.abs(d[lo:hi]) > ROUGH_SIGMAS * np.sqrt(noise[lo:hi]))
        if beyond.size == 0:
            continue
        # a bump from record r to record s first shows in d[r - 3 lag] and last in d[s]
        begin = 0 if first == 0 else min(lo + int(beyond[0]) + 3 * lag, n - 1)
        end = min(lo + int(beyond[-1]), n - 1)
        if not has_excursion_chain(y[begin : end + 1] - baseline[begin : end + 1], sigma[begin : end + 1], lag, size):
            continue
        found.append((begin, end, float(np.median(roughness[first : last + 1])), last == mean.size - 1))
    return found


def has_excursion_chain(away: np.ndarray, sigma: np.ndarray, lag: int, size: int) -> bool:
    """True when `away` holds a chain of at least MIN_EVENTS excursions, each starting within
    `size` records of the previous one's end.

    away: values minus their running mean; sigma: noise sigma per record. An excursion is a
    run of records beyond EXCURSION_SIGMAS sigmas on one side, gaps of up to `lag` records
    within it allowed (noise flicker at the threshold does not split it).
    """
    big = np.flatnonzero(np.abs(away) > EXCURSION_SIGMAS * sigma)
    if big.size < MIN_EVENTS:
        return False
    sign = np.sign(away[big])
    new = np.ones(big.size, dtype=bool)
    new[1:] = (sign[1:] != sign[:-1]) | (np.diff(big) > lag)
    heads = np.flatnonzero(new)
    starts, ends = big[heads], big[np.append(heads[1:] - 1, big.size - 1)]
    linked = starts[1:] - ends[:-1] <= size
    # the longest run of consecutive links: MIN_EVENTS - 1 links chain MIN_EVENTS excursions
    longest, current = 0, 0
    for link in linked.tolist():
        current = current + 1 if link else 0
        longest = max(longest, current)
    return longest >= MIN_EVENTS - 1


def detect_regimes(curve: Curve, var: np.ndarray, window: float | None) -> list[Transition]:
    """The regimes of a prepared curve, sorted by start (see the module docstring).

    curve: the validated curve (raw values: spikes count); var: per-point noise variance,
    shape (n,); window: the finest window in steps (None: as for level changes). Returned
    transitions have kind="regime": step = start_step = the regime's first record, end_step
    its last (ongoing=True when that is the curve's last record); level_before is the
    median value over the window before it, level_after the median inside it; magnitude the
    RMS deviation of the values inside it from their median (on the analysis scale: log
    units for log curves);
    score the median roughness's square root (swing in noise sigmas).
    """
    t, y = curve.t, curve.y
    n = y.size
    if n < 16:
        return []
    value_range = float(np.percentile(y, 99) - np.percentile(y, 1))
    if not value_range > 0:
        return []
    h, _, spacing = finest_window(t, window)
    lag = max(1, round(h / spacing / WINDOW_LAGS))
    seen = []  # (first, last, roughness, ongoing, lag) at every lag
    while WINDOW_LAGS * MIN_WINDOWS * lag <= n:
        seen += [(*stretch, lag) for stretch in lag_stretches(y, var, lag, value_range)]
        lag *= 2
    spans: list[list] = []  # overlapping (or within a window of each other) stretches merged
    for first, last, rough, ongoing, lag in sorted(seen):
        if spans and first <= spans[-1][1] + WINDOW_LAGS * max(lag, spans[-1][4]):
            top = spans[-1]
            top[1], top[2], top[3], top[4] = max(top[1], last), max(top[2], rough), top[3] or ongoing, max(top[4], lag)
        else:
            spans.append([first, last, rough, ongoing, lag])
    integer_steps = bool(np.all(t == np.round(t)))
    as_step = int if integer_steps else float
    found = []
    for first, last, rough, ongoing, lag in spans:
        before = y[max(0, first - WINDOW_LAGS * lag) : first]
        inside = y[first : last + 1]
        level_before = curve.to_values(float(np.median(before if before.size else inside)))
        level_after = curve.to_values(float(np.median(inside)))
        swing = float(np.sqrt(max(np.mean((inside - np.median(inside)) ** 2), 0.0)))
        largest = max(abs(level_before), abs(level_after))
        found.append(Transition(
            step=as_step(t[first]),
            start_step=as_step(t[first]),
            end_step=as_step(t[-1] if ongoing else t[last]),
            level_before=level_before,
            level_after=level_after,
            magnitude=swing,
            relative_magnitude=abs(level_after - level_before) / largest if largest > 0 else 0.0,
            direction="up" if level_after > level_before else "down",
            score=float(np.sqrt(rough)),
            kind="regime",
            ongoing=bool(ongoing),
        ))
    return found


def cycles(levels: list[Transition], first_step: float, last_step: float) -> list[Transition]:
    """Level changes that keep alternating at a steady pace, as regimes (slow oscillations).

    An oscillation slower than the roughness windows can hold (fewer than about a dozen
    cycles in the curve) shows as level changes up, down, up, ... A run of at least
    MIN_CYCLE_CHANGES such changes, alternating in direction, whose gaps differ by at most a factor
    2, is one regime from the first change's start to the last one's end; it starts at
    `first_step` (no change) when the first change is within one gap of it, and is ongoing
    when the last is within one gap of `last_step`.
    """
    out = []
    i = 0
    while i < len(levels):
        j = i + 1
        while j < len(levels) and levels[j].direction != levels[j - 1].direction:
            gaps = [b.step - a.step for a, b in zip(levels[i : j + 1], levels[i + 1 : j + 1])]
            if max(gaps) > 2 * min(gaps):
                break
            j += 1
        run = levels[i:j]
        if len(run) >= MIN_CYCLE_CHANGES:
            gap = (run[-1].step - run[0].step) / (len(run) - 1)
            start = first_step if run[0].step - first_step <= gap else run[0].start_step
            ongoing = last_step - run[-1].step <= gap
            ends = [tr.level_after for tr in run]
            out.append(Transition(
                step=start,
                start_step=start,
                end_step=last_step if ongoing else run[-1].end_step,
                level_before=run[0].level_before,
                level_after=float(np.median(ends)),
                magnitude=float(np.median([tr.magnitude for tr in run])) / 2,
                relative_magnitude=run[0].relative_magnitude,
                direction=run[0].direction,
                score=float(min(tr.score for tr in run)),
                kind="regime",
                ongoing=ongoing,
            ))
            i = j
        else:
            i += 1
    return out
