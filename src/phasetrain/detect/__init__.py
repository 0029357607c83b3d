"""Phase-transition detection on 1-D training curves (numpy only, no torch).

`detect_transitions` scans a whole curve for level changes, slope changes and oscillation
regimes (`kinds`); `OnlineDetector` finds level changes while the curve is being recorded;
`detect_in_history` reads a metric from a history; `find_phenomena` and `story_of_run` name
what happened in a run (memorisation, grokking, edge of stability, ...). Any object with the
methods of `Detector` (offline) or `StreamDetector` (online) is a detector.
"""
from phasetrain.detect.base import Detector, StreamDetector
from phasetrain.detect.candidates import Thresholds
from phasetrain.detect.history import detect_in_history
from phasetrain.detect.offline import KINDS, LevelDetector, detect_transitions
from phasetrain.detect.online import OnlineDetector
from phasetrain.detect.phenomena import Phenomenon, find_phenomena, story, story_of_run
from phasetrain.detect.transition import Transition

__all__ = [
    "KINDS",
    "Detector",
    "LevelDetector",
    "OnlineDetector",
    "Phenomenon",
    "StreamDetector",
    "Thresholds",
    "Transition",
    "detect_in_history",
    "detect_transitions",
    "find_phenomena",
    "story",
    "story_of_run",
]
