"""The one recorder every front end drives: policies, files, resume state, hooks."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from phasetrain import load_metrics
from phasetrain.run.config import RecordingConfig
from phasetrain.run.recorder import RunRecorder, transition_hook


def step_curve(n: int = 400, jump_at: int = 201, seed: int = 0) -> list[tuple[int, float]]:
    """val_acc-like records: 0.1 before `jump_at`, 0.9 from it on, with noise of 0.01."""
    noise = np.random.default_rng(seed).normal(0, 0.01, n)
    return [(s, (0.9 if s >= jump_at else 0.1) + noise[s - 1]) for s in range(1, n + 1)]


def started(tmp_path, resuming=False, **kwargs) -> RunRecorder:
    recorder = RunRecorder(RecordingConfig(tmp_path, **kwargs), "test")
    recorder.open_folder(resuming=resuming)
    recorder.start(torch.device("cpu"))
    return recorder


def test_online_detection_calls_the_hooks_with_the_transition(tmp_path):
    found = []
    recorder = started(tmp_path, watch_metrics=("val_acc",), watch_window=20, watch_budget=None)
    recorder.transition_hooks.append(found.append)
    for step, value in step_curve():
        recorder.record(step, {"val_acc": value, "lr": 0.1})
    assert [t.metric for t in found] == ["val_acc"]
    assert abs(found[0].step - 201) <= 1 and found[0].direction == "up"
    assert recorder.transitions == found
    assert recorder.find_transitions("val_acc", 20)[0].step == found[0].step


def test_the_online_window_follows_the_planned_run_when_not_given(tmp_path):
    recorder = RunRecorder(RecordingConfig(tmp_path), "test")
    recorder.start(torch.device("cpu"), planned_steps=30_000)
    assert recorder.watcher.window_size == 300  # 1% of the run, the offline detector's automatic window
    fixed = RunRecorder(RecordingConfig(tmp_path, watch_window=50), "test")
    fixed.start(torch.device("cpu"), planned_steps=30_000)
    assert fixed.watcher.window_size == 50


def test_restore_from_file_keeps_records_up_to_the_checkpoint_and_the_detectors_state(tmp_path):
    first = started(tmp_path, watch_metrics=("val_acc",), watch_window=20, watch_budget=None)
    for step, value in step_curve():
        first.record(step, {"val_acc": value})
    first.state.step = 400
    first.finish()
    resumed = RunRecorder(RecordingConfig(tmp_path, watch_metrics=("val_acc",), watch_window=20, watch_budget=None),
                          "test")
    resumed.restore_from_file(300)
    np.testing.assert_array_equal(resumed.history.steps("val_acc"), np.arange(1, 301))
    assert resumed.transitions == first.transitions and resumed.state.step == 300
    resumed.open_folder(resuming=True)
    assert resumed.run_id == first.run_id
    resumed.start(torch.device("cpu"))
    for step, value in step_curve()[300:]:
        resumed.record(step, {"val_acc": value})
    resumed.state.step = 400
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
    recorder.finish()
    restored = started(tmp_path, resuming=True, watch_metrics=("train_loss",))
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.history.to_dict() == recorder.history.to_dict()
    assert restored.record_window(20, {"lr": 0.5}) == {"train_loss": 2.0, "grad_norm": 3.0, "lr": 0.5}


def test_only_rank_zero_writes_files_under_ddp(tmp_path, monkeypatch):
    monkeypatch.setattr("phasetrain.run.recorder.rank", lambda: 1)
    recorder = started(tmp_path / "run")
    recorder.record(1, {"train_loss": 1.0})
    recorder.finish()
    assert not (tmp_path / "run").exists() and recorder.history.last("train_loss") == 1.0


def test_a_second_record_at_a_step_replaces_the_first_and_an_earlier_step_is_dropped(tmp_path):
    recorder = started(tmp_path)
    recorder.record(6, {"val_loss": 0.5, "val_acc": 0.8})
    recorder.record(6, {"val_loss": 0.4, "val_acc": 0.9})  # e.g. trainer.evaluate() after training
    with pytest.warns(RuntimeWarning, match="'val_loss' is recorded up to step 6; a value at step 5 was dropped"):
        recorder.record(5, {"val_loss": 0.3})
    assert recorder.history.steps("val_loss").tolist() == [6] and recorder.history.values("val_acc").tolist() == [0.9]
    assert recorder.summary()["final_val_acc"] == 0.9


def test_best_step_is_the_lowest_validation_loss_else_the_lowest_epoch_mean_train_loss(tmp_path):
    with_val = started(tmp_path / "a")
    for step, loss in ((10, 0.9), (20, 0.3), (30, 0.5)):
        with_val.state.step = step
        with_val.record(step, {"val_loss": loss, "train_loss": 0.01})
        with_val.end_epoch()
    assert with_val.meta()["best_step"] == 20
    without_val = started(tmp_path / "b")
    improved = []
    for step, losses in ((10, [2.0, 1.0]), (20, [0.5, 0.7]), (30, [0.9, 0.8])):
        for loss in losses:
            without_val.window.add_batch(torch.tensor(loss), 1, None)
        without_val.state.step = step
        improved.append(without_val.end_epoch()[1])
    assert without_val.meta()["best_step"] == 20 and improved == [True, True, False]


def test_building_a_recorder_changes_no_file_of_the_folder_and_a_new_run_refuses_another_runs_files(tmp_path):
    from phasetrain.run.ownership import RunFolderInUse

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "train_loss": 1.0}\n')
    recorder = RunRecorder(RecordingConfig(tmp_path), "test")
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1, "train_loss": 1.0}\n'
    with pytest.raises(RunFolderInUse, match="overwrite=True"):
        recorder.open_folder(resuming=False)
    recorder.finish(RuntimeError("never started"))  # a run that never took its folder writes nothing
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1, "train_loss": 1.0}\n'
    assert not (tmp_path / "metrics.json").exists()


def test_meta_holds_the_settings_as_json(tmp_path):
    recorder = started(tmp_path, hessian_batches=[(torch.zeros(2), torch.zeros(2))], log_freq=7)
    recorder.finish()
    meta = json.loads((tmp_path / "metrics.json").read_text())["meta"]
    assert meta["config"]["log_freq"] == 7 and meta["config"]["hessian_batches"] == 1
    assert meta["framework"] == "test" and meta["finished"] is True


def test_an_unwritable_log_dir_is_refused_when_the_recorder_is_built(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="log_dir .* cannot be written"):
        RunRecorder(RecordingConfig(blocker / "run"), "test")


def test_hooks_take_the_source_and_the_transition_and_the_old_form_still_works_with_a_warning():
    calls = []
    hook = transition_hook(lambda source, transition: calls.append((source, transition)), "owner")
    hook("t")
    with pytest.warns(DeprecationWarning, match=r"on_phase_transition\(transition\) is deprecated"):
        old = transition_hook(lambda transition: calls.append(transition), "owner")
    old("u")
    assert calls == [("owner", "t"), "u"]
    with pytest.raises(TypeError, match="on_phase_transition must be callable"):
        transition_hook(3, "owner")
