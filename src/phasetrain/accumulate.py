"""Running sums of per-step training figures kept on the device, read to the host in one sync.

The lean-loop shape from DESIGN.md: adding a step's loss, correct count and gradient norm costs a
few tiny in-place kernels and no host sync; `read()` moves everything with one `.tolist()`.
"""
from __future__ import annotations

from typing import Any

import torch


class StepAccumulator:
    """Sums of loss, correct predictions and gradient norm over the steps since the last read."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._sums = torch.zeros(3, dtype=torch.float64, device=device)
        self.steps = 0
        self.samples = 0
        self.acc_samples = 0
        self.grad_steps = 0

    def add(self, loss: torch.Tensor, batch_size: int, correct: torch.Tensor | None,
            grad_norm: torch.Tensor | None) -> None:
        """Add one optimizer step: `loss` (0-d, the batch mean), `correct` predictions of
        `batch_size` samples (None when accuracy is not defined), `grad_norm` (0-d or None)."""
        self._sums[0] += loss.detach()
        self.steps += 1
        self.samples += batch_size
        if correct is not None:
            self._sums[1] += correct
            self.acc_samples += batch_size
        if grad_norm is not None:
            self._sums[2] += grad_norm
            self.grad_steps += 1

    def read(self) -> tuple[dict[str, float], dict[str, float]]:
        """(means, weights) since the last read, then reset. One host sync.

        Means: train_loss per step, train_acc per sample, grad_norm per step; a figure with nothing
        to average is omitted. Weights: how many steps or samples each mean is over.
        """
        loss_sum, correct_sum, grad_sum = self._sums.tolist()
        counts = {"train_loss": self.steps, "train_acc": self.acc_samples, "grad_norm": self.grad_steps}
        sums = {"train_loss": loss_sum, "train_acc": correct_sum, "grad_norm": grad_sum}
        means = {name: sums[name] / count for name, count in counts.items() if count}
        weights = {name: float(count) for name, count in counts.items() if count}
        self.reset()
        return means, weights

    def reset(self) -> None:
        self._sums.zero_()
        self.steps = self.samples = self.acc_samples = self.grad_steps = 0

    def state_dict(self) -> dict[str, Any]:
        return {"sums": self._sums.detach().cpu().clone(), "steps": self.steps, "samples": self.samples,
                "acc_samples": self.acc_samples, "grad_steps": self.grad_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._sums = state["sums"].to(self.device, torch.float64).clone()
        self.steps, self.samples = state["steps"], state["samples"]
        self.acc_samples, self.grad_steps = state["acc_samples"], state["grad_steps"]


class EpochTotals:
    """Host-side weighted means over an epoch, fed by `StepAccumulator.read()` results."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weights: dict[str, float] = {}

    def add(self, means: dict[str, float], weights: dict[str, float]) -> None:
        for name, value in means.items():
            self.sums[name] = self.sums.get(name, 0.0) + value * weights[name]
            self.weights[name] = self.weights.get(name, 0.0) + weights[name]

    def means(self) -> dict[str, float]:
        return {name: self.sums[name] / self.weights[name] for name in self.sums if self.weights[name]}

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "weights": dict(self.weights)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums, self.weights = dict(state["sums"]), dict(state["weights"])
