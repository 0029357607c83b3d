import numpy as np
import pytest

from phasetrain.detect import detect_transitions

from .curves import power_law_loss, sigmoid


@pytest.mark.parametrize("every", [1, 5])
@pytest.mark.parametrize("record", [5, 8])
def test_a_jump_at_the_5th_to_8th_record_of_a_short_run_is_found(every, record):
    rng = np.random.default_rng(record + every)
    t = np.arange(every, 331, every)
    y = np.where(np.arange(t.size) >= record, 0.9, 0.1) + rng.normal(0, 0.02, t.size)
    for window in (None, 100):
        (tr,) = detect_transitions(y, t, window)
        assert tr.step == t[record] and tr.direction == "up"
        assert tr.level_before == pytest.approx(0.1, abs=0.06) and tr.level_after == pytest.approx(0.9, abs=0.06)


def test_an_early_drop_of_a_power_law_loss_is_found_and_the_power_law_alone_is_not():
    rng = np.random.default_rng(1)
    t = np.arange(1, 3001)
    loss = power_law_loss(t, rng) * np.where(t > 12, 0.3, 1.0)
    (tr,) = detect_transitions(loss, t, 100)
    assert tr.step == 13 and tr.direction == "down"
    for seed in range(4):
        clean = power_law_loss(t, np.random.default_rng(10 + seed))
        assert detect_transitions(clean, t, 100) == [] and detect_transitions(clean, t) == []


@pytest.mark.parametrize("tau", [3.0, 10.0, 30.0])
def test_a_fast_exponential_approach_at_the_start_is_not_a_transition(tau):
    rng = np.random.default_rng(2)
    t = np.arange(1, 2001)
    y = 0.95 - 0.85 * np.exp(-t / tau) + rng.normal(0, 0.01, t.size)
    assert detect_transitions(y, t) == [] and detect_transitions(y, t, 100) == []


def test_a_sigmoid_rise_in_the_first_window_is_found_near_its_centre():
    rng = np.random.default_rng(3)
    t = np.arange(1, 2001)
    y = 0.1 + 0.8 * sigmoid(t, 25, 8) + rng.normal(0, 0.02, t.size)
    (tr,) = detect_transitions(y, t, 100)
    assert abs(tr.step - 25) <= 5 and tr.direction == "up"
