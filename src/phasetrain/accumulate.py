"""Per-step training figures kept on the device and read to the host in one sync per record.

The lean-loop shape from DESIGN.md: adding a step's loss, correct count and gradient norm costs
no kernel and no host sync; `read()` moves everything with one `.tolist()`.
"""
from __future__ import annotations

from typing import Any

import torch


class StepAccumulator:
    """Per-step loss, correct count and gradient norm since the last read, held as device tensors.

    `add` only appends references (no kernel, no sync); `read` stacks and sums them and moves the
    sums to the host in one `.tolist()`.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def add(self, loss: torch.Tensor, batch_size: int, correct: torch.Tensor | None,
            grad_norm: torch.Tensor | None) -> None:
        """Add one optimizer step: `loss` (0-d, the batch mean), `correct` predictions of
        `batch_size` samples (None when accuracy is not defined), `grad_norm` (0-d or None)."""
        self._losses.append(loss.detach())
        self.samples += batch_size
        if correct is not None:
            self._correct.append(correct)
            self.acc_samples += batch_size
        if grad_norm is not None:
            self._grad_norms.append(grad_norm)

    def read(self) -> tuple[dict[str, float], dict[str, float]]:
        """(means, weights) since the last read, then reset. One host sync.

        Means: train_loss per step, train_acc per sample, grad_norm per step; a figure with nothing
        to average is omitted. Weights: how many steps or samples each mean is over.
        """
        columns = {"train_loss": self._losses, "train_acc": self._correct, "grad_norm": self._grad_norms}
        present = {name: values for name, values in columns.items() if values}
        sums = torch.stack([torch.stack(values).double().sum() for values in present.values()]).tolist() if present else []
        counts = {"train_loss": len(self._losses), "train_acc": self.acc_samples, "grad_norm": len(self._grad_norms)}
        means = {name: total / counts[name] for name, total in zip(present, sums)}
        weights = {name: float(counts[name]) for name in present}
        self.reset()
        return means, weights

    def reset(self) -> None:
        self._losses: list[torch.Tensor] = []
        self._correct: list[torch.Tensor] = []
        self._grad_norms: list[torch.Tensor] = []
        self.samples = self.acc_samples = 0

    def state_dict(self) -> dict[str, Any]:
        return {"losses": [t.detach().cpu() for t in self._losses], "correct": [t.cpu() for t in self._correct],
                "grad_norms": [t.cpu() for t in self._grad_norms], "samples": self.samples, "acc_samples": self.acc_samples}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._losses = [t.to(self.device) for t in state["losses"]]
        self._correct = [t.to(self.device) for t in state["correct"]]
        self._grad_norms = [t.to(self.device) for t in state["grad_norms"]]
        self.samples, self.acc_samples = state["samples"], state["acc_samples"]


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
