"""A NaN at a chosen step under each `on_nonfinite` policy: stop, skip, raise."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn, optim

from phasetrain import PhaseTransitionTrainer
from phasetrain.run.checkpoints import load_checkpoint_file
from tests.conftest import make_mlp


def nan_at_call(call: int):
    """Cross-entropy that returns NaN on its `call`-th training call (1-based)."""
    state = {"calls": 0}

    def loss_fn(outputs, targets):
        loss = nn.functional.cross_entropy(outputs, targets)
        if torch.is_grad_enabled():
            state["calls"] += 1
            if state["calls"] == call:
                return loss * float("nan")
        return loss

    return loss_fn


def batches(n: int = 10):
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(8, 8, generator=generator), torch.randint(0, 3, (8,), generator=generator)) for _ in range(n)]


def build(tmp_path, policy, call=4, **kwargs):
    model = make_mlp()
    return PhaseTransitionTrainer(model, optim.SGD(model.parameters(), lr=0.1), nan_at_call(call), log_dir=tmp_path,
                                  on_nonfinite=policy, log_freq=1, progress_bar=False, checkpoint_freq=None, **kwargs)


def test_stop_saves_last_finite_state_and_reports_the_step(tmp_path):
    trainer = build(tmp_path, "stop")
    results = trainer.train(batches(), num_epochs=2)
    assert results["total_training_steps"] == 3
    assert "non-finite loss or gradient norm at step 4" in results["stop_reason"]
    checkpoint = load_checkpoint_file(tmp_path / "checkpoint_step_3.pt")
    assert checkpoint["step"] == 3
    for name, value in trainer.model.state_dict().items():
        assert torch.isfinite(value).all()
        assert torch.equal(checkpoint["model"][name], value)
    json.loads((tmp_path / "metrics.json").read_text())
    assert trainer.history.steps("train_loss").tolist() == [1, 2, 3]


def test_skip_drops_the_update_and_counts_it(tmp_path):
    trainer = build(tmp_path, "skip")
    results = trainer.train(batches(), num_epochs=1)
    assert results["total_training_steps"] == 9  # 10 batches, one update dropped
    assert trainer.state.nonfinite_skipped == 1
    assert trainer.history.values("nonfinite_skipped").tolist() == [1]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert all(v == v for v in trainer.history.values("train_loss"))  # no NaN reached the records
    document = json.loads((tmp_path / "metrics.json").read_text())
    assert document["meta"]["nonfinite_skipped"] == 1


def test_skip_leaves_weights_as_if_the_bad_batch_were_absent(tmp_path):
    data = batches()
    skipped = build(tmp_path / "a", "skip", call=4)
    skipped.train(data, num_epochs=1)
    clean = build(tmp_path / "b", "skip", call=10**9)
    clean.train(data[:3] + data[4:], num_epochs=1)
    for a, b in zip(skipped.model.parameters(), clean.model.parameters()):
        assert torch.equal(a, b)


def test_raise_raises_after_saving(tmp_path):
    trainer = build(tmp_path, "raise")
    with pytest.raises(FloatingPointError, match="step 4"):
        trainer.train(batches(), num_epochs=1)
    assert (tmp_path / "checkpoint_step_3.pt").is_file()
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"]["train_loss"]["steps"] == [1, 2, 3]


def test_nan_gradient_with_finite_loss_is_caught_when_the_norm_is_tracked(tmp_path):
    model = make_mlp()

    def loss_with_nan_grad(outputs, targets):
        loss = nn.functional.cross_entropy(outputs, targets)
        return loss + 0.0 * torch.sqrt(outputs.sum() * 0.0 - 1.0).nan_to_num(0.0)  # value finite, gradient NaN

    trainer = PhaseTransitionTrainer(model, optim.SGD(model.parameters(), lr=0.1), loss_with_nan_grad, log_dir=tmp_path,
                                     on_nonfinite="skip", progress_bar=False, checkpoint_freq=None)
    trainer.train(batches(3), num_epochs=1)
    assert trainer.state.nonfinite_skipped == 3 and trainer.state.step == 0
