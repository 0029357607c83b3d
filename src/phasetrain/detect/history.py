"""Run the detector on a metric of a `MetricHistory` (e.g. one loaded from metrics.json)."""
from __future__ import annotations

from phasetrain.detect.offline import Thresholds, detect_transitions
from phasetrain.detect.transition import Transition
from phasetrain.run.history import MetricHistory, unknown_metric_message


def detect_in_history(
    history: MetricHistory,
    metric: str,
    window_size: float | None = None,
    *,
    scale: str = "auto",
    max_window: float | None = None,
    thresholds: Thresholds = Thresholds(),
) -> list[Transition]:
    """Transitions of `metric` (recorded steps and values) with `metric` filled in.

    Raises KeyError listing the recorded metrics when `metric` was never recorded.
    """
    if metric not in history:
        raise KeyError(unknown_metric_message(metric, history.names()))
    found = detect_transitions(
        history.values(metric), history.steps(metric), window_size,
        scale=scale, max_window=max_window, thresholds=thresholds,
    )
    return [tr.with_metric(metric) for tr in found]
