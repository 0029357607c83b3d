"""Online detection: the offline detector run incrementally while a curve is recorded."""
from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np

from phasetrain.detect.candidates import (
    DEFAULT_THRESHOLDS,
    MIN_CURVE_POINTS,
    MIN_SIDE_POINTS,
    Candidate,
    Thresholds,
    geometries,
    scale_candidates,
    select,
)
from phasetrain.detect.prepare import Curve, check_scale, check_window_size, reads_as_log
from phasetrain.detect.robust import NOISE_BLOCK, median7, noise_floor, noise_variance, quantum, range_floor
from phasetrain.detect.scan import Geometry, scan_scale
from phasetrain.detect.transition import Transition

CHECKS_PER_WINDOW = 4  # default cadence: 4 re-scans per finest window
SHARP_BINS = 2  # the quick layout reports changes done (10% -> 90%) within 2 bins (a quarter window)
MIN_WINDOW_RECORDS = 10  # fewer records per window: noise and bumps pass for changes (warned)
WARMUP = 32  # records that fix the recording interval (and the scale, for scale="auto")
MARGIN = 2 * NOISE_BLOCK + 8  # extra records kept so that filters and noise blocks match offline
STATE_VERSION = 2  # 2: `done` has one more entry (the quick layout); 1 still loads


class OnlineDetector:
    """Finds the transitions of a curve as it is recorded, one `update(step, value)` at a time.

    It runs the offline detector's scales (window_size, 2*window_size, ... up to max_window,
    default 8*window_size) on a buffer that holds only the last few windows, every
    `check_every` records (default a quarter of the finest window), so an update costs
    amortised O(window) and never rescans the history. Sharp changes (done within a quarter
    window) are confirmed on a quick layout (windows of 5/8 of the finest, no gap) within
    one window plus 3 records (for the spike filter) after they complete; others once the
    after-window of the finest scale that sees them is complete: at most about
    1.5 * window + check_every records after, 1.5 * max_window + check_every for the widest.
    Up to that delay it reports what `detect_transitions(..., max_window=max_window)` reports
    on the same curve, except that the range test uses the range seen so far (at least 0.2 for
    an accuracy, see `robust.range_floor`). A window below 10 records warns (RuntimeWarning)
    once the recording interval is known. Non-finite values (and values <= 0 on a log scale)
    are ignored. scale="auto" decides on the first 32 finite values, before a loss has had
    time to span decades: log when they are positive, except for a rising curve bounded by 1
    (an accuracy); pass scale="log" or "linear" to be certain.

    window_size: finest window in steps. max_window: largest window in steps (None: 8 x
    window_size). scale: "auto", "linear" or "log". thresholds: as for `detect_transitions`.
    check_every: records between re-scans (None: a quarter window). metric: name set on
    the reported transitions.
    """

    def __init__(
        self,
        window_size: float,
        *,
        max_window: float | None = None,
        scale: str = "auto",
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
        check_every: int | None = None,
        metric: str | None = None,
    ) -> None:
        window = check_window_size(window_size)
        if window is None:
            raise ValueError("window_size must be a positive number of steps for online detection, got None")
        self.window_size = window
        self.max_window = check_window_size(max_window, "max_window") or 8 * window
        self.scale = check_scale(scale)
        if not isinstance(thresholds, Thresholds):
            raise TypeError(f"thresholds must be a Thresholds, got {type(thresholds).__name__}")
        self.thresholds = thresholds
        if check_every is not None and (isinstance(check_every, bool) or not isinstance(check_every, int)
                                        or check_every < 1):
            raise ValueError(f"check_every must be a positive int or None, got {check_every!r}")
        self.check_every = check_every
        self.metric = metric
        self._reset()

    def _reset(self) -> None:
        self._t: list[float] = []
        self._y: list[float] = []
        self._offset = 0  # index in the whole (finite) curve of self._t[0]
        self._log: bool | None = None if self.scale == "auto" else self.scale == "log"
        self._spacing: float | None = None
        self._origin: float | None = None
        self._last_step: float | None = None
        self._done: list[float | None] = []
        self._taken: list[list[float]] = []  # [step, reach] of accepted transitions still in reach
        self._low = math.inf
        self._high = -math.inf
        self._ranged = 0  # records (from the curve's start) already in the running range
        self._since_check = 0

    def update(self, step: float, value: float) -> list[Transition]:
        """Add the record (step, value); return the transitions it confirms (usually [])."""
        return self._check() if self._add(step, value) else []

    def extend(self, steps: Sequence[float], values: Sequence[float]) -> list[Transition]:
        """Add records in order, checking once at the end if a check fell due among them: what a
        caller that holds records back to spend less time on checks feeds at once."""
        due = False
        for step, value in zip(steps, values):
            due = self._add(step, value) or due
        return self._check() if due else []

    def _add(self, step: float, value: float) -> bool:
        """Take one record; True when a check is due (every `check_every` records)."""
        step = float(step)
        if not math.isfinite(step):
            raise ValueError(f"step must be finite, got {step!r}")
        if self._last_step is not None and step <= self._last_step:
            raise ValueError(f"steps must be strictly increasing, got step {step:g} after {self._last_step:g}")
        self._last_step = step
        value = float(value)
        if not math.isfinite(value):
            return False
        self._t.append(step)
        self._y.append(value)
        if self._spacing is None:
            if len(self._t) < WARMUP:
                return False
            self._start()
        elif self._log:
            if value <= 0:
                self._t.pop()
                self._y.pop()
                return False
            self._y[-1] = math.log(value)
        self._since_check += 1
        if self._since_check < self._every:
            return False
        self._since_check = 0
        return True

    def _start(self) -> None:
        """After WARMUP records: fix the scale, the recording interval and the scales."""
        y = np.asarray(self._y)
        if self._log is None:
            self._log = reads_as_log(y, min_ratio=1.0)
        if self._log:
            keep = y > 0
            self._t = [s for s, k in zip(self._t, keep) if k]
            self._y = np.log(y[keep]).tolist()
        self._spacing = float(np.median(np.diff(self._t))) if len(self._t) > 1 else 1.0
        self._origin = self._t[0]
        self._plan()
        self._done = [None] * (len(self._layouts) + 1)  # the last entry is the quick layout's
        records = self.window_size / self._spacing
        if records < MIN_WINDOW_RECORDS:
            warnings.warn(
                f"window_size={self.window_size:g} steps holds {records:.3g} records of a curve recorded every "
                f"{self._spacing:g} steps; online detection needs at least {MIN_WINDOW_RECORDS} records a window "
                f"to tell changes from noise and bumps: pass window_size >= {MIN_WINDOW_RECORDS * self._spacing:g}",
                RuntimeWarning,
                stacklevel=4,
            )

    def _plan(self) -> None:
        """Fix the scales, the quick layout and the re-scan cadence from the recording interval."""
        self._layouts = geometries(self.window_size, self._spacing, 0.0, 0, self.max_window)
        finest = self._layouts[0]
        # sharp changes: windows of 5/8 of the finest and no gap, so the after-window closes within
        # 3/4 of a window (plus a quarter window of cadence: one window in all)
        self._quick = Geometry(delta=finest.delta, side=max(MIN_SIDE_POINTS, 5 * finest.side // 8), gap=0)
        self._every = self.check_every or max(1, int(finest.side * finest.delta / self._spacing) // CHECKS_PER_WINDOW)

    def _check(self) -> list[Transition]:
        t, y = np.asarray(self._t), np.asarray(self._y)
        if t.size < MIN_CURVE_POINTS:
            return []
        smooth = median7(y)
        final = t.size - 3  # the filter output of the last 3 records is not final yet
        if final > self._ranged - self._offset:
            fresh = smooth[max(self._ranged - self._offset, 0) : final]
            self._low, self._high = min(self._low, float(fresh.min())), max(self._high, float(fresh.max()))
            self._ranged = self._offset + final
        value_range = self._high - self._low
        if not value_range > 0:
            return []
        grid = quantum(np.exp(y) if self._log else y)
        floor = noise_floor(y, bool(self._log), grid, value_range)
        var = np.maximum(noise_variance(t, y, self._offset), floor)
        value_range = max(value_range, range_floor(self._low, self._high, bool(self._log), grid))
        closed = t[final - 1]
        curve = Curve(t=t, y=y, log=bool(self._log), quantum=grid)
        prior = [(s, r) for s, r in self._taken]
        quick = [
            (cand, found)
            for cand, found in select(curve, smooth, self._candidates(t, smooth, var, -1, closed, value_range), prior)
            if found.end_step - found.start_step <= SHARP_BINS * self._quick.delta
        ]
        prior += [(float(found.step), cand.reach) for cand, found in quick]
        candidates: list[Candidate] = []
        for j in range(len(self._layouts)):
            candidates.extend(self._candidates(t, smooth, var, j, closed, value_range))
        chosen = quick + select(curve, smooth, candidates, prior)
        self._taken += [[float(found.step), cand.reach] for cand, found in chosen]
        self._trim()
        found = sorted((tr for _, tr in chosen), key=lambda tr: tr.step)
        return [tr.with_metric(self.metric) for tr in found]

    def _candidates(
        self, t: np.ndarray, smooth: np.ndarray, var: np.ndarray, j: int, closed: float, value_range: float
    ) -> list[Candidate]:
        """Candidates of layout j (-1: the quick layout) whose after-window closed by step `closed`
        and that no earlier check has examined."""
        geo = self._quick if j < 0 else self._layouts[j]
        # centres up to done[j] were examined: scan only the records the later ones' windows read
        first = 0 if self._done[j] is None else int(np.searchsorted(t, self._done[j] - geo.reach - 2 * geo.delta))
        scan = scan_scale(t[first:], smooth[first:], var[first:], geo, MIN_SIDE_POINTS, origin=self._origin)
        if scan is None:
            return []
        centre_steps = scan.centre_step(np.arange(scan.centre.size))
        right_edge = scan.t0 + (scan.centre + geo.gap + geo.side + 1) * geo.delta
        eligible = right_edge <= closed
        if self._offset > 0:
            eligible &= centre_steps - geo.reach >= t[min(MARGIN, t.size - 1)]
        if self._done[j] is not None:
            eligible &= centre_steps > self._done[j]
        if eligible.any():
            self._done[j] = float(centre_steps[eligible].max())
        return scale_candidates(scan, value_range, self.thresholds, eligible)

    def _trim(self) -> None:
        """Drop records no window can reach any more (amortised: only when twice as many)."""
        reach = self._layouts[-1].reach
        now = self._t[-1]
        self._taken = [pair for pair in self._taken if pair[0] >= now - 4 * reach]
        keep = int(np.searchsorted(self._t, now - 3 * reach - 4 * self._spacing)) - MARGIN
        if keep > len(self._t) // 2 and keep > MARGIN:
            del self._t[:keep], self._y[:keep]
            self._offset += keep

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume, as plain ints, floats, strings, lists and None."""
        return {
            "version": STATE_VERSION,
            "window_size": self.window_size,
            "max_window": self.max_window,
            "scale": self.scale,
            "t": list(self._t),
            "y": list(self._y),
            "offset": self._offset,
            "log": self._log,
            "spacing": self._spacing,
            "origin": self._origin,
            "last_step": self._last_step,
            "done": list(self._done),
            "taken": [list(pair) for pair in self._taken],
            "low": self._low if math.isfinite(self._low) else None,
            "high": self._high if math.isfinite(self._high) else None,
            "ranged": self._ranged,
            "since_check": self._since_check,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from `state_dict()` of a detector built with the same window_size,
        max_window and scale (a mismatch raises ValueError)."""
        if state.get("version") not in (1, STATE_VERSION):
            raise ValueError(f"state version must be 1 or {STATE_VERSION}, got {state.get('version')!r}")
        for key in ("window_size", "max_window", "scale"):
            if state[key] != getattr(self, key):
                raise ValueError(f"state has {key}={state[key]!r} but this detector has {getattr(self, key)!r}")
        self._t, self._y = [float(v) for v in state["t"]], [float(v) for v in state["y"]]
        self._offset, self._ranged = int(state["offset"]), int(state["ranged"])
        self._log, self._spacing, self._origin = state["log"], state["spacing"], state["origin"]
        self._last_step = state["last_step"]
        self._done = list(state["done"])
        if state["version"] == 1 and self._done:
            self._done.append(None)  # no quick layout then
        self._taken = [[float(s), float(r)] for s, r in state["taken"]]
        self._low = math.inf if state["low"] is None else float(state["low"])
        self._high = -math.inf if state["high"] is None else float(state["high"])
        self._since_check = int(state["since_check"])
        if self._spacing is not None:
            self._plan()
