"""The global norms the loop records: gradient norm (device and host reads) and weight norm."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from phasetrain.monitors.base import StepContext
from phasetrain.monitors.norms import WeightNormMonitor, global_grad_norm, host_grad_norm, host_norm


def model_with_gradients() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    model[2].bias.requires_grad_(False)  # frozen: no gradient, not part of the weight norm
    model(torch.randn(4, 5)).square().sum().backward()
    return model


def test_host_and_device_gradient_norms_equal_the_norm_of_all_gradients_concatenated():
    model = model_with_gradients()
    expected = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).norm().item()
    assert host_grad_norm(model.parameters()) == pytest.approx(expected, rel=1e-6)
    assert global_grad_norm(model).item() == pytest.approx(expected, rel=1e-6)


def test_no_gradients_and_no_tensors_give_zero():
    model = nn.Linear(3, 2)
    assert host_grad_norm(model.parameters()) == 0.0 and global_grad_norm(model).item() == 0.0
    assert host_norm([]) == 0.0


def test_weight_norm_covers_the_trainable_parameters_only():
    model = model_with_gradients()
    trainable = [p for p in model.parameters() if p.requires_grad]
    expected = torch.cat([p.detach().flatten() for p in trainable]).norm().item()
    ctx = StepContext(model, None, None, 1, 0, (None, None), torch.device("cpu"))
    assert WeightNormMonitor(freq=1).compute(ctx)["weight_norm"] == pytest.approx(expected, rel=1e-6)
    assert host_norm(trainable) == pytest.approx(expected, rel=1e-6)


def test_weight_norm_follows_freezing_and_another_model():
    model = model_with_gradients()
    monitor = WeightNormMonitor(freq=1)
    ctx = StepContext(model, None, None, 1, 0, (None, None), torch.device("cpu"))
    before = monitor.compute(ctx)["weight_norm"]
    model[0].weight.requires_grad_(False)  # frozen after the first measurement: left out
    frozen = torch.cat([model[0].bias.detach(), model[2].weight.detach().flatten()]).norm().item()
    assert monitor.compute(ctx)["weight_norm"] == pytest.approx(frozen, rel=1e-6) != pytest.approx(before)
    other = nn.Linear(2, 2)
    ctx = StepContext(other, None, None, 2, 0, (None, None), torch.device("cpu"))
    expected = torch.cat([other.weight.detach().flatten(), other.bias.detach()]).norm().item()
    assert monitor.compute(ctx)["weight_norm"] == pytest.approx(expected, rel=1e-6)
