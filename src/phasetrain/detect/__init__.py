"""Phase-transition detection on 1-D training curves (numpy only, no torch).

`detect_transitions` scans a whole curve; `OnlineDetector` finds the same transitions
while the curve is being recorded; `detect_in_history` reads a metric from a MetricHistory.
"""
from phasetrain.detect.history import detect_in_history
from phasetrain.detect.offline import Thresholds, detect_transitions
from phasetrain.detect.online import OnlineDetector
from phasetrain.detect.transition import Transition

__all__ = ["OnlineDetector", "Thresholds", "Transition", "detect_in_history", "detect_transitions"]
