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

Two more rules find regimes that roughness misses. Recurring level changes
(`recurring_changes`): an oscillation too slow for the roughness windows, or bumps that rise
slowly and fall at once, show as a run of level changes that the curve gives back. Trains of
short spikes (`spike_trains`): spikes of 1-3 records, which the spike filter removes before
the level tests and which are too small for the roughness windows on a rough trend (loss
spikes 3-10% tall at the edge of stability), are counted on the filter's residual against
the local noise; at least 6 spikes of one sign, each over 5 noise sigmas, recurring within
4 finest windows at a pace steadier than random arrivals, after a stretch with (almost) none,
are one regime from the first spike (to the last, if they stop). A spike or a few, or
spikes scattered over the whole run, are not a train.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from phasetrain.detect.candidates import finest_window
from phasetrain.detect.prepare import Curve, step_type
from phasetrain.detect.robust import noise_floor, noise_variance
from phasetrain.detect.transition import Transition

MIN_ROUGHNESS = 9.0
MIN_SWING_RELATIVE = 0.05
MIN_EVENTS = 6  # excursions in a chain: 3 alternating steps make 4, bumps and spikes many more
MIN_CYCLE_CHANGES = 4  # level changes alternating at a steady pace that make a slow cycle
WINDOW_LAGS = 8  # a roughness window holds 8 lags
MIN_WINDOWS = 3  # a regime lasts at least 3 roughness windows
ROUGH_SIGMAS = 5.0  # a regime starts and ends where d leaves its noise by this much
EXCURSION_SIGMAS = 3.0  # an excursion leaves the running mean by this many noise sigmas
MIN_GIVEN_BACK = 2.0  # recurring changes add up to at least twice the net move of the curve
MIN_BETWEEN_ROUGHNESS = 4.0  # the curve between irregular recurring changes: d swings 2x white noise
MIN_RECOVERY = 0.5  # before a change in the same direction, the curve wins back half the last one
MAX_STEADY_GAPS = 2.0  # gaps between changes at a steady pace differ by at most this factor
WITHIN_BAND = 0.9  # a curve oscillating from its start keeps 90% of its records before the first change in the band
MIN_SPREAD_BEFORE = 0.25  # ... and spans a quarter of it there (a part of a cycle); a curve sitting still does not
MEDIAN_REACH = 3  # records either side the spike filter (a running median of 7) reads
SPIKE_SIGMAS = 5.0  # a spike leaves the spike-filtered curve by more than this many noise sigmas
MIN_SPIKES = 6  # spikes in a train: the few isolated spikes of a run never make one
MAX_SPIKE_GAP = 4.0  # finest windows between the starts of consecutive spikes of a train, at most
STEADY_SIGMAS = 2.0  # a train's gaps are steadier than random arrivals' by 2 standard errors (see is_train)
MAX_RATE_AROUND = 0.25  # spikes come at most a quarter as often just before and after a train as in it


def rolling_mean(a: np.ndarray, size: int) -> np.ndarray:
    """Mean of every run of `size` consecutive values, shape (a.size - size + 1,)."""
    prefix = np.concatenate([[0.0], np.cumsum(a)])
    return (prefix[size:] - prefix[:-size]) / size


def third_differences(y: np.ndarray, var: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """(d, noise): the third differences at `lag` records, d[j] = y[j + 3 lag] - 3 y[j + 2 lag]
    + 3 y[j + lag] - y[j], and their variance under white noise of variance `var`, shape
    (n - 3 lag,) each. y, var: shape (n,)."""
    d = y[3 * lag :] - 3 * y[2 * lag : -lag] + 3 * y[lag : -2 * lag] - y[: -3 * lag]
    noise = var[3 * lag :] + 9 * var[2 * lag : -lag] + 9 * var[lag : -2 * lag] + var[: -3 * lag]
    return d, noise


def window_roughness(d: np.ndarray, noise: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(swing2, roughness) of every window of `size` third differences, shape (d.size - size + 1,):
    the variance of d about the window mean, and that variance over the mean noise variance."""
    mean = rolling_mean(d, size)
    swing2 = np.maximum(rolling_mean(d * d, size) - mean * mean, 0.0)
    return swing2, swing2 / np.maximum(rolling_mean(noise, size), 1e-300)


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
    d, noise = third_differences(y, var, lag)  # d[j] reads y[j], y[j + lag], y[j + 2 lag], y[j + 3 lag]
    swing2, roughness = window_roughness(d, noise, size)
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
        found.append((begin, end, float(np.median(roughness[first : last + 1])), last == roughness.size - 1))
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
    found = []
    for first, last, rough, ongoing, lag in spans:
        inside = y[first : last + 1]
        swing = float(np.sqrt(max(np.mean((inside - np.median(inside)) ** 2), 0.0)))
        found.append(regime_transition(curve, first, last, ongoing, WINDOW_LAGS * lag, swing, float(np.sqrt(rough))))
    return found


def regime_transition(curve: Curve, first: int, last: int, ongoing: bool, before: int,
                      magnitude: float, score: float) -> Transition:
    """The regime from record `first` to record `last` of `curve` as a Transition of kind
    "regime": step = start_step = its first record's step, end_step its last's (the curve's
    last step when `ongoing`); level_before the median value over the `before` records before
    it (inside it when there are none), level_after the median inside it (both in the
    curve's units); magnitude (on the analysis scale) and score as given."""
    t, y = curve.t, curve.y
    as_step = step_type(t)
    inside = y[first : last + 1]
    preceding = y[max(0, first - before) : first]
    level_before = curve.to_values(float(np.median(preceding if preceding.size else inside)))
    level_after = curve.to_values(float(np.median(inside)))
    largest = max(abs(level_before), abs(level_after))
    return Transition(
        step=as_step(t[first]),
        start_step=as_step(t[first]),
        end_step=as_step(t[-1] if ongoing else t[last]),
        level_before=level_before,
        level_after=level_after,
        magnitude=magnitude,
        relative_magnitude=abs(level_after - level_before) / largest if largest > 0 else 0.0,
        direction="up" if level_after > level_before else "down",
        score=score,
        kind="regime",
        ongoing=bool(ongoing),
    )


def merge_overlapping(regimes: list[Transition]) -> list[Transition]:
    """Regimes that overlap (one starts before the other ends) as one, sorted by start: the
    earliest one's fields, to the latest end (ongoing when any of them is)."""
    out: list[Transition] = []
    for r in sorted(regimes, key=lambda r: r.start_step):
        if out and r.start_step <= out[-1].end_step:
            top = out[-1]
            out[-1] = replace(top, end_step=max(top.end_step, r.end_step), ongoing=top.ongoing or r.ongoing)
        else:
            out.append(r)
    return out


def recurring_changes(curve: Curve, smooth: np.ndarray, rest: np.ndarray, var: np.ndarray,
                      levels: list[Transition], window: float | None) -> list[Transition]:
    """Level changes that keep coming while the curve keeps coming back, as regimes.

    An oscillation too slow for the roughness windows (under about a dozen cycles per curve),
    or one of bumps that rise slowly and fall at once (edge-of-stability sharpness: each fall
    a level change, each rise a trend), shows as a run of level changes. A run of at least
    MIN_CYCLE_CHANGES consecutive changes is one regime when
    - the curve gives back what it jumps: the sizes of the changes add up to at least
      MIN_GIVEN_BACK times the net move from before the first to after the last (a staircase
      of drops adds up to exactly its net move; alternating changes and falls that the curve
      climbs back from add up to several times it), and between two changes in the same
      direction the curve wins back at least MIN_RECOVERY of the earlier one (a fall, a
      climb back, a fall; not two falls), except after the first change, which may enter the
      regime (the collapse of the sharpness's overshoot at the edge of stability), and
    - the changes keep coming: at a steady pace (the gaps between them within a factor
      MAX_STEADY_GAPS of each other; with more than MIN_CYCLE_CHANGES changes the first gap
      need only be at most that factor times the longest other), or irregularly with the curve between them rough: the
      curve less its level changes (`rest`) has a median roughness (see the module docstring)
      of at least MIN_BETWEEN_ROUGHNESS over the windows inside the run, at some lag that fits
      2 windows in it (the smaller bumps the level test did not pass).
    From each change the longest such run is taken. It is a regime from the first change's
    start_step (the first change is part of it) to the last one's end_step; it starts at the
    curve's first record (no change) when the curve before the first change oscillates in
    the band of the run's levels already (see `within_band_before`), and is ongoing when the last change is
    within the longest gap of the curve's last record.

    curve: the prepared curve; smooth: its spike-filtered values, shape (n,); rest: curve.y
    less its level changes, shape (n,); var: noise
    variance per record, shape (n,); levels: the level changes, sorted by step; window: the
    finest window in steps (None: as for level changes). Returned transitions have
    kind="regime"; level_before is the first change's, level_after the median of the
    spike-filtered curve from the first change's end to the last one's start, magnitude half
    the changes' median size, score the weakest change's.
    """
    if len(levels) < MIN_CYCLE_CHANGES:
        return []
    t = curve.t
    scale = np.log if curve.log else np.asarray
    lags = roughness_by_lag(rest, var, t, window)
    out = []
    i = 0
    while i <= len(levels) - MIN_CYCLE_CHANGES:
        j = next((j for j in range(len(levels), i + MIN_CYCLE_CHANGES - 1, -1)
                  if oscillates(levels[i:j], t, lags, scale)), None)
        if j is None:
            i += 1
            continue
        run = levels[i:j]
        gaps = np.diff([tr.step for tr in run])
        start = t[0] if within_band_before(run, t, smooth, scale) else run[0].start_step
        ongoing = bool(t[-1] - run[-1].step <= float(np.max(gaps)))
        as_step = step_type(t)
        inside = (t >= run[0].end_step) & (t <= run[-1].start_step)  # between the first and last change
        out.append(Transition(
            step=as_step(start),
            start_step=as_step(start),
            end_step=as_step(t[-1] if ongoing else run[-1].end_step),
            level_before=run[0].level_before,
            level_after=curve.to_values(float(np.median(smooth[inside]))),
            magnitude=float(np.median([tr.magnitude for tr in run])) / 2,
            relative_magnitude=run[0].relative_magnitude,
            direction=run[0].direction,
            score=float(min(tr.score for tr in run)),
            kind="regime",
            ongoing=ongoing,
        ))
        i = j
    return out


def roughness_by_lag(rest: np.ndarray, var: np.ndarray, t: np.ndarray, window: float | None) -> dict[int, np.ndarray]:
    """lag (records) -> the roughness of every window of 8 lags of `rest` (shape (n - 11 lag + 1,),
    window w covering records w .. w + 11 lag - 1), for lags doubling from an eighth of the
    finest window (at least 1 record) while a window fits the curve."""
    h, _, spacing = finest_window(t, window)
    lag = max(1, round(h / spacing / WINDOW_LAGS))
    out = {}
    while (3 + WINDOW_LAGS) * lag <= rest.size:
        d, noise = third_differences(rest, var, lag)
        out[lag] = window_roughness(d, noise, WINDOW_LAGS * lag)[1]
        lag *= 2
    return out


def oscillates(run: list[Transition], t: np.ndarray, lags: dict[int, np.ndarray], scale) -> bool:
    """True when the level changes `run` (sorted by step) are given back and keep coming (see
    `recurring_changes`). t: the curve's steps; lags: `roughness_by_lag` of the curve less its
    level changes; scale: np.log for a log-scale curve, else np.asarray (levels to the analysis
    scale)."""
    jumps = [float(scale(tr.level_after) - scale(tr.level_before)) for tr in run]
    net = abs(float(scale(run[-1].level_after) - scale(run[0].level_before)))
    if sum(map(abs, jumps)) < MIN_GIVEN_BACK * net:
        return False
    for k in range(1, len(run) - 1):  # the first change may enter the regime; later ones come back
        back = float(scale(run[k + 1].level_before) - scale(run[k].level_after))
        if jumps[k] * jumps[k + 1] > 0 and -back * np.sign(jumps[k]) < MIN_RECOVERY * abs(jumps[k]):
            return False
    gaps = np.diff([tr.step for tr in run])
    # the first change may come sooner or a little later than the cycle's pace, once a cycle of
    # MIN_CYCLE_CHANGES follows it (two off-pace gaps of four changes are two bumps, not a cycle)
    cycle = gaps[1:] if len(run) > MIN_CYCLE_CHANGES else gaps
    if cycle.min() > 0 and cycle.max() <= MAX_STEADY_GAPS * cycle.min() and gaps[0] <= MAX_STEADY_GAPS * cycle.max():
        return True
    lo, hi = int(np.searchsorted(t, run[0].start_step)), int(np.searchsorted(t, run[-1].end_step))
    for lag, roughness in lags.items():
        last = hi - (3 + WINDOW_LAGS) * lag + 1  # the last window inside the run
        if last - lo >= WINDOW_LAGS * lag and np.median(roughness[lo : last + 1]) >= MIN_BETWEEN_ROUGHNESS:
            return True
    return False


def within_band_before(run: list[Transition], t: np.ndarray, smooth: np.ndarray, scale) -> bool:
    """True when the curve before the first change of `run` already oscillates in the band of
    the run's first changes: at least WITHIN_BAND of its spike-filtered values (shape (n,), on
    the analysis scale) lie in the band widened by half the run's median change, and they
    span at least MIN_SPREAD_BEFORE of the band (the oscillation was there from the first record, its first
    cycles too close to the start to test). False when the curve came from outside the band (a
    trend that arrives at the level it then oscillates about), sat still in it before the
    oscillation started, or there is nothing before it. t: the curve's steps; scale: as for
    `oscillates`. The band spans the levels after the first change and of the next
    MIN_CYCLE_CHANGES - 1 (the first's level before, where the curve came from, is not part of it).
    """
    before = smooth[: int(np.searchsorted(t, run[0].start_step))]
    if before.size == 0:
        return False
    levels = [float(scale(run[0].level_after))]
    levels += [float(scale(v)) for tr in run[1:MIN_CYCLE_CHANGES] for v in (tr.level_before, tr.level_after)]
    low, high = min(levels), max(levels)
    margin = 0.5 * float(np.median([abs(float(scale(tr.level_after) - scale(tr.level_before))) for tr in run]))
    inside = float(np.mean((before >= low - margin) & (before <= high + margin)))
    spread = float(np.percentile(before, 95) - np.percentile(before, 5))
    return inside >= WITHIN_BAND and spread >= MIN_SPREAD_BEFORE * (high - low)


def spike_trains(curve: Curve, smooth: np.ndarray, var: np.ndarray, window: float | None) -> list[Transition]:
    """Short spikes that keep coming, each train of them as one regime, sorted by start.

    The spike filter removes spikes of up to 3 records before the level tests, and the
    roughness windows miss small ones on a rough trend; the filter's residual (curve.y less
    `smooth`) holds them. It is measured against the noise of the curve without its spikes
    (`residual_sigmas`: dense spikes inflate the noise of the raw curve). A spike is a run of
    consecutive records beyond SPIKE_SIGMAS noise sigmas on one side (the first and last
    MEDIAN_REACH records, where the filter reflects the curve, are not read). Spikes of one
    sign whose first records follow each other within MAX_SPIKE_GAP finest windows chain, and
    a chain that `is_train` is a regime from its first spike's first record to its last
    spike's last, ongoing when the curve ends within the chain's longest gap of its last spike.

    curve: the prepared curve; smooth: its spike-filtered values, shape (n,); var: noise
    variance per record, shape (n,); window: the finest window in steps (None: as for level
    changes). Returned transitions have kind="regime" (see `regime_transition`; level_before
    over the finest window before the train), magnitude the median spike height (on the
    analysis scale), score the median height in noise sigmas.
    """
    t, y = curve.t, curve.y
    n = y.size
    value_range = float(smooth.max() - smooth.min())
    if n <= 2 * MEDIAN_REACH + MIN_SPIKES or not value_range > 0:
        return []
    z = residual_sigmas(curve, smooth, var, value_range)
    h, _, spacing = finest_window(t, window)
    out = []
    for sign in (1.0, -1.0):
        beyond = sign * z > SPIKE_SIGMAS
        beyond[:MEDIAN_REACH] = beyond[n - MEDIAN_REACH :] = False
        idx = np.flatnonzero(beyond)
        if idx.size < MIN_SPIKES:
            continue
        heads = np.flatnonzero(np.diff(idx, prepend=-2) > 1)
        starts, ends = idx[heads], idx[np.append(heads[1:], idx.size) - 1]  # each spike's first and last record
        for chain in np.split(np.arange(starts.size), np.flatnonzero(np.diff(t[starts]) > MAX_SPIKE_GAP * h) + 1):
            at = t[starts[chain]]
            if not is_train(at, t[starts], float(t[0]), float(t[-1])):
                continue
            peaks = [int(a + np.argmax(sign * z[a : b + 1])) for a, b in zip(starts[chain], ends[chain])]
            out.append(regime_transition(
                curve, int(starts[chain[0]]), int(ends[chain[-1]]), ongoing=bool(t[-1] - at[-1] <= np.diff(at).max()),
                before=max(1, round(h / spacing)), magnitude=float(np.median(np.abs(y[peaks] - smooth[peaks]))),
                score=float(np.median(sign * z[peaks])),
            ))
    return sorted(out, key=lambda r: r.start_step)


def residual_sigmas(curve: Curve, smooth: np.ndarray, var: np.ndarray, value_range: float) -> np.ndarray:
    """What the spike filter removed from the curve, curve.y - smooth, in noise sigmas of the
    curve without its spikes, shape (n,): the local noise (see `robust.noise_variance`, at
    least `robust.noise_floor` for `value_range`) of the curve with the records beyond
    SPIKE_SIGMAS of `var` (noise variance per record, shape (n,)) replaced by `smooth`."""
    y = curve.y
    cleaned = np.where(np.abs(y - smooth) > SPIKE_SIGMAS * np.sqrt(var), smooth, y)
    noise = np.maximum(noise_variance(curve.t, cleaned), noise_floor(y, curve.log, curve.quantum, value_range))
    return (y - smooth) / np.sqrt(noise)


def is_train(at: np.ndarray, every: np.ndarray, first: float, last: float) -> bool:
    """True when the spikes at steps `at` (a chain, sorted, shape (k,)) are a train that starts
    after the curve's start: at least MIN_SPIKES of them,
    - at a steady pace: the spread of their gaps (standard deviation over mean) lies below
      random arrivals' 1 by STEADY_SIGMAS of its standard error there, 1 / sqrt(gaps)
      (scattered spikes and heavy-tailed noise make chains of uneven gaps);
    - coming from a quiet curve: as long a stretch before and after the chain (within the
      curve) holds spikes at most MAX_RATE_AROUND times as often as the chain (a stream of
      spikes that pauses does not start again where it resumes);
    - not from the curve's start: the first spike lies more than the longest gap after the
      first record (a train from there, such as the peaks of a cycle, is how the curve is).
    every: the steps of all spikes of the chain's sign, sorted; first, last: the curve's
    first and last steps.
    """
    if at.size < MIN_SPIKES:
        return False
    gaps, span = np.diff(at), float(at[-1] - at[0])
    if (1 - np.std(gaps) / np.mean(gaps)) * np.sqrt(gaps.size) < STEADY_SIGMAS or at[0] - first <= gaps.max():
        return False
    lo, hi = max(first, at[0] - span), min(last, at[-1] + span)
    around = np.count_nonzero((every >= lo) & (every <= hi)) - at.size
    return bool(around <= MAX_RATE_AROUND * (at.size - 1) * (at[0] - lo + hi - at[-1]) / span)
