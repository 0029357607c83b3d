"""Run the detector on a metric of a recorded history (e.g. one loaded from metrics.json).

The history is duck-typed: anything with `name in history`, `history.names()`,
`history.steps(name)` and `history.values(name)` (a `MetricHistory` has them).
"""
from __future__ import annotations

from typing import Any, Protocol

from phasetrain.detect.candidates import DEFAULT_THRESHOLDS, Thresholds
from phasetrain.detect.offline import detect_transitions
from phasetrain.detect.transition import Transition


class History(Protocol):
    """What the detectors read from a run's record of metrics."""

    def __contains__(self, name: object) -> bool: ...

    def names(self) -> Any: ...

    def steps(self, name: str) -> Any: ...

    def values(self, name: str) -> Any: ...


def unknown_metric(metric: object, history: History) -> KeyError:
    """The KeyError for a metric `history` never recorded, listing the ones it did."""
    known = sorted(history.names())
    listed = ", ".join(known) if known else "none yet"
    return KeyError(f"metric {metric!r} was not recorded; recorded metrics: {listed}")


def read_metric(history: History, metric: str) -> tuple[Any, Any]:
    """(steps, values) of `metric`; KeyError listing the recorded metrics when it is missing."""
    if metric not in history:
        raise unknown_metric(metric, history)
    return history.steps(metric), history.values(metric)


def detect_in_history(
    history: History,
    metric: str,
    window_size: float | None = None,
    *,
    scale: str = "auto",
    max_window: float | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    kinds: tuple[str, ...] | list[str] = ("level",),
) -> list[Transition]:
    """Transitions of `metric` (recorded steps and values) with `metric` filled in.

    history: a run's records (see `History`). metric: the name to read. window_size,
    scale, max_window, thresholds, kinds: as for `detect_transitions`.
    Raises KeyError listing the recorded metrics when `metric` was never recorded.
    """
    steps, values = read_metric(history, metric)
    found = detect_transitions(
        values, steps, window_size, scale=scale, max_window=max_window, thresholds=thresholds, kinds=kinds,
    )
    return [tr.with_metric(metric) for tr in found]
