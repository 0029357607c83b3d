"""Weight-norm monitor: the L2 norm of all trainable parameters.

In grokking the weight norm falls under weight decay while the network moves from memorising to
generalising (Nanda et al. 2023; Liu et al. 2023, "Omnigrok"), so it is recorded next to the loss.
"""
from __future__ import annotations

import torch

from phasetrain.monitors.base import Monitor, StepContext


class WeightNormMonitor(Monitor):
    """Records `weight_norm` (L2 over all trainable parameters) every `freq` steps."""

    def __init__(self, freq: int) -> None:
        self.freq = freq

    @torch.no_grad()
    def compute(self, ctx: StepContext) -> dict[str, float]:
        params = [p for p in ctx.model.parameters() if p.requires_grad]
        norms = torch._foreach_norm(params)
        return {"weight_norm": float(torch.linalg.vector_norm(torch.stack(norms)))}
