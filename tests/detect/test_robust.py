import numpy as np
import pytest

from phasetrain.detect.robust import median7, noise_floor, noise_variance, quantum


def test_median7_sorting_network_is_exact_on_every_binary_window():
    # 0-1 principle: a compare-exchange network that sorts all 2^7 binary inputs sorts every input
    windows = (np.arange(128)[:, None] >> np.arange(7)) & 1
    for window in windows.astype(float):
        assert median7(window)[3] == np.median(window)


def test_median7_equals_a_sorted_median_of_each_reflected_window():
    rng = np.random.default_rng(0)
    y = rng.normal(size=501)
    padded = np.pad(y, 3, mode="reflect")
    reference = np.median(np.lib.stride_tricks.sliding_window_view(padded, 7), axis=1)
    assert np.array_equal(median7(y), reference)


def test_median7_removes_three_point_spikes_and_keeps_steps():
    y = np.r_[np.zeros(10), np.ones(10)]
    y[3:6] = 9.0
    y[14:17] = -9.0
    assert np.array_equal(median7(y), np.r_[np.zeros(10), np.ones(10)])


def test_noise_variance_recovers_sigma_under_a_trend_and_irregular_steps():
    rng = np.random.default_rng(1)
    t = np.cumsum(rng.integers(1, 10, 20_000)).astype(float)
    y = 0.001 * t + 0.3 * np.sin(t / 5000) + rng.normal(0, 0.1, t.size)
    sigma = np.sqrt(noise_variance(t, y))
    assert np.median(sigma) == pytest.approx(0.1, rel=0.05)


def test_noise_variance_follows_noise_that_shrinks_over_the_run():
    rng = np.random.default_rng(2)
    t = np.arange(10_000.0)
    scale = np.where(t < 5000, 0.1, 0.01)
    sigma = np.sqrt(noise_variance(t, rng.normal(0, 1, t.size) * scale))
    assert np.median(sigma[:4000]) == pytest.approx(0.1, rel=0.1)
    assert np.median(sigma[6000:]) == pytest.approx(0.01, rel=0.1)


def test_noise_variance_ignores_a_step_and_is_positive_on_quantised_values():
    rng = np.random.default_rng(3)
    y = np.where(np.arange(1000) > 500, 5.0, 0.0) + rng.normal(0, 0.1, 1000)
    assert np.sqrt(noise_variance(np.arange(1000.0), y)).max() < 0.13
    quantised = np.round(0.5 + rng.normal(0, 0.01, 1000), 2)
    assert noise_variance(np.arange(1000.0), quantised).min() > 0


def test_quantum_is_the_grid_step_of_values_with_few_levels():
    rng = np.random.default_rng(4)
    acc = rng.integers(0, 40, 5000) / 8943  # accuracy on 8943 examples
    assert quantum(acc) == pytest.approx(1 / 8943)
    assert quantum(np.round(rng.normal(1.0, 0.1, 5000), 3)) == pytest.approx(0.001)
    assert quantum(rng.normal(size=5000)) == 0.0
    assert quantum(np.full(100, 0.5)) == 0.0


def test_noise_floor_is_rounding_noise_on_the_analysis_scale():
    y = np.log(np.array([0.1, 1.0]))
    assert np.allclose(noise_floor(y, True, 0.01, 1.0), [(0.01 / 0.1) ** 2 / 12, 0.01**2 / 12])
    assert np.allclose(noise_floor(np.zeros(3), False, 0.0, 2.0), (2e-9) ** 2)
