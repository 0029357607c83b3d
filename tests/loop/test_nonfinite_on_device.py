"""`on_nonfinite` decided on the device, read once per record: the path an accelerator with a fused
optimizer takes (no host sync on a step that does not record). Exercised here on the CPU by making
the loop treat reads as costly, as it does on a GPU."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn, optim

from phasetrain import Callback, PhaseTransitionTrainer
from phasetrain.run.checkpoints import load_checkpoint_file
from tests.conftest import make_mlp
from tests.loop.test_nonfinite import batches, nan_at_call


def on_device(tmp_path, policy, call=4, log_freq=5, optimizer=None, **kwargs) -> PhaseTransitionTrainer:
    torch.manual_seed(0)
    model = make_mlp()
    optimizer = (optimizer or (lambda params: optim.SGD(params, lr=0.1, fused=True)))(model.parameters())
    trainer = PhaseTransitionTrainer(model, optimizer, nan_at_call(call), log_dir=tmp_path, on_nonfinite=policy,
                                     log_freq=log_freq, progress_bar=False, checkpoint_freq=None, **kwargs)
    trainer._update.reads_on_host = False  # as on a GPU: figures stay on the device
    assert trainer._decides_finiteness_on_device()  # as train() will find
    return trainer


def clean_run(tmp_path, data, steps, optimizer=None, **kwargs):
    torch.manual_seed(0)
    model = make_mlp()
    optimizer = (optimizer or (lambda params: optim.SGD(params, lr=0.1, fused=True)))(model.parameters())
    trainer = PhaseTransitionTrainer(model, optimizer, nn.CrossEntropyLoss(), log_dir=tmp_path, progress_bar=False,
                                     checkpoint_freq=None, **kwargs)
    trainer.train(data[:steps], num_epochs=1)
    return trainer


def test_stop_rewinds_to_the_last_finite_state_read_at_the_next_record(tmp_path):
    data = batches()
    trainer = on_device(tmp_path / "run", "stop", call=4, log_freq=5)
    results = trainer.train(data, num_epochs=2)
    assert results["total_training_steps"] == 3 and trainer.state.batch_in_epoch == 3
    assert "non-finite loss or gradient norm at step 4" in results["stop_reason"]
    checkpoint = load_checkpoint_file(tmp_path / "run" / "checkpoint_step_3.pt")
    reference = clean_run(tmp_path / "reference", data, 3)
    for name, value in reference.module.state_dict().items():
        assert torch.equal(checkpoint["model"][name], value) and torch.equal(trainer.module.state_dict()[name], value)
    assert "train_loss" not in trainer.history  # the figures of the record that saw the NaN are dropped


def test_stop_rewinds_a_per_step_scheduler_with_the_step(tmp_path):
    data = batches()
    trainer = on_device(tmp_path / "run", "stop", call=8, log_freq=5, scheduler_interval="step")
    trainer.scheduler = torch.optim.lr_scheduler.ExponentialLR(trainer.optimizer, gamma=0.5)
    trainer.train(data, num_epochs=1)
    assert trainer.state.step == 7
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** 7)
    assert load_checkpoint_file(tmp_path / "run" / "checkpoint_step_7.pt")["scheduler"]["last_epoch"] == 7


def test_skip_leaves_the_weights_as_if_the_bad_batch_were_absent(tmp_path):
    data = batches()
    trainer = on_device(tmp_path / "run", "skip", call=4, log_freq=5,
                        optimizer=lambda params: optim.Adam(params, lr=0.01, fused=True))
    trainer.train(data, num_epochs=1)
    reference = clean_run(tmp_path / "reference", data[:3] + data[4:], 9,
                          optimizer=lambda params: optim.Adam(params, lr=0.01, fused=True))
    for a, b in zip(trainer.module.parameters(), reference.module.parameters()):
        assert torch.equal(a, b)
    assert trainer.state.nonfinite_skipped == 1 and trainer.history.values("nonfinite_skipped").tolist() == [1]
    assert all(v == v for v in trainer.history.values("train_loss"))  # the NaN is left out of the means
    assert trainer.state.step == 10  # on the device a skipped update still counts as a step


def test_raise_reports_the_step_and_saves_the_state_before_it(tmp_path):
    trainer = on_device(tmp_path, "raise", call=2, log_freq=5)
    with pytest.raises(FloatingPointError, match="step 2"):
        trainer.train(batches(), num_epochs=1)
    assert load_checkpoint_file(tmp_path / "checkpoint_step_1.pt")["step"] == 1


class StepOfReads(Callback):
    """Records the step being made (its batch, one per update, in the first epoch) at every
    `.item()` and `.tolist()` a tensor is asked for."""

    def __init__(self, monkeypatch) -> None:
        self.steps: list[int] = []
        self.trainer = None
        for name in ("item", "tolist"):
            original = getattr(torch.Tensor, name)

            def read(tensor, *args, _original=original, **kwargs):
                if self.trainer is not None:
                    self.steps.append(self.trainer.state.batch_in_epoch)
                return _original(tensor, *args, **kwargs)
            monkeypatch.setattr(torch.Tensor, name, read)

    def on_train_start(self, trainer):
        self.trainer = trainer


def test_no_value_is_read_to_the_host_on_a_step_that_does_not_record(tmp_path, monkeypatch):
    reads = StepOfReads(monkeypatch)
    trainer = on_device(tmp_path, "stop", call=10**9, log_freq=5,
                        optimizer=lambda params: optim.AdamW(params, lr=0.01, fused=True))
    trainer.train(batches(20), num_epochs=1, callbacks=[reads])
    assert reads.steps and set(reads.steps) <= {5, 10, 15, 20}


def test_an_accelerator_run_with_an_optimizer_built_unfused_is_told_how_to_avoid_the_per_update_sync(tmp_path):
    data = batches()

    def run(folder, fused, reads_on_host):
        torch.manual_seed(0)
        model = make_mlp()
        trainer = PhaseTransitionTrainer(model, optim.SGD(model.parameters(), lr=0.1, fused=fused),
                                         nn.CrossEntropyLoss(), log_dir=tmp_path / folder, progress_bar=False)
        trainer._update.reads_on_host = reads_on_host
        trainer.train(data[:4], num_epochs=1)
        return trainer

    with pytest.warns(UserWarning, match=r"SGD is not fused, so on cpu the on_nonfinite check.*fused=True"):
        assert not run("unfused", None, reads_on_host=False)._checks_on_device
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert run("fused", True, reads_on_host=False)._checks_on_device
        run("cpu", None, reads_on_host=True)  # reads are free where the figures are host floats
