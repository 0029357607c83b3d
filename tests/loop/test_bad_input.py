"""Bad input fails before any step is taken, with a message naming the argument and the value."""
from __future__ import annotations

import pytest
import torch
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

from phasetrain import PhaseTransitionTrainer
from tests.conftest import make_mlp


def build(tmp_path, model=None, optimizer=None, **kwargs):
    model = model or make_mlp()
    optimizer = optimizer or optim.SGD(model.parameters(), lr=0.1)
    kwargs.setdefault("log_dir", tmp_path / "run")
    return PhaseTransitionTrainer(model, optimizer, nn.CrossEntropyLoss(), **kwargs)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"log_freq": 0}, ValueError, ["log_freq", "0"]),
        ({"log_freq": -5}, ValueError, ["log_freq", "-5"]),
        ({"log_freq": 2.5}, TypeError, ["log_freq", "2.5"]),
        ({"log_freq": True}, TypeError, ["log_freq", "True"]),
        ({"checkpoint_freq": -1}, ValueError, ["checkpoint_freq", "-1"]),
        ({"checkpoint_freq": "10"}, TypeError, ["checkpoint_freq", "'10'"]),
        ({"hessian_freq": 0}, ValueError, ["hessian_freq", "0"]),
        ({"watch_budget": 1.5}, ValueError, ["watch_budget", "1.5", "(0, 1)"]),
        ({"watch_budget": 0}, ValueError, ["watch_budget", "0"]),
        ({"watch_budget": "1%"}, TypeError, ["watch_budget", "'1%'"]),
        ({"hessian_budget": 2}, ValueError, ["hessian_budget", "2", "(0, 1)"]),
        ({"hessian_method": "full"}, ValueError, ["hessian_method", "'full'", "'diagonal'", "'eigenvalues'"]),
        ({"gradient_clip": 0.0}, ValueError, ["gradient_clip", "0.0"]),
        ({"gradient_clip": float("nan")}, ValueError, ["gradient_clip", "nan"]),
        ({"gradient_clip": "1"}, TypeError, ["gradient_clip"]),
        ({"early_stopping_patience": 0}, ValueError, ["early_stopping_patience", "0"]),
        ({"early_stopping_min_delta": -0.1}, ValueError, ["early_stopping_min_delta", "-0.1"]),
        ({"scheduler_interval": "batch"}, ValueError, ["scheduler_interval", "'batch'", "'epoch'", "'step'"]),
        ({"keep_last_checkpoints": 0}, ValueError, ["keep_last_checkpoints", "0"]),
        ({"on_nonfinite": "ignore"}, ValueError, ["on_nonfinite", "'ignore'", "'skip'"]),
        ({"device": "gpu"}, ValueError, ["device", "'gpu'"]),
        ({"scheduler": 3}, TypeError, ["scheduler", "3"]),
        ({"accuracy_fn": "top1"}, TypeError, ["accuracy_fn", "'top1'"]),
        ({"loggers": ["neptune"]}, ValueError, ["loggers", "neptune"]),
    ],
)
def test_bad_constructor_argument_names_argument_and_value(tmp_path, kwargs, error, words):
    with pytest.raises(error) as raised:
        build(tmp_path, **kwargs)
    for word in words:
        assert word in str(raised.value), (word, str(raised.value))


def test_model_whose_parameters_are_not_in_the_optimizer_is_refused(tmp_path):
    other = make_mlp()
    with pytest.raises(ValueError, match="optimizer holds none of the model's trainable parameters"):
        build(tmp_path, model=make_mlp(), optimizer=optim.SGD(other.parameters(), lr=0.1))


def test_model_without_trainable_parameters_is_refused(tmp_path):
    model = make_mlp()
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build(tmp_path, model=model, optimizer=optim.SGD(model.parameters(), lr=0.1))


def test_non_module_model_and_non_callable_loss_are_refused(tmp_path):
    model = make_mlp()
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        PhaseTransitionTrainer(lambda x: x, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                               log_dir=tmp_path)
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        PhaseTransitionTrainer(model, optim.SGD(model.parameters(), lr=0.1), "mse", log_dir=tmp_path)
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        PhaseTransitionTrainer(model, "adam", nn.CrossEntropyLoss(), log_dir=tmp_path)


def test_unwritable_log_dir_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="log_dir .* cannot be written"):
        build(tmp_path, log_dir=blocker / "run")


def test_empty_loader_fails_before_any_step(tmp_path):
    trainer = build(tmp_path)
    before = [p.clone() for p in trainer.model.parameters()]
    empty = DataLoader(TensorDataset(torch.zeros(0, 8), torch.zeros(0, dtype=torch.long)), batch_size=4)
    with pytest.raises(ValueError, match="train_loader is empty"):
        trainer.train(empty, num_epochs=1)
    with pytest.raises(ValueError, match="val_loader is empty"):
        trainer.train(DataLoader(TensorDataset(torch.zeros(4, 8), torch.zeros(4, dtype=torch.long))), empty,
                      num_epochs=1)
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert trainer.state.step == 0


def test_wrong_batch_structure_fails_before_any_update(tmp_path):
    trainer = build(tmp_path)
    before = [p.clone() for p in trainer.model.parameters()]
    with pytest.raises(TypeError, match=r"\(inputs, targets\) pair.*tuple of length 3 from train_loader"):
        trainer.train([(torch.zeros(4, 8), torch.zeros(4, dtype=torch.long), torch.zeros(4))], num_epochs=1)
    with pytest.raises(TypeError, match="must be an iterable"):
        trainer.train(42, num_epochs=1)
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_a_malformed_val_loader_is_refused_before_any_step_naming_it(tmp_path):
    trainer = build(tmp_path, checkpoint_freq=1)
    before = [p.clone() for p in trainer.model.parameters()]
    train = [(torch.randn(4, 8), torch.zeros(4, dtype=torch.long))] * 3
    triples = [(torch.zeros(4, 8), torch.zeros(4, dtype=torch.long), torch.zeros(4))]
    with pytest.raises(TypeError, match=r"\(inputs, targets\) pair.*tuple of length 3 from val_loader"):
        trainer.train(train, triples, num_epochs=1)
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert trainer.state.step == 0
    assert list((tmp_path / "run").glob("*")) == []  # no checkpoint, no metrics: the run folder untouched
    trainer.train(train, [(torch.zeros(4, 8), torch.zeros(4, dtype=torch.long))], num_epochs=1)  # then it runs
    assert trainer.state.step == 3


def test_a_dict_batch_is_refused_with_how_to_pass_it(tmp_path):
    batch = {"input_ids": torch.zeros(4, 8, dtype=torch.long), "labels": torch.zeros(4, dtype=torch.long)}
    good = [(torch.zeros(4, 8), torch.zeros(4, dtype=torch.long))]
    for train, val, loader in (([batch], None, "train_loader"), (good, [batch], "val_loader")):
        trainer = build(tmp_path)
        with pytest.raises(TypeError) as raised:
            trainer.train(train, val, num_epochs=1)
        message = str(raised.value)
        assert f"got a dict from {loader} (keys 'input_ids', 'labels')" in message
        assert "model(**inputs)" in message
        assert "yield (batch, batch['labels']) with loss_fn=lambda outputs, _: outputs.loss" in message
        assert "(batch, None)" in message and "(inputs, labels)" in message
        assert trainer.state.step == 0


def test_the_val_loader_check_leaves_the_run_s_random_numbers_alone(tmp_path):
    """The check draws the validation loader's first batch (a DataLoader draws a seed from the global
    RNG to start a pass); the RNG streams are restored, so shuffling and dropout in training are
    those of a run without the check."""
    data = TensorDataset(torch.randn(64, 8), torch.randint(0, 3, (64,)))
    weights = []
    for val in (None, DataLoader(data, batch_size=16)):
        torch.manual_seed(5)
        model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.5), nn.Linear(16, 3))
        trainer = build(tmp_path / str(len(weights)), model=model, checkpoint_freq=None, progress_bar=False)
        trainer.train(DataLoader(data, batch_size=16, shuffle=True), val, num_epochs=1)
        weights.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))


@pytest.mark.parametrize("num_epochs, error", [(0, ValueError), (-1, ValueError), (1.5, TypeError)])
def test_bad_num_epochs(tmp_path, num_epochs, error):
    with pytest.raises(error, match="num_epochs"):
        build(tmp_path).train([(torch.zeros(4, 8), torch.zeros(4, dtype=torch.long))], num_epochs=num_epochs)


def test_bad_callback_is_refused(tmp_path):
    with pytest.raises(TypeError, match=r"callbacks\[1\]"):
        build(tmp_path).train([(torch.zeros(4, 8), torch.zeros(4, dtype=torch.long))], num_epochs=1,
                              callbacks=[lambda t, e, m: None, "print"])


def test_detect_on_unknown_metric_lists_recorded_ones(tmp_path):
    trainer = build(tmp_path, log_freq=1)
    trainer.train([(torch.zeros(4, 8), torch.zeros(4, dtype=torch.long))], num_epochs=1)
    with pytest.raises(KeyError) as raised:
        trainer.detect_phase_transitions(metric="val_accuracy")
    message = str(raised.value)
    assert "'val_accuracy'" in message and "train_loss" in message and "grad_norm" in message


@pytest.mark.parametrize("window_size, error", [(0, ValueError), (-10, ValueError), (2.5, TypeError)])
def test_detect_with_bad_window_names_it(tmp_path, window_size, error):
    trainer = build(tmp_path, log_freq=1)
    trainer.train([(torch.zeros(4, 8), torch.zeros(4, dtype=torch.long))], num_epochs=1)
    with pytest.raises(error, match="window_size"):
        trainer.detect_phase_transitions(metric="train_loss", window_size=window_size)


def test_detect_with_an_absurd_window_says_how_long_the_run_was(tmp_path):
    trainer = build(tmp_path, log_freq=1)
    trainer.train([(torch.zeros(4, 8), torch.zeros(4, dtype=torch.long))] * 10, num_epochs=1)
    with pytest.raises(ValueError, match=r"window_size=1000000 is more than 10x the 10 steps 'train_loss'"):
        trainer.detect_phase_transitions(metric="train_loss", window_size=1_000_000)
    assert isinstance(trainer.detect_phase_transitions(metric="train_loss", window_size=10), list)
