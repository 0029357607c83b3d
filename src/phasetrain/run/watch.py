"""Online transition watching: one stream detector per watched metric, fed as records arrive.

A detector's window must be known in steps before it starts; a metric's recording interval is
only known once it has two records. So each detector starts at a metric's second record, with
window = max(`window_size`, 10 x that interval): at least ten records a side, however sparsely
the metric is logged (validation once an epoch, curvature every `hessian_freq` steps). The
default detector (`OnlineDetector`) checks every max(4, a quarter window) records and confirms a
sharp change within about one window after it completes; any `StreamDetector` (`update`,
`state_dict`, `load_state_dict`) can take its place through the `detector` factory.

A check costs about a millisecond whatever the step time, so on a loop of sub-millisecond steps
four checks a window would cost more than the training they watch. With a `time_budget` (a
fraction of wall time), while the checks so far have taken more than that fraction of the time
since the first record, records are held back and later fed at once, with one check
(`OnlineDetector.extend`): the same records are examined, confirmation comes later in wall time
and in steps, and detection never costs much more than the budget.

Before a detector can confirm anything, the watcher says whether a metric is changing now
(`moving`): its change over the last window exceeds `MOVING_FRACTION` of the range it has spanned
so far. The curvature time budget (`phasetrain.monitors.budget`) spends more while one does.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping, Sequence

from phasetrain.detect import OnlineDetector, StreamDetector, Transition
from phasetrain.detect.candidates import DEFAULT_WINDOW_FRACTION
from phasetrain.detect.robust import ACCURACY_RANGE_FLOOR
from phasetrain.run.summary import KEY_METRICS

RECORDS_PER_WINDOW = 10
# Each check rescans a detector's buffer (about a millisecond, mostly fixed numpy cost): checking
# four times a window, at least every 4 records, keeps a sharp change's confirmation within one
# window of its end at about 25 microseconds per step at log_freq=10.
MIN_CHECK_EVERY = 4
CHECKS_PER_WINDOW = 4
# Default share of wall time online checks may take before records are held back.
WATCH_BUDGET = 0.01
DetectorFactory = Callable[[float, str], StreamDetector]
# The online window when the run's length is not known in advance (a hand-written loop), in steps.
UNPLANNED_WINDOW = 100
# A metric moves while it changed over the last window by more than this fraction of the range it
# has spanned (on grokking's curves, 0.1 marks val_loss from step 580 and val_acc from 690 to
# about 1,080, the validation jump being 760-980, and nothing on the plateau after step 160).
MOVING_FRACTION = 0.1


def automatic_window(planned_steps: int | None) -> float:
    """The online detector's default window in steps: the offline rule (a fraction
    DEFAULT_WINDOW_FRACTION of the run) applied to the planned run, or UNPLANNED_WINDOW when its
    length is unknown. The watcher raises it to ten records of a metric."""
    if not planned_steps:
        return UNPLANNED_WINDOW
    return max(1.0, planned_steps * DEFAULT_WINDOW_FRACTION)


def online_detector(window_size: float, metric: str, check_every: int | None = None) -> StreamDetector:
    """phasetrain's own stream detector for a metric recorded with windows of `window_size` steps."""
    return OnlineDetector(window_size=window_size, check_every=check_every, metric=metric)


class TransitionWatcher:
    """Feeds records of `metrics` to online detectors and returns the transitions they confirm.

    `window_size`: the smallest window in steps (raised to 10 records of each metric). `detector`:
    a factory `(window_steps, metric) -> StreamDetector` for another online detector; None uses
    `OnlineDetector`. `time_budget`: the fraction of wall time the detectors may take (records
    are held back while they took more), or None to feed every record as it comes. `clock`:
    seconds, for the budget."""

    def __init__(self, metrics: Sequence[str] = KEY_METRICS, window_size: float = 100,
                 detector: DetectorFactory | None = None, time_budget: float | None = WATCH_BUDGET,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.detector = detector
        self.time_budget, self.clock = time_budget, clock
        self._spent = 0.0  # seconds in detectors since the first record
        self._began: float | None = None
        self._held: dict[str, list[list[float]]] = {}  # name -> [[step, value], ...] held back
        self.metrics = tuple(metrics)
        self.window_size = window_size
        self._first: dict[str, tuple[float, float]] = {}
        self._detectors: dict[str, StreamDetector] = {}
        self._windows: dict[str, list[float]] = {}  # name -> [window steps, check_every]
        self._last_step: dict[str, float] = {}
        self._recent: dict[str, list[list[float]]] = {}  # name -> [step, value] over the last window
        self._extent: dict[str, list[float]] = {}  # name -> [lowest, highest] finite value so far
        self._moving: dict[str, bool] = {}
        # whether a watched metric moved, over the last window before its latest record, by more
        # than MOVING_FRACTION of the range it has spanned (at least ACCURACY_RANGE_FLOOR for a
        # metric that stayed within [0, 1]); False until a metric has a window of records
        self.moving = False
        self.found: list[Transition] = []

    def observe(self, step: int, record: Mapping[str, float]) -> list[Transition]:
        """Feed one record (name -> value at `step`); return newly confirmed transitions, metric set."""
        now = self.clock()
        if self._began is None:
            self._began = now
        hold = self.time_budget is not None and self._spent > self.time_budget * (now - self._began)
        confirmed: list[Transition] = []
        for name in self.metrics:
            if name not in record or step <= self._last_step.get(name, -math.inf):
                continue  # a second record at the same step (an epoch without updates) is not fed
            self._last_step[name] = step
            self._follow(name, step, record[name])
            detector = self._detectors.get(name)
            if detector is None:
                detector = self._start(name, step, record[name])
                if detector is None:
                    continue
            held = self._held.setdefault(name, [])
            held.append([step, record[name]])
            if not hold:
                confirmed += self._feed(name, detector)
        self._spent += self.clock() - now
        self.found += confirmed
        return confirmed

    def flush(self) -> list[Transition]:
        """Feed every record held back (the run ends); return what that confirms."""
        confirmed: list[Transition] = []
        for name, detector in self._detectors.items():
            confirmed += self._feed(name, detector)
        self.found += confirmed
        return confirmed

    def _feed(self, name: str, detector: StreamDetector) -> list[Transition]:
        held, self._held[name] = self._held.get(name, []), []
        if not held:
            return []
        extend = getattr(detector, "extend", None)
        if extend is not None:
            found = extend([s for s, _ in held], [v for _, v in held])
        else:
            found = [t for s, v in held for t in detector.update(s, v)]
        return [t.with_metric(name) for t in found]

    def _follow(self, name: str, step: int, value: float) -> None:
        """Keep the metric's records of the last window and its range; decide whether it moves."""
        if not math.isfinite(value):
            return
        low, high = self._extent.get(name, (value, value))
        self._extent[name] = [min(low, value), max(high, value)]
        recent = self._recent.setdefault(name, [])
        recent.append([step, value])
        if name not in self._windows:
            return
        window = self._windows[name][0]
        while len(recent) > 1 and recent[1][0] <= step - window:
            del recent[0]
        then = recent[0]
        self._moving[name] = then[0] <= step - window and moved(then[1], value, *self._extent[name])
        self.moving = any(self._moving.values())

    def _start(self, name: str, step: int, value: float) -> StreamDetector | None:
        if name not in self._first:
            self._first[name] = (step, value)
            return None
        first_step, first_value = self._first.pop(name)
        interval = step - first_step
        window = max(self.window_size, RECORDS_PER_WINDOW * interval)
        check_every = max(MIN_CHECK_EVERY, int(window / interval) // CHECKS_PER_WINDOW)
        detector = self._detectors[name] = self._make(window, name, check_every)
        self._windows[name] = [window, check_every]
        detector.update(first_step, first_value)
        return detector

    def _make(self, window: float, name: str, check_every: int) -> StreamDetector:
        if self.detector is None:
            return online_detector(window, name, check_every)
        return self.detector(window, name)

    def state_dict(self) -> dict[str, Any]:
        return {
            "first": {name: list(pair) for name, pair in self._first.items()},
            "windows": {name: list(self._windows[name]) for name in self._detectors},
            "detectors": {name: d.state_dict() for name, d in self._detectors.items()},
            "found": [t.to_dict() for t in self.found],
            "last_step": dict(self._last_step),
            "held": {name: [list(pair) for pair in held] for name, held in self._held.items() if held},
            "recent": {name: [list(pair) for pair in pairs] for name, pairs in self._recent.items()},
            "extent": {name: list(pair) for name, pair in self._extent.items()},
            "moving": dict(self._moving),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._first = {name: (pair[0], pair[1]) for name, pair in state["first"].items()}
        self._detectors, self._windows = {}, {}
        for name, detector_state in state["detectors"].items():
            window, check_every = state["windows"][name]
            self._windows[name] = [window, check_every]
            detector = self._make(window, name, check_every)
            detector.load_state_dict(detector_state)
            self._detectors[name] = detector
        self.found = [Transition(**t) for t in state["found"]]
        self._last_step = dict(state["last_step"])
        self._held = {name: [list(pair) for pair in held] for name, held in state.get("held", {}).items()}
        self._recent = {name: [list(pair) for pair in pairs] for name, pairs in state.get("recent", {}).items()}
        self._extent = {name: list(pair) for name, pair in state.get("extent", {}).items()}
        self._moving = dict(state.get("moving", {}))
        self.moving = any(self._moving.values())


def moved(then: float, now: float, low: float, high: float) -> bool:
    """Whether a change from `then` to `now` exceeds MOVING_FRACTION of the range [low, high] the
    curve has spanned, taken as at least ACCURACY_RANGE_FLOOR when it lies within [0, 1]."""
    span = high - low
    if low >= 0.0 and high <= 1.0:
        span = max(span, ACCURACY_RANGE_FLOOR)
    return abs(now - then) > MOVING_FRACTION * span
