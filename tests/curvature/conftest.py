"""Tiny float64 models with their exact dense loss Hessians (torch.func.hessian)."""
from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call, hessian
from torch.nn import functional as F


def _mlp(act: type[nn.Module]) -> nn.Module:
    return nn.Sequential(nn.Linear(5, 6), act(), nn.Linear(6, 3))


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Conv2d(2, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 2 * 2, 3)
    )


def _bn_dropout() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Dropout(0.5), nn.Linear(6, 3))


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mlp_tanh": (lambda: _mlp(nn.Tanh), (5,)),
    "mlp_relu": (lambda: _mlp(nn.ReLU), (5,)),
    "cnn": (_cnn, (1, 6, 6)),
    "bn_dropout": (_bn_dropout, (5,)),
}


def dense_hessian(model: nn.Module, loss_fn: Callable, inputs: Tensor, targets: Tensor) -> Tensor:
    """The exact (num_params, num_params) Hessian of loss_fn(model(inputs), targets)."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p.detach() for n, p in model.named_parameters() if p.requires_grad]
    shapes, sizes = [p.shape for p in params], [p.numel() for p in params]

    def loss_of(flat: Tensor) -> Tensor:
        pieces = [t.view(s) for t, s in zip(flat.split(sizes), shapes)]
        return loss_fn(functional_call(model, dict(zip(names, pieces)), (inputs,)), targets)

    return hessian(loss_of)(torch.cat([p.reshape(-1) for p in params]))


@pytest.fixture(params=list(MODELS))
def problem(request: pytest.FixtureRequest) -> tuple[nn.Module, tuple[Tensor, Tensor], Tensor]:
    """(model in eval mode, batch, dense Hessian) in float64 for each tiny architecture."""
    build, shape = MODELS[request.param]
    torch.manual_seed(0)
    model = build().double()
    with torch.no_grad():
        model(torch.randn(16, *shape, dtype=torch.float64))  # give batch norm running statistics
    model.eval()
    gen = torch.Generator().manual_seed(1)
    batch = (torch.randn(16, *shape, generator=gen, dtype=torch.float64), torch.randint(0, 3, (16,), generator=gen))
    return model, batch, dense_hessian(model, F.cross_entropy, *batch)


@pytest.fixture
def dense() -> Callable[..., Tensor]:
    """The `dense_hessian` reference, for tests that build their own problem."""
    return dense_hessian
