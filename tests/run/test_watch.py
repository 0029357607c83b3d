"""Online detection inside the loop: `on_phase_transition` fires within a bounded delay."""
from __future__ import annotations

import io

import numpy as np
import torch
from torch import nn, optim

from phasetrain import Callback, Monitor, PhaseTransitionTrainer
from phasetrain.detect import detect_transitions
from phasetrain.run.watch import TransitionWatcher
from tests.conftest import make_mlp


class ScriptedProbe(Monitor):
    """Emits `probe`: 0.1 with small noise, jumping to 0.9 at step `jump` (a known transition)."""

    def __init__(self, jump: int) -> None:
        self.freq, self.jump = 1, jump
        self.rng = np.random.default_rng(0)

    def compute(self, ctx):
        level = 0.9 if ctx.step >= self.jump else 0.1
        return {"probe": level + 0.01 * float(self.rng.standard_normal())}


class Seen(Callback):
    def __init__(self):
        self.events = []

    def on_phase_transition(self, trainer, transition):
        self.events.append((trainer.state.step, transition))


def test_transition_fires_once_within_bounded_delay(tmp_path):
    data = [(torch.randn(8, 8), torch.randint(0, 3, (8,))) for _ in range(50)]
    model = make_mlp()
    trainer = PhaseTransitionTrainer(model, optim.SGD(model.parameters(), lr=0.01), nn.CrossEntropyLoss(),
                                     log_dir=tmp_path, monitors=[ScriptedProbe(jump=300)], watch_metrics=("probe",),
                                     watch_window=20, watch_budget=None, progress_bar=False, checkpoint_freq=None)
    seen = Seen()
    trainer.train(data, num_epochs=12, callbacks=[seen])  # 600 steps
    assert len(seen.events) == 1
    fired_at, transition = seen.events[0]
    assert transition.metric == "probe" and transition.direction == "up"
    assert abs(transition.step - 300) <= 2
    assert fired_at - transition.end_step <= 1.5 * 8 * 20 + 16  # documented bound: 1.5 max_window + check interval
    offline = detect_transitions(trainer.history.values("probe"), trainer.history.steps("probe"), window_size=20)
    assert [t.step for t in offline] == [transition.step]


def test_watcher_windows_follow_sparse_recording_and_state_round_trips():
    watcher = TransitionWatcher(("val_acc",), window_size=10, time_budget=None)
    rng = np.random.default_rng(1)
    steps = np.arange(100, 20001, 100)
    values = np.where(steps >= 10000, 0.95, 0.05) + 0.01 * rng.standard_normal(steps.size)
    found = []
    for step, value in zip(steps[:120], values[:120]):
        found += watcher.observe(int(step), {"val_acc": float(value)})
    buffer = io.BytesIO()
    torch.save(watcher.state_dict(), buffer)  # the state goes into checkpoints: plain types only
    buffer.seek(0)
    clone = TransitionWatcher(("val_acc",), window_size=10, time_budget=None)
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    assert clone._detectors["val_acc"].window_size == 1000  # 10 records of 100 steps, not 10 steps
    for step, value in zip(steps[120:], values[120:]):
        a = watcher.observe(int(step), {"val_acc": float(value)})
        b = clone.observe(int(step), {"val_acc": float(value)})
        assert a == b
        found += a
    assert [t.step for t in found] == [10000]


def test_an_epoch_without_updates_does_not_break_the_watcher(tmp_path):
    """Validation of an epoch whose every update was skipped lands at the same step as the last one."""
    model = make_mlp()

    def nan_loss(outputs, targets):
        return nn.functional.cross_entropy(outputs, targets) * float("nan")

    trainer = PhaseTransitionTrainer(model, optim.SGD(model.parameters(), lr=0.1), nan_loss, log_dir=tmp_path,
                                     on_nonfinite="skip", progress_bar=False, checkpoint_freq=None)
    data = [(torch.randn(4, 8), torch.randint(0, 3, (4,)))]
    trainer.train(data, data, num_epochs=3)
    assert trainer.history.steps("val_loss").tolist() == [0]  # one step, the latest epoch's value
    assert trainer.state.nonfinite_skipped == 3


class Crossing:
    """A user's stream detector: one transition when the value first passes 0.5 (plain state)."""

    def __init__(self, window_size, metric):
        self.window_size, self.metric, self.fired = window_size, metric, False

    def update(self, step, value):
        from phasetrain.detect import Transition

        if self.fired or value < 0.5:
            return []
        self.fired = True
        return [Transition(step, step, step, 0.0, value, value, 1.0, "up", 99.0)]

    def state_dict(self):
        return {"fired": self.fired}

    def load_state_dict(self, state):
        self.fired = state["fired"]


def test_any_stream_detector_watches_through_the_trainer_and_survives_a_resume(tmp_path):
    windows, found = [], []

    def factory(window_size, metric):
        windows.append((window_size, metric))
        return Crossing(window_size, metric)

    class Collect(Callback):
        def on_phase_transition(self, trainer, transition):
            found.append((transition.metric, transition.step))

    def trainer():
        model = make_mlp()
        return PhaseTransitionTrainer(model, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                                      log_dir=tmp_path, progress_bar=False, watch_metrics=["probe"],
                                      watch_detector=factory, monitors=[ScriptedProbe(jump=30)], checkpoint_freq=20)

    batches = [(torch.randn(8, 8), torch.randint(0, 3, (8,))) for _ in range(10)]
    first = trainer()
    first.train(batches, num_epochs=4, callbacks=[Collect()])
    assert found == [("probe", 30)] and windows[0][1] == "probe" and windows[0][0] >= 10
    assert first.recorder.watcher.state_dict()["detectors"]["probe"] == {"fired": True}
    trainer().train(batches, num_epochs=6, callbacks=[Collect()], resume_from="latest")  # from step 40
    assert found == [("probe", 30)]  # the restored detector remembers it fired: no second report


class FakeClock:
    """A clock the test moves: `advance` seconds of training pass between records."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CountingDetector:
    """Wraps the default detector and counts the checks it makes (calls to _check)."""

    def __init__(self, window_size, metric):
        from phasetrain.detect import OnlineDetector

        self.inner = OnlineDetector(window_size=window_size, metric=metric, check_every=4)
        self.checks = 0
        check = self.inner._check

        def counted():
            self.checks += 1
            return check()
        self.inner._check = counted

    def update(self, step, value):
        return self.inner.update(step, value)

    def extend(self, steps, values):
        return self.inner.extend(steps, values)


def watch_with_clock(budget, seconds_per_record, check_seconds):
    """A step curve fed through a watcher whose clock moves `seconds_per_record` between records
    and `check_seconds` inside each detector check; returns (watcher, detector, transitions)."""
    clock = FakeClock()
    made = []

    def factory(window_size, metric):
        detector = CountingDetector(window_size, metric)
        check = detector.inner._check

        def costly():
            clock.now += check_seconds
            return check()
        detector.inner._check = costly
        made.append(detector)
        return detector

    watcher = TransitionWatcher(("val_acc",), window_size=200, detector=factory, time_budget=budget, clock=clock)
    rng = np.random.default_rng(3)
    found = []
    for step in range(10, 6001, 10):
        clock.now += seconds_per_record
        value = (0.9 if step >= 3000 else 0.1) + 0.01 * float(rng.standard_normal())
        found += watcher.observe(step, {"val_acc": value})
    found += watcher.flush()
    return watcher, made[0], found


def test_a_watch_budget_holds_records_back_on_a_fast_loop_and_finds_the_same_change():
    """Checks of 1 ms on a loop that records every 0.2 ms would take most of the time: with a 1%
    budget far fewer checks run, the time in checks stays near the budget, and the jump is found
    at the same step as with every check."""
    _, free, found_free = watch_with_clock(None, 2e-4, 1e-3)
    watcher, held, found_held = watch_with_clock(0.01, 2e-4, 1e-3)
    assert [t.step for t in found_held] == [t.step for t in found_free] and len(found_free) == 1
    assert abs(found_free[0].step - 3000) <= 20
    assert held.checks < free.checks / 5
    elapsed = 600 * 2e-4 + held.checks * 1e-3
    assert watcher._spent <= 0.01 * elapsed + 1e-3  # at most one check over the budget


def test_a_watch_budget_changes_nothing_on_a_slow_loop():
    """Records every 50 ms: 1 ms checks take 0.5% of the time, under a 1% budget: every check runs."""
    _, free, found_free = watch_with_clock(None, 0.05, 1e-3)
    _, budgeted, found_budgeted = watch_with_clock(0.01, 0.05, 1e-3)
    assert budgeted.checks == free.checks and found_budgeted == found_free
def test_the_watcher_says_a_metric_moves_while_it_changes_by_a_tenth_of_its_range():
    # A val_loss-like curve every 10 steps: falls from 2 to 1 over the first 200 steps, stands at 1
    # (noise 0.01), falls to 0.2 between steps 1000 and 1200, then stands again.
    steps = np.arange(10, 2001, 10)
    level = np.interp(steps, [0, 200, 1000, 1200], [2.0, 1.0, 1.0, 0.2])
    values = level + 0.01 * np.random.default_rng(0).standard_normal(steps.size)
    watcher = TransitionWatcher(("val_loss",), window_size=20)  # 10 records: a window of 100 steps
    moving = {}
    for step, value in zip(steps.tolist(), values.tolist()):
        watcher.observe(step, {"val_loss": value, "lr": 0.1})
        moving[step] = watcher.moving
        if step == 1100:
            clone = TransitionWatcher(("val_loss",), window_size=20)
            clone.load_state_dict(watcher.state_dict())
            assert clone.moving
    assert not moving[10] and all(moving[s] for s in range(110, 201, 10))  # once a window has passed
    assert not any(moving[s] for s in range(310, 1001, 10))  # the plateau
    assert all(moving[s] for s in range(1040, 1201, 10))  # the fall, once a window of it is a tenth of the range
    assert not any(moving[s] for s in range(1310, 2001, 10))


def test_records_held_back_are_fed_before_a_checkpoint_so_a_resume_reports_nothing_twice(tmp_path):
    """A watcher always over its budget holds every record; the checkpoint's state must still
    have seen them (fed and announced), or the resumed run would confirm the same change again."""
    from phasetrain.run.config import RecordingConfig
    from phasetrain.run.recorder import RunRecorder

    found = []
    recorder = RunRecorder(RecordingConfig(tmp_path, watch_metrics=("val_acc",), watch_window=20), "test")
    recorder.watcher.clock = lambda: 0.0 if recorder.watcher._began is None else 1.0  # every check over budget
    recorder.watcher._spent = 1.0
    recorder.transition_hooks.append(found.append)
    rng = np.random.default_rng(0)
    for step in range(1, 401):
        recorder.record(step, {"val_acc": (0.9 if step >= 201 else 0.1) + 0.01 * float(rng.standard_normal())})
    assert found == [] and recorder.watcher._held["val_acc"]
    state = recorder.state_dict()
    assert [t.metric for t in found] == ["val_acc"] and not state["watcher"]["held"]


def test_a_hand_written_loop_hears_of_held_back_changes_by_its_save_metrics(tmp_path):
    """log_step on a fast loop: the watch budget holds records back; save_metrics() feeds them,
    so the hook fires before the loop ends."""
    model = make_mlp()
    found = []
    trainer = PhaseTransitionTrainer(model, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                                     log_dir=tmp_path, progress_bar=False, watch_metrics=("val_acc",),
                                     watch_window=20)
    trainer.recorder.transition_hooks.append(found.append)
    trainer.recorder.watcher.clock = lambda: 0.0 if trainer.recorder.watcher._began is None else 1.0
    trainer.recorder.watcher._spent = 1.0  # every check over budget: every record held
    rng = np.random.default_rng(0)
    for step in range(1, 401):
        trainer.log_step(step, 0, 1.0, val_acc=(0.9 if step >= 201 else 0.1) + 0.01 * float(rng.standard_normal()))
    held_until_now = list(found)
    trainer.save_metrics()
    assert held_until_now == [] and [t.metric for t in found] == ["val_acc"] and abs(found[0].step - 201) <= 2
