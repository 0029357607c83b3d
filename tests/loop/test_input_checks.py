"""Device, loader and watch_metrics checks: clear errors (or a did-you-mean warning) before any step."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn, optim
from torch.utils.data import DataLoader

from phasetrain import PhaseTransitionTrainer
from phasetrain.loop.batches import as_device, available_devices, check_loader
from phasetrain.run.config import check_watch_metrics, is_built_in_metric
from tests.conftest import make_classification, make_mlp


def test_a_cuda_device_that_is_not_there_names_device_and_what_is_available():
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU: absent on every machine
    with pytest.raises(ValueError) as raised:
        as_device(missing)
    message = str(raised.value)
    assert f"device={missing!r}" in message and "'cpu'" in message and "available" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_plain_cuda_without_cuda_is_refused_by_the_trainer(tmp_path):
    model = make_mlp()
    with pytest.raises(ValueError, match="device='cuda' is not available on this machine; available: 'cpu'"):
        PhaseTransitionTrainer(model, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), device="cuda",
                               log_dir=tmp_path)


def test_available_devices_lists_cpu_and_every_gpu():
    listed = available_devices()
    assert listed.startswith("'cpu'")
    assert listed.count("cuda:") == torch.cuda.device_count()


def test_valid_devices_pass():
    assert as_device("cpu") == torch.device("cpu")
    assert as_device(torch.device("cpu")) == torch.device("cpu")
    if torch.cuda.is_available():
        assert as_device("cuda:0") == torch.device("cuda:0")


@pytest.mark.parametrize("single_pass", [
    lambda batches: (b for b in batches),
    lambda batches: iter(batches),
    lambda batches: map(tuple, batches),
])
def test_a_single_pass_loader_is_refused_naming_train_loader(single_pass):
    batches = [(torch.randn(4, 8), torch.zeros(4, dtype=torch.long))]
    with pytest.raises(TypeError) as raised:
        check_loader("train_loader", single_pass(batches))
    message = str(raised.value)
    assert "train_loader" in message and "single-pass" in message and "DataLoader or a list" in message


def test_a_generator_given_to_train_fails_before_any_step(tmp_path):
    data = make_classification(64)
    model = make_mlp()
    trainer = PhaseTransitionTrainer(model, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                                     log_dir=tmp_path, device="cpu", progress_bar=False)
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(TypeError, match="train_loader is a single-pass iterator"):
        trainer.train((batch for batch in DataLoader(data, batch_size=16)), num_epochs=3)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_re_iterable_loaders_pass():
    check_loader("train_loader", DataLoader(make_classification(16), batch_size=4))
    check_loader("train_loader", [(torch.randn(2, 8), torch.zeros(2, dtype=torch.long))])
    with pytest.raises(ValueError, match="val_loader is empty"):
        check_loader("val_loader", [])


def test_a_typo_in_watch_metrics_warns_with_a_did_you_mean():
    with pytest.warns(UserWarning, match="'val_accuracy'.*did you mean 'val_acc'"):
        assert check_watch_metrics(["val_loss", "val_accuracy"]) == ["val_accuracy"]


def test_an_unrelated_name_lists_what_phasetrain_records():
    with pytest.warns(UserWarning, match="phasetrain records: train_loss"):
        check_watch_metrics(["zzz"])


def test_known_names_and_declared_extras_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_watch_metrics(["val_acc", "hessian_eig_1", "hessian_eig_12", "weight_norm", "my_probe"],
                                   extra_names=["my_probe"]) == []
    assert is_built_in_metric("hessian_eig_3") and not is_built_in_metric("hessian_eig_0")
