"""Online transition watching: one `OnlineDetector` per watched metric, fed as records arrive.

A detector's window must be known in steps before it starts; a metric's recording interval is
only known once it has two records. So each detector starts at a metric's second record, with
window = max(`window_size`, 10 x that interval): at least ten records a side, however sparsely
the metric is logged (validation once an epoch, curvature every `hessian_freq` steps). Detectors
check every max(16, half a window) records, so a transition is reported about 1.5 windows plus
up to that many records after it completes.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from phasetrain.detect import OnlineDetector, Transition
from phasetrain.detect.candidates import DEFAULT_WINDOW_FRACTION
from phasetrain.run.summary import KEY_METRICS

RECORDS_PER_WINDOW = 10
# Each check rescans a detector's buffer (a millisecond or so, mostly fixed numpy cost); checking
# at most every 16 records keeps the watcher near 1% of a 1 ms training step at log_freq=10, at
# the price of up to 16 more records of delay.
MIN_CHECK_EVERY = 16
# The online window when the run's length is not known in advance (a hand-written loop), in steps.
UNPLANNED_WINDOW = 100


def automatic_window(planned_steps: int | None) -> float:
    """The online detector's default window in steps: the offline rule (a fraction
    DEFAULT_WINDOW_FRACTION of the run) applied to the planned run, or UNPLANNED_WINDOW when its
    length is unknown. The watcher raises it to ten records of a metric."""
    if not planned_steps:
        return UNPLANNED_WINDOW
    return max(1.0, planned_steps * DEFAULT_WINDOW_FRACTION)


class TransitionWatcher:
    """Feeds records of `metrics` to online detectors and returns the transitions they confirm."""

    def __init__(self, metrics: Sequence[str] = KEY_METRICS, window_size: int = 100) -> None:
        self.metrics = tuple(metrics)
        self.window_size = window_size
        self._first: dict[str, tuple[float, float]] = {}
        self._detectors: dict[str, OnlineDetector] = {}
        self._last_step: dict[str, float] = {}
        self.found: list[Transition] = []

    def observe(self, step: int, record: Mapping[str, float]) -> list[Transition]:
        """Feed one record (name -> value at `step`); return newly confirmed transitions, metric set."""
        confirmed: list[Transition] = []
        for name in self.metrics:
            if name not in record or step <= self._last_step.get(name, -math.inf):
                continue  # a second record at the same step (an epoch without updates) is not fed
            self._last_step[name] = step
            detector = self._detectors.get(name)
            if detector is None:
                detector = self._start(name, step, record[name])
                if detector is None:
                    continue
            confirmed += [t.with_metric(name) for t in detector.update(step, record[name])]
        self.found += confirmed
        return confirmed

    def _start(self, name: str, step: int, value: float) -> OnlineDetector | None:
        if name not in self._first:
            self._first[name] = (step, value)
            return None
        first_step, first_value = self._first.pop(name)
        interval = step - first_step
        window = max(self.window_size, RECORDS_PER_WINDOW * interval)
        check_every = max(MIN_CHECK_EVERY, int(window / interval) // 2)
        detector = self._detectors[name] = OnlineDetector(window_size=window, check_every=check_every, metric=name)
        detector.update(first_step, first_value)
        return detector

    def state_dict(self) -> dict[str, Any]:
        return {
            "first": {name: list(pair) for name, pair in self._first.items()},
            "windows": {name: [d.window_size, d.check_every] for name, d in self._detectors.items()},
            "detectors": {name: d.state_dict() for name, d in self._detectors.items()},
            "found": [t.to_dict() for t in self.found],
            "last_step": dict(self._last_step),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._first = {name: (pair[0], pair[1]) for name, pair in state["first"].items()}
        self._detectors = {}
        for name, detector_state in state["detectors"].items():
            window, check_every = state["windows"][name]
            detector = OnlineDetector(window_size=window, check_every=check_every, metric=name)
            detector.load_state_dict(detector_state)
            self._detectors[name] = detector
        self.found = [Transition(**t) for t in state["found"]]
        self._last_step = dict(state["last_step"])
