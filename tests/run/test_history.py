"""The metric store: columnar, one truth, and a strict-JSON file that round-trips."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from phasetrain.run.history import MetricHistory, load_metrics, save_metrics


def test_log_keeps_each_metric_on_its_own_steps():
    history = MetricHistory()
    history.log(10, {"train_loss": 1.0, "lr": 0.1})
    history.log(12, {"val_loss": 2.0, "skipped": None})
    history.log(20, {"train_loss": 0.5})
    assert history.names() == ["train_loss", "lr", "val_loss"]
    assert history.steps("train_loss").tolist() == [10, 20]
    assert history.values("train_loss").tolist() == [1.0, 0.5]
    assert history.steps("val_loss").tolist() == [12]
    assert history.last("train_loss") == 0.5 and history.last_step("train_loss") == 20
    assert history.last("missing") is None
    assert "skipped" not in history


def test_unknown_metric_error_lists_recorded_ones():
    history = MetricHistory()
    history.log(1, {"train_loss": 1.0, "val_acc": 0.5})
    with pytest.raises(KeyError, match="'val_loss' was not recorded; recorded metrics: train_loss, val_acc"):
        history.values("val_loss")


def test_save_and_load_round_trip_with_nonfinite_as_null(tmp_path):
    history = MetricHistory()
    history.log(1, {"a": 1.5, "b": math.nan})
    history.log(2, {"a": math.inf, "b": -2.0})
    save_metrics(tmp_path / "metrics.json", history, {"epochs_run": 3})
    document = json.loads((tmp_path / "metrics.json").read_text())
    assert document["metrics"]["a"] == {"steps": [1, 2], "values": [1.5, None]}
    loaded, meta = load_metrics(tmp_path)
    assert meta == {"epochs_run": 3}
    assert loaded.steps("b").tolist() == [1, 2]
    assert np.isnan(loaded.values("b")[0]) and loaded.values("b")[1] == -2.0


def test_state_dict_round_trip_is_exact():
    history = MetricHistory()
    for step in range(1, 1001):
        history.log(step, {"x": 1 / step, "y": step ** 0.5})
    restored = MetricHistory()
    restored.load_state_dict(history.state_dict())
    assert restored.values("x").tobytes() == history.values("x").tobytes()
    assert restored.steps("y").tolist() == list(range(1, 1001))


def test_columns_are_compact():
    history = MetricHistory()
    for step in range(100_000):
        history.log(step, {"train_loss": 0.1})
    assert history._values["train_loss"].itemsize == 8 and history._steps["train_loss"].itemsize == 8


@pytest.mark.parametrize("content, words", [
    ("{not json", "not valid JSON"),
    ('{"format": "other"}', "not a phasetrain metrics file"),
    ('{"format": "phasetrain-metrics", "metrics": {"a": {"steps": [1, 2], "values": [1]}}}', "malformed"),
])
def test_load_metrics_rejects_bad_files_naming_the_path(tmp_path, content, words):
    path = tmp_path / "metrics.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=words) as raised:
        load_metrics(path)
    assert str(path) in str(raised.value)


def test_load_metrics_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics file"):
        load_metrics(tmp_path / "nothing")


def test_steps_stay_strictly_increasing_per_metric():
    history = MetricHistory()
    history.log(5, {"val_loss": 1.0})
    history.log(5, {"val_loss": 0.5, "val_acc": 0.9})
    assert history.steps("val_loss").tolist() == [5] and history.values("val_loss").tolist() == [0.5]
    with pytest.raises(ValueError, match="'val_loss' is already recorded up to step 5; got step 3"):
        history.log(3, {"val_loss": 0.1})
