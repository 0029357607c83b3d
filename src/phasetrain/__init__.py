"""phasetrain: train PyTorch models while recording gradients and curvature, and find phase transitions.

Names are imported on first use, so `phasetrain` on the command line (which reads run folders
with numpy only) starts without importing torch.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "PhaseTransitionTrainer": "phasetrain.loop.trainer",
    "Callback": "phasetrain.loop.callbacks",
    "EarlyStopping": "phasetrain.loop.callbacks",
    "FunctionCallback": "phasetrain.loop.callbacks",
    "Monitor": "phasetrain.monitors.base",
    "StepContext": "phasetrain.monitors.base",
    "WeightNormMonitor": "phasetrain.monitors.norms",
    "HessianMonitor": "phasetrain.monitors.hessian",
    "global_grad_norm": "phasetrain.monitors.norms",
    "accuracy": "phasetrain.loop.accuracy",
    "MetricHistory": "phasetrain.run.history",
    "load_metrics": "phasetrain.run.history",
    "save_metrics": "phasetrain.run.history",
    "detect_transitions": "phasetrain.detect",
    "OnlineDetector": "phasetrain.detect",
    "Transition": "phasetrain.detect",
    "Thresholds": "phasetrain.detect",
    "detect_in_history": "phasetrain.detect",
    "find_phenomena": "phasetrain.detect",
    "story_of_run": "phasetrain.detect",
    "Phenomenon": "phasetrain.detect",
    "Detector": "phasetrain.detect",
    "StreamDetector": "phasetrain.detect",
    "LevelDetector": "phasetrain.detect",
    "plot_run": "phasetrain.report",
    "load_run": "phasetrain.run.sources",
    "compare_runs": "phasetrain.compare",
    "plot_comparison": "phasetrain.compare",
    "RunRecorder": "phasetrain.run.recorder",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'phasetrain' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
