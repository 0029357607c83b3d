import numpy as np
import pytest

from phasetrain.detect import detect_in_history, detect_transitions
from phasetrain.run.history import MetricHistory, load_metrics, save_metrics


def test_detect_in_history_reads_a_saved_metrics_file(tmp_path):
    rng = np.random.default_rng(0)
    history = MetricHistory()
    for step in range(10, 4010, 10):  # train_acc every log_freq=10 steps
        history.log(step, {"train_acc": (0.9 if step > 2000 else 0.2) + rng.normal(0, 0.01)})
    history.log(4000, {"val_loss": float("nan")})
    save_metrics(tmp_path / "metrics.json", history)
    loaded, _ = load_metrics(tmp_path)
    (tr,) = detect_in_history(loaded, "train_acc", window_size=100)
    assert tr.metric == "train_acc" and tr.step == 2010 and tr.direction == "up"
    direct = detect_transitions(history.values("train_acc"), history.steps("train_acc"), 100)
    assert [d.with_metric("train_acc") for d in direct] == [tr]


def test_detect_in_history_names_the_recorded_metrics_for_an_unknown_one():
    history = MetricHistory()
    history.log(1, {"train_loss": 1.0})
    with pytest.raises(KeyError, match="train_loss"):
        detect_in_history(history, "val_acc")
