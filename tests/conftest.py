"""Shared tiny tasks: small enough that a whole training run takes well under a second."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_classification(n: int = 256, features: int = 8, classes: int = 3, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, features, generator=generator)
    targets = (inputs[:, :classes].argmax(dim=1)).long()
    return TensorDataset(inputs, targets)


def make_mlp(features: int = 8, classes: int = 3, hidden: int = 16, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, classes))


@pytest.fixture
def loaders() -> tuple[DataLoader, DataLoader]:
    """(train, val): 192 training samples in batches of 32 (6 steps per epoch), 64 validation samples."""
    data = make_classification()
    train = TensorDataset(*data[:192])
    val = TensorDataset(*data[192:])
    return (DataLoader(train, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(1)),
            DataLoader(val, batch_size=32))


@pytest.fixture(autouse=True)
def sigint_raises_keyboard_interrupt():
    """Every test starts with Python's own SIGINT handler: a test run started in the background by
    a non-interactive shell inherits SIGINT ignored, which phasetrain rightly leaves ignored."""
    import signal

    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
