import numpy as np
import pytest

from phasetrain.detect import detect_transitions
from phasetrain.detect.scan import geometry, scan_scale


def test_side_fits_equal_a_direct_least_squares_fit_at_every_centre():
    rng = np.random.default_rng(0)
    t = np.cumsum(rng.integers(1, 4, 400)).astype(float) + 1e9  # irregular steps far from 0
    y = 1e3 + 0.01 * (t - t[0]) + np.sin((t - t[0]) / 40.0)
    var = np.full(t.size, 1e-12)  # tiny noise: every side takes its line, not its mean
    geo = geometry(40.0, 2.0, float(t[-1] - t[0]), t.size, 3)
    scan = scan_scale(t, y, var, geo, 3)
    k = ((t - scan.t0) / geo.delta).astype(np.int64)
    for i in range(0, scan.centre.size, 7):
        c = int(scan.centre[i])
        for first, level, slope in [(-(geo.gap + geo.side), scan.level_left, scan.slope_left),
                                    (geo.gap + 1, scan.level_right, scan.slope_right)]:
            inside = (k >= c + first) & (k < c + first + geo.side)
            b, a = np.polyfit(k[inside] - c, y[inside], 1)
            assert level[i] == pytest.approx(a, rel=1e-9, abs=1e-9)
            assert slope[i] == pytest.approx(b, rel=1e-6, abs=1e-9)


def test_1_7_million_points_at_the_finest_window_are_scanned():
    # integer bin moments used to switch to float indices once n * bins**2 passed 2**62
    # (about 1.7e6 points at window_size=8): an IndexError in the scan
    n = 1_700_000
    rng = np.random.default_rng(1)
    t = np.arange(1, n + 1)
    y = np.where(t > 1_000_000, 1.0, 2.0) + rng.normal(0, 0.05, n)
    (tr,) = detect_transitions(y, t, window_size=8, scale="linear", max_window=64)
    assert tr.step == 1_000_001 and tr.direction == "down"
