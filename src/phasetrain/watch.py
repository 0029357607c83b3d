"""Online transition watching: one `OnlineDetector` per watched metric, fed as records arrive.

A detector's window must be known in steps before it starts; a metric's recording interval is
only known once it has two records. So each detector starts at a metric's second record, with
window = max(`window_size`, 10 x that interval): at least ten records a side, however sparsely
the metric is logged (validation once an epoch, curvature every `hessian_freq` steps).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from phasetrain.detect import OnlineDetector, Transition
from phasetrain.summary import KEY_METRICS

RECORDS_PER_WINDOW = 10


class TransitionWatcher:
    """Feeds records of `metrics` to online detectors and returns the transitions they confirm."""

    def __init__(self, metrics: Sequence[str] = KEY_METRICS, window_size: int = 100) -> None:
        self.metrics = tuple(metrics)
        self.window_size = window_size
        self._first: dict[str, tuple[float, float]] = {}
        self._detectors: dict[str, OnlineDetector] = {}
        self.found: list[Transition] = []

    def observe(self, step: int, record: Mapping[str, float]) -> list[Transition]:
        """Feed one record (name -> value at `step`); return newly confirmed transitions, metric set."""
        confirmed: list[Transition] = []
        for name in self.metrics:
            if name not in record:
                continue
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
        window = max(self.window_size, RECORDS_PER_WINDOW * (step - first_step))
        detector = self._detectors[name] = OnlineDetector(window_size=window, metric=name)
        detector.update(first_step, first_value)
        return detector

    def state_dict(self) -> dict[str, Any]:
        return {
            "first": {name: list(pair) for name, pair in self._first.items()},
            "windows": {name: d.window_size for name, d in self._detectors.items()},
            "detectors": {name: d.state_dict() for name, d in self._detectors.items()},
            "found": [t.to_dict() for t in self.found],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._first = {name: (pair[0], pair[1]) for name, pair in state["first"].items()}
        self._detectors = {}
        for name, detector_state in state["detectors"].items():
            detector = OnlineDetector(window_size=state["windows"][name], metric=name)
            detector.load_state_dict(detector_state)
            self._detectors[name] = detector
        self.found = [Transition(**t) for t in state["found"]]
