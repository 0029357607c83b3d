"""Norms: the weight-norm monitor, and the global gradient norm the loop records every update.

In grokking the weight norm falls under weight decay while the network moves from memorising to
generalising (Nanda et al. 2023; Liu et al. 2023, "Omnigrok"), so it is recorded next to the loss.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from phasetrain.monitors.base import Monitor, StepContext


class WeightNormMonitor(Monitor):
    """Records `weight_norm` (L2 over all trainable parameters) every `freq` steps.

    A model's parameters are listed once (walking a module tree costs about as much as the norm
    of a small model), as an optimizer holds them; which of them are trainable is asked anew at
    every measurement."""

    def __init__(self, freq: int) -> None:
        self.freq = freq
        self._listed: tuple[nn.Module, list[nn.Parameter]] | None = None  # (model, its parameters)

    @torch.no_grad()
    def compute(self, ctx: StepContext) -> dict[str, float]:
        if self._listed is None or self._listed[0] is not ctx.model:
            self._listed = (ctx.model, list(ctx.model.parameters()))
        params = [p for p in self._listed[1] if p.requires_grad]
        if params and params[0].device.type == "cpu":
            return {"weight_norm": host_norm(params)}
        return {"weight_norm": float(device_norm(params))}

def global_grad_norm(parameters: nn.Module | Iterable[torch.Tensor]) -> torch.Tensor:
    """L2 norm over all gradients of `parameters` (a model or an iterable of tensors), as a 0-d tensor.

    One fused pass (`torch._foreach_norm`), no `.item()` per tensor; parameters without a gradient
    are skipped. Returns 0.0 when none has one. This is the `grad_norm` a hand-written loop passes
    to `trainer.log_step`: call it after `loss.backward()` and before `optimizer.step()`.
    """
    if isinstance(parameters, nn.Module):
        parameters = parameters.parameters()
    return device_norm([p.grad for p in parameters if p.grad is not None])


def device_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """L2 norm over all `tensors` as a 0-d tensor on their device, not read to the host (0 for none):
    one fused pass (`torch._foreach_norm`) and the norm of the per-tensor norms."""
    if not tensors:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


def host_grad_norm(parameters: Iterable[torch.Tensor]) -> float:
    """`global_grad_norm` read to the host as a float (see `host_norm`). The loop uses it where a
    read costs no sync (a CPU), to check finiteness and sum the norm on the host."""
    return host_norm([p.grad for p in parameters if p.grad is not None])


def host_norm(tensors: list[torch.Tensor]) -> float:
    """L2 norm over all `tensors` as a float (0.0 for none): one fused pass and one read per
    tensor, cheaper than reducing on the device and reading the result where reads are free."""
    return math.hypot(*[norm.item() for norm in torch._foreach_norm(tensors)]) if tensors else 0.0
