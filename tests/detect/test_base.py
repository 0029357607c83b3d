import io
import json

import numpy as np
import pytest

from phasetrain.detect import (
    Detector,
    LevelDetector,
    OnlineDetector,
    StreamDetector,
    Transition,
    detect_in_history,
    detect_transitions,
)
from phasetrain.detect.base import is_plain

from .curves import sigmoid


def test_the_builtin_detectors_satisfy_the_protocols():
    assert isinstance(LevelDetector(50), Detector) and not isinstance(LevelDetector(50), StreamDetector)
    assert isinstance(OnlineDetector(50), StreamDetector) and not isinstance(OnlineDetector(50), Detector)


def test_a_new_detector_plugs_in_without_subclassing():
    class Threshold:
        def detect(self, values, steps=None):
            y = np.asarray(values)
            i = int(np.argmax(y > 0.5))
            return [Transition(i, i, i, 0.0, 1.0, 1.0, 1.0, "up", 1.0, kind="threshold")] if i else []

    detectors = [LevelDetector(20, scale="linear"), Threshold()]
    assert all(isinstance(d, Detector) for d in detectors)
    y = np.where(np.arange(400) > 200, 1.0, 0.0) + np.random.default_rng(0).normal(0, 0.05, 400)
    steps = sorted(tr.step for d in detectors for tr in d.detect(y))
    assert len(steps) == 2 and abs(steps[0] - steps[1]) <= 3


def test_level_detector_is_detect_transitions_with_fixed_settings():
    rng = np.random.default_rng(1)
    t = np.arange(1, 3001)
    y = sigmoid(t, 1500, 60) + rng.normal(0, 0.03, t.size)
    assert LevelDetector(50, scale="linear").detect(y, t) == detect_transitions(y, t, 50, scale="linear")
    with pytest.raises(ValueError, match="kinds"):
        LevelDetector(kinds=("bumps",))


def test_online_state_is_plain_and_loads_with_torch_weights_only():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    detector = OnlineDetector(50, scale="linear")
    for step in range(1, 2001):
        detector.update(step, (1.0 if step > 1000 else 0.0) + rng.normal(0, 0.05))
    state = detector.state_dict()
    assert is_plain(state) and json.loads(json.dumps(state)) == state
    buffer = io.BytesIO()
    torch.save({"detector": state}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)["detector"]
    resumed = OnlineDetector(50, scale="linear")
    resumed.load_state_dict(loaded)
    assert resumed.state_dict() == state
    assert not is_plain({"x": np.float32(1.0)}) and not is_plain({"x": float("nan")}) and not is_plain({1: 2})


def test_history_is_duck_typed_and_a_missing_metric_names_the_recorded_ones():
    rng = np.random.default_rng(3)
    t = np.arange(1, 1001)
    curves = {"train_acc": (t, np.where(t > 500, 0.9, 0.2) + rng.normal(0, 0.01, t.size))}

    class History:
        def __contains__(self, name):
            return name in curves

        def names(self):
            return list(curves)

        def steps(self, name):
            return curves[name][0]

        def values(self, name):
            return curves[name][1]

    (tr,) = detect_in_history(History(), "train_acc", 20)
    assert tr.metric == "train_acc" and tr.step == 501
    with pytest.raises(KeyError, match="'val_acc' was not recorded; recorded metrics: train_acc"):
        detect_in_history(History(), "val_acc")
