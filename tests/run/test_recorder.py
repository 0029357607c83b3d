"""The framework-free recorder both callbacks share: online detection, resume from a file, checkpoint state."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from phasetrain import load_metrics
from phasetrain.run.recorder import RecorderConfig, RunRecorder


def step_curve(n: int = 400, jump_at: int = 201, seed: int = 0) -> list[tuple[int, float]]:
    """val_acc-like records: 0.1 before `jump_at`, 0.9 from it on, with noise of 0.01."""
    noise = np.random.default_rng(seed).normal(0, 0.01, n)
    return [(s, (0.9 if s >= jump_at else 0.1) + noise[s - 1]) for s in range(1, n + 1)]


def started(tmp_path, **kwargs) -> RunRecorder:
    recorder = RunRecorder(RecorderConfig(tmp_path, **kwargs), "test")
    recorder.start(torch.device("cpu"))
    return recorder


def test_online_detection_calls_the_hook_with_the_transition(tmp_path):
    found = []
    recorder = started(tmp_path, watch_metrics=("val_acc",), watch_window=20, on_phase_transition=found.append)
    for step, value in step_curve():
        recorder.record(step, {"val_acc": value, "lr": 0.1})
    assert [t.metric for t in found] == ["val_acc"]
    assert abs(found[0].step - 201) <= 1 and found[0].direction == "up"
    assert recorder.transitions == found
    assert recorder.find_transitions("val_acc", 20)[0].step == found[0].step


def test_restore_from_file_keeps_records_up_to_the_checkpoint_and_the_detectors_state(tmp_path):
    first = started(tmp_path, watch_metrics=("val_acc",), watch_window=20)
    for step, value in step_curve():
        first.record(step, {"val_acc": value})
    first.save()
    resumed = RunRecorder(RecorderConfig(tmp_path, watch_metrics=("val_acc",), watch_window=20), "test")
    resumed.restore_from_file(300)
    np.testing.assert_array_equal(resumed.history.steps("val_acc"), np.arange(1, 301))
    assert resumed.transitions == first.transitions and resumed.counters["step"] == 300
    resumed.start(torch.device("cpu"))
    for step, value in step_curve()[300:]:
        resumed.record(step, {"val_acc": value})
    resumed.finish()
    history, meta = load_metrics(tmp_path)
    np.testing.assert_array_equal(history.values("val_acc"), first.history.values("val_acc"))
    assert meta["finished"] is True and meta["total_training_steps"] == 400


def test_state_dict_survives_a_weights_only_checkpoint_and_restores_the_open_window(tmp_path):
    recorder = started(tmp_path, watch_metrics=("train_loss",))
    recorder.record(10, {"train_loss": 1.0})
    recorder.window.add_batch(torch.tensor(2.0), 4, None)
    recorder.window.add_grad_norm(torch.tensor(3.0))
    buffer = io.BytesIO()
    torch.save(recorder.state_dict(), buffer)
    buffer.seek(0)
    restored = started(tmp_path, watch_metrics=("train_loss",))
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.history.to_dict() == recorder.history.to_dict()
    assert restored.log_window(20, {"lr": 0.5}) == {"train_loss": 2.0, "grad_norm": 3.0, "lr": 0.5}


def test_only_rank_zero_writes_files_under_ddp(tmp_path, monkeypatch):
    monkeypatch.setattr("phasetrain.run.recorder.rank", lambda: 1)
    recorder = started(tmp_path / "run")
    recorder.record(1, {"train_loss": 1.0})
    recorder.finish()
    assert not (tmp_path / "run").exists() and recorder.history.last("train_loss") == 1.0


def test_a_second_record_at_the_same_step_keeps_the_first_and_detection_still_runs(tmp_path):
    recorder = started(tmp_path)
    recorder.record(6, {"val_loss": 0.5, "val_acc": 0.8})
    recorder.record(6, {"val_loss": 0.4, "val_acc": 0.9})  # e.g. trainer.evaluate() after training
    recorder.record(5, {"val_loss": 0.3})
    assert recorder.history.steps("val_loss").tolist() == [6] and recorder.history.values("val_acc").tolist() == [0.8]
    assert recorder.summary()["final_val_acc"] == 0.8


def test_an_unwritable_log_dir_is_refused_when_the_callback_is_built(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="log_dir .* cannot be written"):
        RunRecorder(RecorderConfig(blocker / "run"), "test")
