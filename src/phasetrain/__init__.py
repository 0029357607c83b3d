"""phasetrain: train PyTorch models while recording gradients and curvature, and find phase transitions."""
from phasetrain.accuracy import accuracy
from phasetrain.callbacks import Callback, EarlyStopping, FunctionCallback
from phasetrain.history import MetricHistory, load_metrics, save_metrics
from phasetrain.monitors.base import Monitor, StepContext
from phasetrain.monitors.gradients import global_grad_norm
from phasetrain.monitors.weights import WeightNormMonitor
from phasetrain.trainer import PhaseTransitionTrainer

__version__ = "0.1.0"

__all__ = [
    "PhaseTransitionTrainer",
    "Callback",
    "EarlyStopping",
    "FunctionCallback",
    "Monitor",
    "StepContext",
    "WeightNormMonitor",
    "MetricHistory",
    "load_metrics",
    "save_metrics",
    "accuracy",
    "global_grad_norm",
]
