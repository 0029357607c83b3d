import numpy as np
import pytest

from phasetrain.detect import detect_transitions
from phasetrain.detect.prepare import prepare_curve
from phasetrain.detect.regimes import spike_trains
from phasetrain.detect.robust import median7, noise_variance

from .curves import spiking_loss

ALL = ("level", "slope", "regime")
WINDOW = 40  # the finest window of these 300-record runs (8 records of 5 steps)


def trains(t: np.ndarray, y: np.ndarray) -> list:
    """`spike_trains` of a raw curve, with the detector's spike filter and noise."""
    curve = prepare_curve(y, t, "auto")
    return spike_trains(curve, median7(curve.y), noise_variance(curve.t, curve.y), None)


@pytest.mark.parametrize("seed", range(6))
def test_loss_spikes_that_keep_coming_are_one_ongoing_regime_from_the_first_spike(seed):
    # as at lr 0.15 in the example: spikes 3-7% tall every 40-60 steps from step 320, on a steep early decay
    t, y = spiking_loss(seed)
    (regime,) = detect_transitions(y, t, kinds=ALL)
    assert regime.kind == "regime" and regime.ongoing and regime.end_step == 1500
    assert abs(regime.start_step - 320) <= WINDOW
    # the rule alone: the spikes are a train (and the dips after them, a weaker one; one regime above)
    assert any(r.start_step == 320 and r.ongoing and r.score > 5 for r in trains(t, y))  # score: in noise sigmas
    assert detect_transitions(y, t) == []  # levels alone: the spike filter removes every spike


@pytest.mark.parametrize("seed", range(6))
def test_a_spike_train_that_stops_is_a_regime_with_an_end(seed):
    t, y = spiking_loss(seed, stop=1000)  # the last spike starts at 940-995; 1-2 records, then a dip of 2-3
    (regime,) = detect_transitions(y, t, kinds=ALL)
    assert regime.kind == "regime" and not regime.ongoing
    assert abs(regime.start_step - 320) <= WINDOW and 940 <= regime.end_step <= 1020


@pytest.mark.parametrize("trend", ["flat", "decaying"])
def test_an_isolated_spike_or_a_few_rare_ones_are_no_regime(trend):
    rng = np.random.default_rng(8)
    t = np.arange(5, 1505, 5)
    clean = np.full(t.size, 0.15) if trend == "flat" else 0.1 + 0.3 * (t / 5) ** -0.5
    # one, two, six every 200 steps (5 finest windows: too rare), five at a clockwork pace (too few; the
    # roughness windows, which see these 70-sigma spikes, find them)
    for spikes in ([600], [600, 650], range(300, 1500, 200), range(600, 850, 50)):
        y = clean * np.exp(rng.normal(0, 0.001, t.size))
        for at in spikes:
            y[np.searchsorted(t, at) : np.searchsorted(t, at) + 2] *= 1.07
        assert trains(t, y) == []
        assert len(spikes) == 5 or detect_transitions(y, t, kinds=ALL) == []
    t, y = spiking_loss(0, stop=540)  # spikes that stop after five (roughness finds those, at 320)
    assert trains(t, y) == []


def test_spikes_from_the_first_record_or_scattered_over_the_run_are_no_train():
    rng = np.random.default_rng(9)
    t = np.arange(1, 3001)
    peaks = 1 + 0.01 * rng.normal(size=t.size)
    peaks[5::60] += 0.2  # the sharp peaks of a cycle, from the start
    assert trains(t, peaks) == []
    scattered = 1 + 0.01 * rng.normal(size=t.size)
    scattered[rng.random(t.size) < 0.01] += 0.2  # 30 spikes at random
    assert trains(t, scattered) == []
    resumed = 1 + 0.01 * rng.normal(size=t.size)
    resumed[5:1500:60] += 0.2
    resumed[1800::60] += 0.2  # the stream pauses for 5 gaps
    assert trains(t, resumed) == []
    late = 1 + 0.01 * rng.normal(size=t.size)
    late[1800::60] += 0.2  # the same spikes from a quiet curve start a train
    (train,) = trains(t, late)
    assert train.start_step == 1801 and train.ongoing
