import numpy as np
import pytest

from phasetrain.detect import Thresholds, Transition, detect_transitions

from .curves import grokking_val_acc, power_law_loss, sigmoid


def steps_of(found: list[Transition]) -> list[int]:
    return [tr.step for tr in found]


def test_single_step_up_is_found_at_its_step_with_levels_and_direction():
    rng = np.random.default_rng(1)
    t = np.arange(1, 1001)
    y = np.where(t > 600, 2.0, 1.0) + rng.normal(0, 0.05, t.size)
    (tr,) = detect_transitions(y, t, window_size=50, scale="linear")
    assert tr.step == 601 and tr.direction == "up"
    assert tr.start_step <= 600 and tr.end_step >= 601
    assert tr.level_before == pytest.approx(1.0, abs=0.05)
    assert tr.level_after == pytest.approx(2.0, abs=0.05)
    assert tr.magnitude == pytest.approx(1.0, abs=0.07)
    assert tr.relative_magnitude == pytest.approx(0.5, abs=0.04)
    assert tr.score >= Thresholds().min_score


@pytest.mark.parametrize("direction", ["up", "down"])
def test_sigmoid_is_found_near_its_centre_with_a_10_to_90_extent(direction):
    rng = np.random.default_rng(2)
    t = np.arange(1, 3001)
    rise = sigmoid(t, 1700, 120)
    y = (rise if direction == "up" else 1 - rise) + rng.normal(0, 0.03, t.size)
    (tr,) = detect_transitions(y, t, window_size=50, scale="linear")
    assert tr.direction == direction
    assert abs(tr.step - 1700) <= 15
    # the 10%..90% rise spans 1640..1760
    assert 1610 <= tr.start_step <= 1660 and 1740 <= tr.end_step <= 1790


def test_staircase_finds_each_drop_and_nothing_else():
    rng = np.random.default_rng(3)
    t = np.arange(1, 5001)
    drops = [1000, 2200, 3500]
    y = 4.0 - sum(sigmoid(t, d, 30) for d in drops) + rng.normal(0, 0.05, t.size)
    found = detect_transitions(y, t, window_size=100, scale="linear")
    assert [tr.direction for tr in found] == ["down"] * 3
    assert np.allclose(steps_of(found), drops, atol=10)


@pytest.mark.parametrize("seed", range(3))
def test_smooth_power_law_loss_has_no_transition(seed):
    rng = np.random.default_rng(seed)
    t = np.arange(1, 5001)
    for window in (None, 50, 100):
        assert detect_transitions(power_law_loss(t, rng), t, window) == []


@pytest.mark.parametrize("tau", [150.0, 600.0, 2000.0])
def test_exponential_saturation_of_accuracy_has_no_transition(tau):
    rng = np.random.default_rng(4)
    t = np.arange(1, 4001)
    y = 0.95 - 0.85 * np.exp(-t / tau) + rng.normal(0, 0.01, t.size)
    for window in (None, 50, 100):
        assert detect_transitions(y, t, window) == []


def test_spikes_of_one_to_three_points_are_ignored():
    rng = np.random.default_rng(5)
    t = np.arange(1, 3001)
    y = 1.0 + rng.normal(0, 0.02, t.size)
    for at, width in [(500, 1), (1200, 2), (2000, 3), (2600, 1)]:
        y[at : at + width] += 5.0
    assert detect_transitions(y, t, window_size=50) == []


def test_train_loss_with_sharp_drop_on_a_log_decay_is_found():
    rng = np.random.default_rng(6)
    t = np.arange(1, 6001)
    y = power_law_loss(t, rng) * np.where(t > 4000, 0.25, 1.0)
    (tr,) = detect_transitions(y, t, window_size=50)
    assert tr.step == 4001 and tr.direction == "down"
    assert tr.level_after / tr.level_before == pytest.approx(0.25, rel=0.15)


def test_grokking_val_acc_rise_is_found_around_step_2000():
    t, y = grokking_val_acc()
    for window in (None, 100):
        (tr,) = detect_transitions(y, t, window)
        assert abs(tr.step - 2000) <= 40 and tr.direction == "up"
        assert tr.level_before < 0.06 and tr.level_after > 0.93


def test_heteroscedastic_noise_shrinking_with_the_loss():
    rng = np.random.default_rng(7)
    t = np.arange(1, 8001)
    clean = 3.0 * np.exp(-t / 3000) + 0.2 - 0.15 * sigmoid(t, 5000, 40)
    y = clean + rng.normal(0, 1, t.size) * 0.1 * clean  # noise 10% of the level
    (tr,) = detect_transitions(y, t, window_size=100)
    assert abs(tr.step - 5000) <= 20 and tr.direction == "down"


def test_nan_and_inf_values_are_ignored():
    rng = np.random.default_rng(8)
    t = np.arange(1, 2001)
    y = np.where(t > 1200, 0.5, 1.0) + rng.normal(0, 0.02, t.size)
    clean = detect_transitions(y, t, 50)
    y[rng.choice(t.size, 150, replace=False)] = np.nan
    y[[10, 700, 1500]] = [np.inf, -np.inf, np.inf]
    found = detect_transitions(y, t, 50)
    assert len(found) == len(clean) == 1 and abs(found[0].step - 1201) <= 3


def test_irregular_steps_report_recorded_steps():
    rng = np.random.default_rng(9)
    t = np.cumsum(rng.integers(1, 40, 600))  # val every 1..39 steps
    y = 0.2 + 0.7 * sigmoid(t, t[350], 60) + rng.normal(0, 0.02, t.size)
    (tr,) = detect_transitions(y, t, window_size=100)
    assert tr.step in set(t.tolist()) and abs(tr.step - t[350]) <= 60


def test_float_steps_give_float_steps_and_int_steps_give_ints():
    rng = np.random.default_rng(10)
    t = np.arange(1, 401) * 0.5
    y = np.where(t > 120, 1.0, 0.0) + rng.normal(0, 0.05, t.size)
    (tr,) = detect_transitions(y, t, window_size=10)
    assert isinstance(tr.step, float) and tr.step == 120.5
    (tr,) = detect_transitions(y, np.arange(1, 401), window_size=20)
    assert isinstance(tr.step, int)


def test_per_epoch_val_curve_with_few_points():
    t = np.arange(1, 21) * 500  # 20 epochs of 500 steps
    y = np.array([0.30, 0.31, 0.29, 0.30, 0.31, 0.30, 0.29, 0.30, 0.31, 0.30,
                  0.80, 0.81, 0.79, 0.80, 0.81, 0.80, 0.80, 0.79, 0.81, 0.80])
    (tr,) = detect_transitions(y, t, window_size=100)
    assert tr.step == 5500 and tr.start_step == 5000 and tr.direction == "up"


def test_too_short_or_constant_curves_give_nothing():
    assert detect_transitions([1.0, 1.0, 1.0, 5.0, 5.0, 5.0]) == []
    assert detect_transitions(np.full(100, 3.0)) == []
    assert detect_transitions([]) == []


def test_log_scale_finds_a_late_drop_that_is_tiny_on_a_linear_scale():
    rng = np.random.default_rng(11)
    t = np.arange(1, 4001)
    y = 10.0 * np.exp(-t / 300) * np.where(t > 3000, 0.2, 1.0) * np.exp(rng.normal(0, 0.02, t.size))
    assert steps_of(detect_transitions(y, t, 50, scale="log")) == [3001]
    assert steps_of(detect_transitions(y, t, 50, scale="auto")) == [3001]


def test_tiny_wiggle_on_a_long_flat_curve_is_not_a_transition():
    rng = np.random.default_rng(12)
    t = np.arange(1, 200_001)
    y = 1.0 + rng.normal(0, 0.01, t.size) + 0.002 * sigmoid(t, 100_000, 50)
    assert detect_transitions(y, t) == []


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(values=np.zeros((10, 2))), ValueError, "values must be 1-D"),
        (dict(values=np.zeros(10), steps=np.arange(9)), ValueError, "steps must be 1-D with one step per value"),
        (dict(values=np.zeros(4), steps=[1, 2, 2, 3]), ValueError, r"strictly increasing.*steps\[1\]=2"),
        (dict(values=np.zeros(4), steps=[1, 3, 2, 4]), ValueError, "strictly increasing"),
        (dict(values=np.zeros(4), steps=[1, np.nan, 3, 4]), ValueError, "steps must all be finite"),
        (dict(values=np.zeros(10), window_size=0), ValueError, "window_size must be a positive"),
        (dict(values=np.zeros(10), window_size=-5), ValueError, "got -5"),
        (dict(values=np.zeros(10), window_size="100"), TypeError, "window_size"),
        (dict(values=np.zeros(10), window_size=True), TypeError, "window_size"),
        (dict(values=np.zeros(10), scale="sqrt"), ValueError, "scale must be one of"),
        (dict(values=np.arange(10.0), scale="log"), ValueError, "positive values"),
        (dict(values=["a", "b"]), TypeError, "values must be"),
    ],
)
def test_bad_input_is_rejected_naming_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        detect_transitions(**kwargs)


def test_thresholds_must_be_finite_and_non_negative():
    with pytest.raises(ValueError, match="Thresholds.min_score must be a finite number >= 0, got -1"):
        Thresholds(min_score=-1)
    with pytest.raises(ValueError, match="min_effect"):
        Thresholds(min_effect=float("nan"))
    with pytest.raises(TypeError, match="thresholds must be a Thresholds"):
        detect_transitions(np.zeros(20), thresholds={"min_score": 3})


def test_lower_thresholds_find_a_weak_step_the_defaults_reject():
    rng = np.random.default_rng(13)
    t = np.arange(1, 401)
    y = np.where(t > 200, 0.1, 0.0) + rng.normal(0, 0.1, t.size)  # a 1-sigma step
    assert detect_transitions(y, t, 20, scale="linear") == []
    loose = Thresholds(min_score=4, min_effect=0.5)
    (tr,) = detect_transitions(y, t, 20, scale="linear", thresholds=loose)
    assert abs(tr.step - 201) <= 15 and tr.direction == "up"


def test_accuracy_stuck_near_zero_with_single_example_blips_has_no_transition():
    # a run that never generalises: val_acc on 8943 examples is 0, 1 or 2 correct
    rng = np.random.default_rng(14)
    t = np.arange(1, 4001)
    correct = np.where(t > 1200, rng.choice([0, 1, 2], t.size, p=[0.3, 0.5, 0.2]), rng.choice([0, 1], t.size))
    assert detect_transitions(correct / 8943, t, 100) == []
    assert detect_transitions(correct / 8943, t) == []


def test_quantised_accuracy_with_a_real_jump_is_found():
    rng = np.random.default_rng(15)
    t = np.arange(1, 2001)
    acc = np.round(np.where(t > 1000, 0.8, 0.3) + rng.normal(0, 0.02, t.size), 2)
    (tr,) = detect_transitions(acc, t, 50)
    assert tr.step == 1001 and tr.level_after - tr.level_before == pytest.approx(0.5, abs=0.03)


def test_square_wave_with_many_transitions_finds_each_with_alternating_direction():
    rng = np.random.default_rng(16)
    t = np.arange(1, 100_001)
    y = np.where((t - 1) // 2000 % 2 == 0, 1.0, 0.0) + rng.normal(0, 0.05, t.size)
    found = detect_transitions(y, t)  # default window: 1% of the run = 1000 steps
    assert steps_of(found) == list(range(2001, 100_001, 2000))
    assert [tr.direction for tr in found] == ["down", "up"] * 24 + ["down"]


def test_a_noiseless_step_or_staircase_is_found_not_mistaken_for_a_grid():
    steps = np.arange(200)
    assert [t.step for t in detect_transitions(np.where(steps < 80, 0.1, 0.9), steps)] == [80]
    staircase = np.where(steps < 80, 0.1, np.where(steps < 150, 0.5, 0.9))
    assert [t.step for t in detect_transitions(staircase, steps)] == [80, 150]
