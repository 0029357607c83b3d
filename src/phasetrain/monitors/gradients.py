"""Gradient statistics computed on the device without a host sync per parameter."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def global_grad_norm(parameters: nn.Module | Iterable[torch.Tensor]) -> torch.Tensor:
    """L2 norm over all gradients of `parameters` (a model or an iterable of tensors), as a 0-d tensor.

    One fused pass (`torch._foreach_norm`), no `.item()` per tensor; parameters without a gradient
    are skipped. Returns 0.0 when none has one. This is the `grad_norm` a hand-written loop passes
    to `trainer.log_step`: call it after `loss.backward()` and before `optimizer.step()`.
    """
    if isinstance(parameters, nn.Module):
        parameters = parameters.parameters()
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
