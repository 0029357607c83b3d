"""The run-folder rules as a user meets them through the trainer: one run per folder, one writer,
Ctrl-C as a clean stop, resumes that check what they restore, and a summary that says how a run ended."""
from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from torch import nn, optim

from phasetrain import Callback, PhaseTransitionTrainer
from phasetrain.cli import main as cli
from phasetrain.run.checkpoints import load_checkpoint_file, save_checkpoint
from phasetrain.run.lock import RunFolderLocked, RunLock
from phasetrain.run.ownership import RunFolderInUse
from phasetrain.run.resume_checks import ResumeMismatch
from tests.conftest import make_classification, make_mlp


def make_trainer(log_dir, seed=0, optimizer=None, **kwargs):
    torch.manual_seed(seed)
    model = make_mlp()
    optimizer = (optimizer or (lambda params: optim.SGD(params, lr=0.1)))(model.parameters())
    kwargs.setdefault("progress_bar", False)
    return PhaseTransitionTrainer(model, optimizer, nn.CrossEntropyLoss(), device="cpu", log_dir=log_dir, **kwargs)


class SignalAt(Callback):
    """Sends this process `signum` at the training record of `step`, as Ctrl-C or a scheduler would."""

    def __init__(self, step: int, signum: int = signal.SIGINT) -> None:
        self.step, self.signum = step, signum

    def on_log(self, trainer, step, metrics):
        if step == self.step:
            os.kill(os.getpid(), self.signum)


def fresh_loaders():
    """The `loaders` fixture's data and order, new: two runs compared step by step need their own."""
    data = make_classification()
    train = torch.utils.data.TensorDataset(*data[:192])
    val = torch.utils.data.TensorDataset(*data[192:])
    return (torch.utils.data.DataLoader(train, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(1)),
            torch.utils.data.DataLoader(val, batch_size=32))


def nan_on_call(n):
    """A cross-entropy loss that returns NaN on its n-th call only."""
    calls = []

    def loss(outputs, targets):
        calls.append(1)
        return nn.functional.cross_entropy(outputs, targets) * (float("nan") if len(calls) == n else 1.0)

    return loss


def weights(trainer):
    return {name: tensor.clone() for name, tensor in trainer.module.state_dict().items()}


def test_a_new_run_refuses_a_folder_holding_another_run_and_overwrite_clears_it_first(tmp_path, loaders):
    make_trainer(tmp_path, checkpoint_freq=4).train(*loaders, num_epochs=2)
    (tmp_path / "notes.txt").write_text("mine")
    other = make_trainer(tmp_path, seed=1, checkpoint_freq=4)
    with pytest.raises(RunFolderInUse, match="resume_from='latest'.*overwrite=True"):
        other.train(*loaders, num_epochs=1)
    fresh = make_trainer(tmp_path, seed=1, checkpoint_freq=4, keep_last_checkpoints=2, overwrite=True)
    fresh.train(*loaders, num_epochs=1)  # 6 steps an epoch: the old run's checkpoints 4, 8 and 12 are gone
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.glob("checkpoint_step_*.pt")) == ["checkpoint_step_4.pt"]
    resumed = make_trainer(tmp_path, seed=1, checkpoint_freq=4)
    resumed.train(*loaders, num_epochs=2, resume_from="latest")
    assert resumed.state.step == 12 and resumed.get_training_summary()["status"] == "finished"
    assert json.loads((tmp_path / "metrics.json").read_text())["meta"]["run_id"] == fresh.recorder.run_id


def test_building_a_trainer_on_a_finished_run_changes_none_of_its_files(tmp_path, loaders):
    make_trainer(tmp_path, loggers=("jsonl", "csv")).train(*loaders, num_epochs=1)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    analysis = make_trainer(tmp_path, loggers=("jsonl", "csv"))
    analysis.load_checkpoint(tmp_path / "final_model.pt")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_a_second_writer_is_refused_while_the_folder_is_locked(tmp_path, loaders):
    with RunLock(tmp_path):  # another process (or trainer) writing into the folder
        with pytest.raises(RunFolderLocked, match=str(tmp_path)):
            make_trainer(tmp_path).train(*loaders, num_epochs=1)
    make_trainer(tmp_path).train(*loaders, num_epochs=1)  # free again


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_after_the_update_with_a_checkpoint_and_resumes_to_the_same_weights(tmp_path, signum):
    reference = make_trainer(tmp_path / "reference", log_freq=2, checkpoint_freq=None)
    reference.train(*fresh_loaders(), num_epochs=2)
    stopped = make_trainer(tmp_path / "run", log_freq=2, checkpoint_freq=None)
    results = stopped.train(*fresh_loaders(), num_epochs=2, callbacks=[SignalAt(6, signum)])
    assert results["status"] == "interrupted at step 6" and results["stop_reason"] == "interrupted"
    assert load_checkpoint_file(tmp_path / "run" / "checkpoint_step_6.pt")["step"] == 6
    assert not (tmp_path / "run" / "final_model.pt").exists()
    assert signal.getsignal(signum) is (signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
    resumed = make_trainer(tmp_path / "run", log_freq=2, checkpoint_freq=None)
    assert resumed.train(*fresh_loaders(), num_epochs=2, resume_from="latest")["status"] == "finished"
    for name, tensor in weights(reference).items():
        assert torch.equal(weights(resumed)[name], tensor), name


def test_the_summary_and_the_cli_say_how_a_run_ended(tmp_path, loaders, capsys):
    make_trainer(tmp_path, log_freq=2, checkpoint_freq=None).train(*loaders, num_epochs=2, callbacks=[SignalAt(4)])
    assert cli(["summary", str(tmp_path)]) == 0
    assert "interrupted at step 4" in capsys.readouterr().out
    nan_loss = make_trainer(tmp_path / "nan", on_nonfinite="skip", log_freq=2)
    nan_loss.loss_fn = nan_on_call(3)
    summary = nan_loss.train(*loaders, num_epochs=1)
    assert summary["nonfinite_skipped"] == 1 and summary["status"] == "finished"
    raising = make_trainer(tmp_path / "raise", on_nonfinite="raise")
    raising.loss_fn = lambda outputs, targets: outputs.sum() * float("nan")
    with pytest.raises(FloatingPointError):
        raising.train(*loaders, num_epochs=1)
    meta = json.loads((tmp_path / "raise" / "metrics.json").read_text())["meta"]
    assert meta["stop_reason"].startswith("FloatingPointError: non-finite loss")


def test_a_resume_after_a_nan_stop_forgets_the_stale_stop_message(tmp_path, loaders):
    first = make_trainer(tmp_path, checkpoint_freq=2)
    first.loss_fn = nan_on_call(5)
    assert first.train(*loaders, num_epochs=2)["status"].startswith(
        "stopped at step 4: non-finite loss or gradient norm at step 5")
    again = make_trainer(tmp_path, checkpoint_freq=2)
    summary = again.train(*loaders, num_epochs=2, resume_from="latest")
    assert summary["status"] == "finished" and summary["stop_reason"] is None


def test_a_resume_with_another_optimizer_or_batch_size_is_refused_before_anything_changes(tmp_path, loaders):
    make_trainer(tmp_path, optimizer=lambda p: optim.Adam(p, lr=1e-2), checkpoint_freq=4).train(*loaders, num_epochs=1)
    other = make_trainer(tmp_path, optimizer=lambda p: optim.AdamW(p, lr=1e-3, weight_decay=1.0))
    untouched = weights(other)
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(ResumeMismatch, match="Adam.*AdamW"):
        other.train(*loaders, num_epochs=2, resume_from="latest")
    assert all(torch.equal(weights(other)[n], t) for n, t in untouched.items())
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == files  # the run is as it was
    smaller = torch.utils.data.DataLoader(loaders[0].dataset, batch_size=8)
    same = make_trainer(tmp_path, optimizer=lambda p: optim.Adam(p, lr=1e-2))
    with pytest.raises(ResumeMismatch, match="batch_size"):
        same.train(smaller, loaders[1], num_epochs=2, resume_from="latest")
    allowed = make_trainer(tmp_path, optimizer=lambda p: optim.Adam(p, lr=5e-3))
    with pytest.warns(UserWarning, match="lr = 0.01 in the checkpoint, 0.005 live"):
        allowed.train(*loaders, num_epochs=2, resume_from="latest", allow_changes=("lr",))
    assert allowed.optimizer.param_groups[0]["lr"] == 5e-3


def hand_written_run(log_dir, steps=6, **kwargs):
    """A hand-written loop recording through `log_step` every 2 steps; returns its trainer."""
    trainer = make_trainer(log_dir, log_freq=2, **kwargs)
    inputs_all, targets_all = make_classification().tensors
    for step in range(1, steps + 1):
        inputs, targets = inputs_all[16 * step:16 * step + 16], targets_all[16 * step:16 * step + 16]
        trainer.optimizer.zero_grad()
        loss = trainer.loss_fn(trainer.model(inputs), targets)
        loss.backward()
        trainer.optimizer.step()
        if step % 2 == 0:
            trainer.log_step(step, 0, loss.item())
    return trainer


def test_a_hand_written_loop_releases_its_folder_at_finish_or_when_its_trainer_is_gone(tmp_path):
    alive = hand_written_run(tmp_path)
    with pytest.raises(RunFolderLocked, match=r"this process .*trainer\.finish\(\)"):
        hand_written_run(tmp_path, overwrite=True)
    assert json.loads((tmp_path / "run.json").read_text())["run_id"] == alive.recorder.run_id  # untouched
    alive.finish()
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["metrics"]["train_loss"]["steps"] == [2, 4, 6] and written["meta"]["finished"]
    alive.log_step(8, 0, 0.5)  # a later log_step continues the same run
    alive.finish()
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"]["train_loss"]["steps"] == [2, 4, 6, 8]
    del alive
    hand_written_run(tmp_path, steps=4, overwrite=True)  # a notebook cell run again: the last trainer dropped
    replaced = hand_written_run(tmp_path, steps=2, overwrite=True)
    replaced.finish()
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"]["train_loss"]["steps"] == [2]


def test_a_new_run_failing_before_its_first_update_hands_the_folder_back(tmp_path, loaders):
    (tmp_path / "notes.txt").write_text("mine")
    inputs, targets = make_classification().tensors
    malformed = [(inputs[:16], targets[:16], targets[:16])]  # a 3-tuple: refused at the first batch
    with pytest.raises(TypeError, match="pair"):
        make_trainer(tmp_path).train(malformed, num_epochs=1)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]  # run.json, metrics files: gone
    results = make_trainer(tmp_path).train(loaders[0], num_epochs=1)  # the corrected run, same folder
    assert results["total_training_steps"] == len(loaders[0])
    failing_resume = make_trainer(tmp_path)  # fails before its first update too, with step 0 in its state
    with pytest.raises(ResumeMismatch):  # a resume keeps the run it continues, whatever happens
        failing_resume.train(malformed, num_epochs=2, resume_from="latest")
    assert failing_resume.state.step == 0
    assert {"run.json", "metrics.json", "notes.txt"} <= {path.name for path in tmp_path.iterdir()}


def test_a_compiled_models_checkpoints_hold_the_plain_modules_keys_and_resume_either_way(tmp_path, loaders):
    torch.manual_seed(0)
    compiled = torch.compile(make_mlp(), backend="eager")  # the wrapper's own keys carry "_orig_mod."
    trainer = PhaseTransitionTrainer(compiled, optim.SGD(compiled.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                                     device="cpu", log_dir=tmp_path, checkpoint_freq=3, progress_bar=False)
    trainer.train(loaders[0], num_epochs=1)
    checkpoint = load_checkpoint_file(tmp_path / "checkpoint_step_3.pt")
    assert set(checkpoint["model"]) == set(make_mlp().state_dict())
    plain = make_trainer(tmp_path, checkpoint_freq=3)  # the same architecture, not compiled
    results = plain.train(loaders[0], num_epochs=2, resume_from="latest")
    assert results["total_training_steps"] == 2 * len(loaders[0])
    # a checkpoint an earlier version wrote from a compiled model reads with the plain keys too
    prefixed = {**checkpoint, "model": {f"_orig_mod.{key}": value for key, value in checkpoint["model"].items()}}
    save_checkpoint(tmp_path / "old.pt", prefixed)
    assert set(load_checkpoint_file(tmp_path / "old.pt")["model"]) == set(checkpoint["model"])


def test_a_misspelt_latest_is_answered_with_a_suggestion(tmp_path, loaders):
    with pytest.raises(ValueError, match=r"resume_from='lastest' is not a file; did you mean 'latest'"):
        make_trainer(tmp_path).train(loaders[0], num_epochs=1, resume_from="lastest")
