"""Resume checks: a damaged checkpoint dict is a CheckpointError; a live run unlike the checkpoint is refused
before anything is restored, with every difference listed; deliberate changes are accepted when named."""
from __future__ import annotations

import pytest
import torch
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

from phasetrain.run.checkpoints import CheckpointError
from phasetrain.run.resume_checks import (
    ResumeMismatch,
    check_resume_compatible,
    data_description,
    hyperparameters,
    reapply_hyperparameters,
    resume_fields,
    validate_checkpoint,
)

DATA = TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,)))


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def checkpoint_of(net, optimizer, scheduler=None, loader=None, batch_in_epoch=0):
    loader = loader if loader is not None else DataLoader(DATA, batch_size=16)
    net(torch.randn(2, 4)).sum().backward()
    optimizer.step()  # so the optimizer has state
    return {
        "step": 1, "epoch": 0, "model": net.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None, "update": {"scaler": None},
        "history": {}, "run_state": {"step": 1, "batch_in_epoch": batch_in_epoch}, "rng": {}, "rng_epoch_start": {},
        "callbacks": [], "monitors": [], "watcher": {}, "window": {}, "epoch_totals": {}, "run_id": "r1",
        **resume_fields(optimizer, scheduler, loader),
    }


def test_matching_live_objects_pass():
    net = model()
    saved = checkpoint_of(net, optim.Adam(net.parameters(), lr=1e-2))
    validate_checkpoint(saved, "c.pt")
    again = model()
    assert check_resume_compatible(saved, model=again, optimizer=optim.Adam(again.parameters(), lr=1e-2),
                                   train_loader=DataLoader(DATA, batch_size=16)) == []


def test_another_optimizer_class_and_its_hyperparameters_are_all_listed():
    """AdamW(lr=1e-3, weight_decay=1.0) over an Adam(lr=1e-2) checkpoint used to train at lr 1e-2, wd 0."""
    net = model()
    saved = checkpoint_of(net, optim.Adam(net.parameters(), lr=1e-2))
    with pytest.raises(ResumeMismatch) as raised:
        check_resume_compatible(saved, model=net, optimizer=optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1.0),
                                path="run/checkpoint_step_1.pt")
    message = str(raised.value)
    for words in ("'run/checkpoint_step_1.pt'", "torch.optim.adam.Adam", "torch.optim.adamw.AdamW",
                  "lr = 0.01 in the checkpoint, 0.001 live", "weight_decay = 0 in the checkpoint, 1.0 live",
                  "allow_changes"):
        assert words in message, (words, message)


def test_sgd_over_adam_without_class_names_is_refused_not_a_keyerror():
    """An older checkpoint without optimizer_class: the param_groups still tell (no KeyError 'momentum')."""
    net = model()
    saved = checkpoint_of(net, optim.Adam(net.parameters(), lr=1e-2))
    del saved["optimizer_class"], saved["scheduler_class"], saved["data"]
    with pytest.raises(ResumeMismatch, match="'momentum' is missing from the checkpoint") as raised:
        check_resume_compatible(saved, model=net, optimizer=optim.SGD(net.parameters(), lr=1e-2, momentum=0.9))
    assert "'betas' is missing from the live optimizer" in str(raised.value)


def test_model_names_and_shapes():
    net = model()
    saved = checkpoint_of(net, optim.SGD(net.parameters(), lr=0.1))
    other = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2), nn.Linear(2, 2))
    with pytest.raises(ResumeMismatch) as raised:
        check_resume_compatible(saved, model=other, optimizer=optim.SGD(other.parameters(), lr=0.1))
    message = str(raised.value)
    assert "'0.weight' has shape (8, 4) in the checkpoint, (16, 4) live" in message
    assert "missing from the checkpoint: '3.bias', '3.weight'" in message
    assert "optimizer group 0: 4 parameters in the checkpoint, 6 live" in message


def test_scheduler_class_and_presence():
    net = model()
    opt = optim.SGD(net.parameters(), lr=0.1)
    saved = checkpoint_of(net, opt, optim.lr_scheduler.StepLR(opt, step_size=3))
    with pytest.raises(ResumeMismatch, match="StepLR, the live run has none"):
        check_resume_compatible(saved, model=net, optimizer=optim.SGD(net.parameters(), lr=0.1))
    live = optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ResumeMismatch, match="ExponentialLR"):
        check_resume_compatible(saved, model=net, optimizer=live,
                                scheduler=optim.lr_scheduler.ExponentialLR(live, gamma=0.9))


def test_batch_size_and_loader_length():
    net = model()
    saved = checkpoint_of(net, optim.SGD(net.parameters(), lr=0.1), batch_in_epoch=2)
    live = optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ResumeMismatch) as raised:
        check_resume_compatible(saved, model=net, optimizer=live, train_loader=DataLoader(DATA, batch_size=32))
    assert "batch_size: checkpoint 16, live 32" in str(raised.value)
    assert "batches_per_epoch: checkpoint 4, live 2" in str(raised.value)
    with pytest.raises(ResumeMismatch, match="only from a checkpoint at an epoch boundary"):
        check_resume_compatible(saved, model=net, optimizer=live, train_loader=DataLoader(DATA, batch_size=32),
                                allow_changes=("batch_size",))
    at_boundary = checkpoint_of(net, optim.SGD(net.parameters(), lr=0.1), batch_in_epoch=0)
    accepted = check_resume_compatible(at_boundary, model=net, optimizer=live,
                                       train_loader=DataLoader(DATA, batch_size=32), allow_changes=("batch_size",))
    assert accepted == ["batch_size: checkpoint 16, live 32", "batches_per_epoch: checkpoint 4, live 2"]


def test_a_loader_without_sizes_skips_the_data_check():
    net = model()
    saved = checkpoint_of(net, optim.SGD(net.parameters(), lr=0.1))
    batches = iter([(torch.randn(3, 4), torch.zeros(3, dtype=torch.long))])
    assert data_description(batches) == {"batch_size": None, "batches_per_epoch": None}
    assert data_description([1, 2, 3]) == {"batch_size": None, "batches_per_epoch": 3}
    assert check_resume_compatible(saved, model=net, optimizer=optim.SGD(net.parameters(), lr=0.1),
                                   train_loader=batches) == []


def test_allowed_lr_change_is_accepted_and_reapplied_after_the_load():
    net = model()
    opt = optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    saved = checkpoint_of(net, opt, optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5))
    live_opt = optim.SGD(net.parameters(), lr=0.02, momentum=0.9)
    live_sched = optim.lr_scheduler.StepLR(live_opt, step_size=1, gamma=0.5)
    live = hyperparameters(live_opt)
    accepted = check_resume_compatible(saved, model=net, optimizer=live_opt, scheduler=live_sched,
                                       allow_changes=("lr",))
    # under a scheduler the setting is initial_lr; lr is the schedule's position, restored with it
    assert accepted == ["optimizer group 0: initial_lr = 0.1 in the checkpoint, 0.02 live"]
    live_opt.load_state_dict(saved["optimizer"])
    live_sched.load_state_dict(saved["scheduler"])
    assert live_opt.param_groups[0]["lr"] == 0.1  # what torch alone does: the saved rate wins
    reapply_hyperparameters(live_opt, live, ("lr",), live_sched)
    assert live_opt.param_groups[0]["lr"] == 0.02 and live_sched.base_lrs == [0.02]
    assert live_opt.param_groups[0]["momentum"] == 0.9
    live_opt.step()
    live_sched.step()
    assert live_opt.param_groups[0]["lr"] == pytest.approx(0.01)  # the schedule continues from the new rate


def test_allowing_one_change_still_refuses_the_others():
    net = model()
    saved = checkpoint_of(net, optim.SGD(net.parameters(), lr=0.1, momentum=0.9))
    with pytest.raises(ResumeMismatch) as raised:
        check_resume_compatible(saved, model=net, optimizer=optim.SGD(net.parameters(), lr=0.5, momentum=0.5),
                                allow_changes=("lr",))
    assert "momentum = 0.9" in str(raised.value) and "lr = 0.1" not in str(raised.value)


def test_implementation_switches_are_not_differences():
    net = model()
    saved = checkpoint_of(net, optim.Adam(net.parameters(), lr=1e-3, foreach=False))
    assert check_resume_compatible(saved, model=net,
                                   optimizer=optim.Adam(net.parameters(), lr=1e-3, foreach=True)) == []


@pytest.mark.parametrize("allow, error", [(("learning_rate",), ValueError), ("lr", TypeError)])
def test_bad_allow_changes(allow, error):
    net = model()
    saved = checkpoint_of(net, optim.SGD(net.parameters(), lr=0.1))
    with pytest.raises(error, match="allow_changes"):
        check_resume_compatible(saved, model=net, optimizer=optim.SGD(net.parameters(), lr=0.1), allow_changes=allow)


@pytest.mark.parametrize("key", ["step", "model", "optimizer", "history", "run_state", "rng", "callbacks", "watcher"])
def test_a_missing_key_is_a_checkpoint_error_naming_file_and_key(key):
    net = model()
    saved = checkpoint_of(net, optim.SGD(net.parameters(), lr=0.1))
    del saved[key]
    with pytest.raises(CheckpointError, match=f"'runs/c.pt' has no '{key}' entry"):
        validate_checkpoint(saved, "runs/c.pt")


@pytest.mark.parametrize("key, value, words", [
    ("step", "3", "'step' must be int, got str"),
    ("step", True, "'step' must be int, got bool"),
    ("model", [1, 2], "'model' must be dict, got list"),
    ("scheduler", 5, "'scheduler' must be dict or None, got int"),
    ("run_id", 7, "'run_id' must be str, got int"),
    ("data", "16", "'data' must be dict, got str"),
    ("optimizer", {"state": {}}, "'optimizer' is not an optimizer state_dict"),
    ("optimizer", {"state": {}, "param_groups": [{"lr": 1}]}, "'optimizer' is not an optimizer state_dict"),
    ("run_state", {"step": 1, "bogus": 2}, "'run_state' has unknown entries ['bogus']"),
])
def test_a_wrong_type_is_a_checkpoint_error_naming_the_key(key, value, words):
    net = model()
    saved = checkpoint_of(net, optim.SGD(net.parameters(), lr=0.1))
    saved[key] = value
    with pytest.raises(CheckpointError) as raised:
        validate_checkpoint(saved, "runs/c.pt")
    assert words in str(raised.value) and "'runs/c.pt'" in str(raised.value)


def test_older_checkpoints_without_the_new_keys_validate():
    net = model()
    saved = checkpoint_of(net, optim.SGD(net.parameters(), lr=0.1))
    for key in ("run_id", "optimizer_class", "scheduler_class", "data"):
        del saved[key]
    validate_checkpoint(saved, "c.pt")


def test_todays_trainer_checkpoints_pass_validation_and_a_changed_lr_is_caught(tmp_path):
    from phasetrain import PhaseTransitionTrainer
    from phasetrain.run.checkpoints import load_checkpoint_file

    net = model()
    trainer = PhaseTransitionTrainer(net, optim.Adam(net.parameters(), lr=1e-2), nn.CrossEntropyLoss(), device="cpu",
                                     log_dir=tmp_path, checkpoint_freq=2, progress_bar=False)
    trainer.train(DataLoader(DATA, batch_size=16), num_epochs=1)
    path = tmp_path / "checkpoint_step_2.pt"
    saved = load_checkpoint_file(path)
    validate_checkpoint(saved, path)
    assert check_resume_compatible(saved, model=net, optimizer=optim.Adam(net.parameters(), lr=1e-2), path=path) == []
    with pytest.raises(ResumeMismatch, match="lr = 0.01 in the checkpoint, 0.001 live"):
        check_resume_compatible(saved, model=net, optimizer=optim.Adam(net.parameters(), lr=1e-3), path=path)
