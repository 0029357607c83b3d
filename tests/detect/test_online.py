import json
import math

import numpy as np
import pytest

from phasetrain.detect import OnlineDetector, detect_transitions

from .curves import grokking_val_acc, power_law_loss, sigmoid


def run_online(detector: OnlineDetector, t, y) -> list[tuple[float, object]]:
    """(step at which it fired, transition) for every transition reported."""
    fired = []
    for step, value in zip(t, y):
        fired += [(step, tr) for tr in detector.update(step, value)]
    return fired


def staircase(seed: int = 3):
    rng = np.random.default_rng(seed)
    t = np.arange(1, 12001)
    changes = [(2500, 5), (6000, 150), (9500, 40)]
    y = 4.0 - sum(sigmoid(t, c, w) for c, w in changes) + rng.normal(0, 0.05, t.size)
    return t, y, changes


def test_online_agrees_with_offline_on_the_same_curve_and_fires_soon_after():
    t, y, changes = staircase()
    offline = detect_transitions(y, t, 100, max_window=800, scale="linear")
    fired = run_online(OnlineDetector(100, scale="linear", metric="train_loss"), t, y)
    assert len(fired) == len(offline) == len(changes)
    for (when, tr), off, (centre, width) in zip(fired, offline, changes):
        assert tr.metric == "train_loss" and tr.direction == off.direction == "down"
        assert abs(tr.step - off.step) <= max(5, width / 4)
        # documented bound: 1.5 windows of the finest scale that sees it + check_every records
        assert when - (centre + width / 2) <= 1.5 * 800 + 50


def test_sharp_change_fires_within_two_windows():
    t, y, _ = staircase()
    (when, tr), *_ = run_online(OnlineDetector(100, scale="linear"), t, y)
    assert tr.step == 2500 or abs(tr.step - 2500) <= 3
    assert when - 2500 <= 2 * 100


def test_records_fed_in_chunks_check_once_a_chunk_and_find_the_same_changes():
    """`extend` (what the watcher does under a time budget) finds each change of the staircase at
    the step record-by-record updates find it, with a fifth of the checks."""
    t, y, _ = staircase()
    one_by_one = [tr.step for _, tr in run_online(OnlineDetector(100, scale="linear"), t, y)]
    chunked = OnlineDetector(100, scale="linear")
    checks = []
    check = chunked._check
    chunked._check = lambda: checks.append(1) or check()
    found = []
    for start in range(0, t.size, 125):
        found += chunked.extend(t[start:start + 125], y[start:start + 125])
    assert [tr.step for tr in found] == one_by_one and len(one_by_one) == 3
    assert len(checks) == t.size // 125


def test_online_finds_grokking_and_nothing_on_a_smooth_loss():
    t, y = grokking_val_acc()
    fired = run_online(OnlineDetector(100), t, y)
    assert [abs(tr.step - 2000) <= 40 for _, tr in fired] == [True]
    rng = np.random.default_rng(4)
    t = np.arange(1, 6001)
    assert run_online(OnlineDetector(50), t, power_law_loss(t, rng)) == []


def test_buffer_stays_bounded_on_a_long_run():
    rng = np.random.default_rng(5)
    detector = OnlineDetector(20, scale="linear", check_every=40)
    sizes = []
    for step in range(1, 30_001):
        detector.update(step, 1.0 + rng.normal(0, 0.01))
        if step % 5_000 == 0:
            sizes.append(len(detector.state_dict()["y"]))
    assert max(sizes) <= 2 * min(sizes) and max(sizes) < 2_000


def test_state_dict_resume_continues_exactly_and_is_plain_data():
    t, y, _ = staircase(seed=6)
    whole = run_online(OnlineDetector(100, scale="linear"), t, y)
    first = OnlineDetector(100, scale="linear")
    part = run_online(first, t[:7000], y[:7000])
    state = first.state_dict()

    def plain(x):
        if isinstance(x, dict):
            return all(isinstance(k, str) and plain(v) for k, v in x.items())
        if isinstance(x, list):
            return all(plain(v) for v in x)
        return x is None or isinstance(x, (bool, int, float, str))

    assert plain(state) and json.loads(json.dumps(state, allow_nan=False)) == state
    second = OnlineDetector(100, scale="linear")
    second.load_state_dict(state)
    rest = run_online(second, t[7000:], y[7000:])
    assert [(w, tr) for w, tr in part + rest] == whole


def test_nonfinite_values_are_skipped_and_steps_must_increase():
    detector = OnlineDetector(10, scale="linear")
    assert detector.update(1, math.nan) == [] and detector.update(2, math.inf) == []
    with pytest.raises(ValueError, match="strictly increasing"):
        detector.update(2, 1.0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(window_size=None), ValueError, "window_size must be a positive number"),
        (dict(window_size=0), ValueError, "window_size"),
        (dict(window_size=10, max_window=-1), ValueError, "max_window"),
        (dict(window_size=10, scale="ln"), ValueError, "scale"),
        (dict(window_size=10, check_every=0), ValueError, "check_every"),
    ],
)
def test_bad_settings_are_rejected(kwargs, error, match):
    with pytest.raises(error, match=match):
        OnlineDetector(**kwargs)


def test_state_from_another_configuration_is_refused():
    state = OnlineDetector(10, scale="linear").state_dict()
    with pytest.raises(ValueError, match="window_size"):
        OnlineDetector(20, scale="linear").load_state_dict(state)


def test_auto_scale_reads_a_young_loss_on_a_log_scale_and_finds_a_late_drop():
    rng = np.random.default_rng(7)
    t = np.arange(1, 8001)
    y = power_law_loss(t, rng) * np.where(t > 6000, 0.5, 1.0)
    fired = run_online(OnlineDetector(100), t, y)
    assert [tr.step for _, tr in fired] == [6001]
    t, acc = grokking_val_acc()
    assert [abs(tr.step - 2000) <= 40 for _, tr in run_online(OnlineDetector(100), t, acc)] == [True]
