"""Per-step training figures, summed between records and read to the host in one go per record.

Adding a step's figures costs as little as the device allows: on a CPU a value already read to
the host (the loop reads the loss and gradient norm there anyway, to check they are finite) is
summed as a float; on an accelerator values stay device tensors (no host sync per step) and
`read()` moves them with one `.tolist()` (after one all-reduce under DDP, so records are
global). The arg-max correct count of a classification batch is not computed per step: the
outputs are kept (up to PENDING_OUTPUTS_LIMIT elements) and counted in one pass per record.
"""
from __future__ import annotations

from typing import Any

import torch

from phasetrain.run.distributed import all_reduce_sum, is_distributed

# Elements of classification outputs (of the storage they keep alive) held for the per-record
# correct count; beyond it the held outputs are counted at once (large ones every step).
PENDING_OUTPUTS_LIMIT = 1 << 20
NAMES = ("train_loss", "train_acc", "grad_norm")

Number = float | torch.Tensor


class StepAccumulator:
    """Sums since the last read of the per-batch loss and correct count and the per-update
    gradient norm; each value a host float or a 0-d device tensor.

    `add_batch`, `add_predictions`, `add_grad_norm` and `add_update` (all three for one update)
    launch no kernel and read nothing to the host; `read` weighs, sums, reduces across DDP ranks
    and returns host floats. A non-finite device loss or norm (an update the loop skipped on the
    device, without reading it) is left out of the means, with its weight.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def add_batch(self, loss: Number, batch_size: int, correct: Number | None) -> None:
        """One (micro-)batch: `loss` (its mean over the batch), its `batch_size`, and `correct`
        predictions counted in samples (None when accuracy is undefined)."""
        if isinstance(loss, torch.Tensor):
            self._losses.append(loss.detach())
            self._sizes.append(batch_size)
        else:
            self._host[0] += loss * batch_size
        self._counts[0] += batch_size
        if correct is not None:
            self._add(self._correct, 1, correct)
            self._counts[1] += batch_size

    def add_predictions(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """A classification batch's class scores `(N, C)` and integer targets `(N,)`: its arg-max
        correct count joins the sums at the next read (or once the held outputs pass the limit)."""
        self._outputs.append(outputs.detach())
        self._targets.append(targets)
        self._counts[1] += targets.shape[0]
        # what holding it keeps alive: a view (the last position's logits) holds its whole base
        self._held += outputs.untyped_storage().nbytes() // outputs.element_size()
        if self._held > PENDING_OUTPUTS_LIMIT:
            self._count_held_predictions()

    def add_update(self, batches: list[tuple], grad_norm: Number | None) -> None:
        """One optimizer update, in one call (the training loop's): its micro-batches as
        `(loss, batch_size, correct, predictions)`, where `predictions` is an `(outputs, targets)`
        pair for `add_predictions` or None (then `correct` is as for `add_batch`), and its
        gradient norm as for `add_grad_norm`."""
        for loss, batch_size, correct, predictions in batches:
            self.add_batch(loss, batch_size, correct)
            if predictions is not None:
                self.add_predictions(*predictions)
        self.add_grad_norm(grad_norm)

    def add_grad_norm(self, grad_norm: Number | None) -> None:
        """One update's global gradient norm, or None when not computed."""
        if grad_norm is not None:
            self._add(self._norms, 2, grad_norm)
            self._counts[2] += 1

    def read(self) -> tuple[dict[str, float], dict[str, float]]:
        """(means, weights) since the last read, summed over DDP ranks, then reset. At most one
        host sync.

        Means: train_loss and train_acc per sample, grad_norm per update; a figure with nothing to
        average is omitted. Weights: the samples or updates each mean is over.
        """
        self._count_held_predictions()
        totals, counts = list(self._host), [float(c) for c in self._counts]
        device_parts = self._device_sums()
        if is_distributed():
            local = torch.tensor(totals + counts, dtype=torch.float64, device=self.device)
            for index, total, left_out in device_parts:
                local[index] += total
                if left_out is not None:
                    local[3 + index] -= left_out
            values = all_reduce_sum(local).tolist()
            totals, counts = values[:3], values[3:]
        elif device_parts:
            values = torch.stack([value for _, total, left_out in device_parts
                                  for value in (total, left_out) if value is not None]).tolist()
            for index, _, left_out in device_parts:
                totals[index] += values.pop(0)
                if left_out is not None:
                    counts[index] -= values.pop(0)
        self.reset()
        weights = {name: count for name, count in zip(NAMES, counts) if count}
        return {name: totals[i] / counts[i] for i, name in enumerate(NAMES) if name in weights}, weights

    def _device_sums(self) -> list[tuple[int, torch.Tensor, torch.Tensor | None]]:
        """(figure index, sum, weight left out as non-finite) of the device values (0-d float64)."""
        parts: list[tuple[int, torch.Tensor, torch.Tensor | None]] = []
        if self._losses:
            losses = torch.stack(self._losses).double()
            sizes = torch.tensor(self._sizes, dtype=torch.float64, device=losses.device)
            finite = torch.isfinite(losses)
            parts.append((0, torch.where(finite, losses * sizes, 0.0).sum(), torch.where(finite, 0.0, sizes).sum()))
        if self._correct:
            parts.append((1, torch.stack(self._correct).double().sum(), None))
        if self._norms:
            norms = torch.stack(self._norms).double()
            finite = torch.isfinite(norms)
            parts.append((2, torch.where(finite, norms, 0.0).sum(), (~finite).double().sum()))
        return parts

    def _add(self, parts: list[torch.Tensor], index: int, value: Number) -> None:
        if isinstance(value, torch.Tensor):
            parts.append(value)
        else:
            self._host[index] += value

    def _count_held_predictions(self) -> None:
        """Count the held outputs' correct predictions (a few kernels for all of them; read at
        once on a CPU, where a read costs no sync)."""
        if not self._outputs:
            return
        outputs = self._outputs[0] if len(self._outputs) == 1 else torch.cat(self._outputs)
        targets = self._targets[0] if len(self._targets) == 1 else torch.cat(self._targets)
        correct = torch.count_nonzero(outputs.argmax(dim=1) == targets)
        self._add(self._correct, 1, correct.item() if correct.device.type == "cpu" else correct)
        self._outputs, self._targets, self._held = [], [], 0

    def reset(self) -> None:
        self._host = [0.0, 0.0, 0.0]  # loss x samples, correct samples, gradient norms
        self._counts = [0, 0, 0]  # samples with a loss, samples with a correct count, updates with a norm
        self._losses: list[torch.Tensor] = []  # batch means on the device, and their batch sizes
        self._sizes: list[int] = []
        self._correct: list[torch.Tensor] = []
        self._norms: list[torch.Tensor] = []
        self._outputs: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        self._held = 0

    def state_dict(self) -> dict[str, Any]:
        """The open sums as plain floats and CPU tensors (a checkpoint is written at a step)."""
        self._count_held_predictions()
        return {"host": list(self._host), "counts": list(self._counts), "losses": [t.cpu() for t in self._losses],
                "sizes": list(self._sizes), "correct": [t.cpu() for t in self._correct],
                "grad_norms": [t.cpu() for t in self._norms]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`; also the layout of checkpoints before host sums (device lists
        and `acc_samples`)."""
        self.reset()
        self._losses = [t.to(self.device) for t in state["losses"]]
        self._sizes = [int(size) for size in state["sizes"]]
        self._correct = [t.to(self.device) for t in state["correct"]]
        self._norms = [t.to(self.device) for t in state["grad_norms"]]
        self._host = [float(v) for v in state.get("host", (0.0, 0.0, 0.0))]
        counts = state.get("counts") or (sum(self._sizes), state["acc_samples"], len(self._norms))
        self._counts = [int(c) for c in counts]


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
