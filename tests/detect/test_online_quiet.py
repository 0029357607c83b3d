import warnings

import numpy as np
import pytest

from phasetrain.detect import OnlineDetector, detect_transitions

from .curves import sigmoid


def run_online(detector, t, y):
    fired = []
    for step, value in zip(t.tolist(), y.tolist()):
        fired += [(step, tr) for tr in detector.update(step, value)]
    return fired


@pytest.mark.parametrize("seed", range(3))
def test_a_sharp_change_is_confirmed_within_one_window_of_its_90_percent_point(seed):
    rng = np.random.default_rng(seed)
    t = np.arange(1, 6001)
    y = 4.0 - sigmoid(t, 2500, 5) - sigmoid(t, 4500, 30) + rng.normal(0, 0.05, t.size)
    fired = run_online(OnlineDetector(100, scale="linear"), t, y)
    assert [abs(tr.step - c) <= 10 for (_, tr), c in zip(fired, (2500, 4500))] == [True, True]
    for (when, tr), (centre, width) in zip(fired, [(2500, 5), (4500, 30)]):
        assert when - (centre + width / 2) <= 100


def accuracy_of(correct: np.ndarray) -> np.ndarray:
    return correct / 8939  # validation pairs


def test_one_to_twelve_correct_of_8939_is_not_a_transition_online_or_offline():
    rng = np.random.default_rng(4)
    t = np.arange(10, 40_010, 10)
    correct = np.where(t > 20_000, rng.poisson(12, t.size), rng.poisson(1, t.size))
    acc = accuracy_of(correct)
    assert run_online(OnlineDetector(500), t, acc) == []
    assert detect_transitions(acc, t, 500) == [] and detect_transitions(acc, t) == []


def test_a_one_point_five_percent_accuracy_jump_is_still_found():
    rng = np.random.default_rng(5)
    t = np.arange(10, 40_010, 10)
    correct = rng.binomial(8939, np.where(t > 20_000, 0.915, 0.90))
    acc = accuracy_of(correct)
    (tr,) = detect_transitions(acc, t, 500)
    assert abs(tr.step - 20_010) <= 50 and tr.direction == "up"
    ((_, online),) = run_online(OnlineDetector(500), t, acc)
    assert online.step == tr.step


def test_a_window_below_ten_records_warns_and_ten_does_not():
    rng = np.random.default_rng(6)
    with pytest.warns(RuntimeWarning, match="holds 5 records.*at least 10 records"):
        run_online(OnlineDetector(50, scale="linear"), np.arange(10, 501, 10), rng.normal(0, 1, 50))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_online(OnlineDetector(100, scale="linear"), np.arange(10, 501, 10), rng.normal(0, 1, 50))


def test_a_state_saved_before_the_quick_layout_still_loads():
    rng = np.random.default_rng(7)
    t = np.arange(1, 3001)
    y = np.where(t > 2000, 1.0, 0.0) + rng.normal(0, 0.05, t.size)
    first = OnlineDetector(100, scale="linear")
    run_online(first, t[:1000], y[:1000])
    state = first.state_dict()
    state["version"], state["done"] = 1, state["done"][:-1]
    resumed = OnlineDetector(100, scale="linear")
    resumed.load_state_dict(state)
    assert [abs(tr.step - 2001) <= 3 for _, tr in run_online(resumed, t[1000:], y[1000:])] == [True]
