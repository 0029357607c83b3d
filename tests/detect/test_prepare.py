import numpy as np

from phasetrain.detect.prepare import prepare_curve


def test_nonfinite_values_are_dropped_with_their_steps():
    curve = prepare_curve([1.0, np.nan, 3.0, np.inf, 5.0], [10, 20, 30, 40, 50], "linear")
    assert curve.t.tolist() == [10, 30, 50] and curve.y.tolist() == [1.0, 3.0, 5.0]


def test_auto_scale_reads_positive_many_decade_curves_on_a_log_scale():
    loss = np.geomspace(3.0, 0.003, 500)
    curve = prepare_curve(loss, None, "auto")
    assert curve.log and np.allclose(curve.y, np.log(loss))
    assert curve.to_values(curve.y[7]) == loss[7]
    assert curve.t[0] == 1 and curve.t[-1] == 500


def test_auto_scale_keeps_accuracy_and_narrow_curves_linear():
    assert not prepare_curve(np.linspace(0.0, 1.0, 100), None, "auto").log
    assert not prepare_curve(np.linspace(0.5, 0.9, 100), None, "auto").log
    assert not prepare_curve(np.linspace(-1.0, 5.0, 100), None, "auto").log


def test_auto_scale_keeps_a_rising_accuracy_linear_even_when_it_spans_decades():
    acc = np.r_[np.full(100, 0.002), np.linspace(0.002, 0.99, 50), np.full(100, 0.99)]
    assert not prepare_curve(acc, None, "auto").log
    small_loss = np.geomspace(0.9, 0.0009, 250)  # a loss below 1 that falls 3 decades
    assert prepare_curve(small_loss, None, "auto").log
