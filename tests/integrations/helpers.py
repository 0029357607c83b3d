"""Exact references shared by the integration tests: dense Hessian eigenvalues, gradient norms, data."""
from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, hessian
from torch.nn import functional as F


def classification_data(n: int = 256, features: int = 8, classes: int = 3, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Inputs (n, features) and integer labels (n,) of a learnable 3-class task."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, features, generator=generator)
    return inputs, inputs[:, :classes].argmax(dim=1)


def top_hessian_eigenvalue(model: nn.Module, run: Callable[[Callable[..., Any]], Tensor]) -> float:
    """Largest eigenvalue of the dense float64 Hessian (torch.func.hessian) of the loss
    `run(forward)` over the trainable parameters of `model`; `forward(*args, **kwargs)` calls a
    float64 copy of `model` with the parameters being differentiated (give it float64 inputs)."""
    model = copy.deepcopy(model).double().eval()
    named = [(n, p.detach()) for n, p in model.named_parameters() if p.requires_grad]
    sizes = [p.numel() for _, p in named]

    def loss(flat: Tensor) -> Tensor:
        params = {n: piece.view_as(p) for (n, p), piece in zip(named, torch.split(flat, sizes))}
        return run(lambda *args, **kwargs: functional_call(model, params, args, kwargs))

    dense = hessian(loss)(torch.cat([p.reshape(-1) for _, p in named]))
    return float(torch.linalg.eigvalsh(dense)[-1])


def reference_grad_norm(parameters) -> float:
    """sqrt of the sum of squared gradient entries, in float64, one parameter at a time."""
    return float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in parameters if p.grad is not None)))


class TinyClassifier(nn.Module):
    """An nn.Module that returns {"logits", "loss"} (the loss when labels are given), as HF models do:
    it trains in the HF Trainer, and in the other front ends with `loss_fn = outputs["loss"]`."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))

    def forward(self, x: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        logits = self.net(x)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = F.cross_entropy(logits, labels)
        return out
