"""Validation: the mean loss and accuracy of a model over a loader, without gradients."""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn

from phasetrain.loop.batches import batch_size, pair_on_device
from phasetrain.monitors.base import eval_mode
from phasetrain.run.distributed import all_reduce_sum


@torch.no_grad()
def validation_pass(model: nn.Module, loss_fn: Callable, loader: Iterable, device: torch.device,
                    forward: Callable[[Any], Any],
                    batch_accuracy: Callable[[Any, Any], torch.Tensor | None]) -> dict[str, float]:
    """Sample-weighted mean loss (and accuracy, where defined) over `loader`, in eval mode without
    gradients, summed over DDP ranks (each evaluates its shard); the model's per-module train/eval
    modes are restored afterwards."""
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, correct, samples, accuracy samples
    with eval_mode(model):
        for batch in loader:
            inputs, targets = pair_on_device(batch, device, "val_loader")
            outputs = forward(inputs)
            n = batch_size(targets)
            sums[0] += loss_fn(outputs, targets).detach().double() * n
            sums[2] += n
            accuracy = batch_accuracy(outputs, targets)
            if accuracy is not None:
                sums[1] += accuracy * n
                sums[3] += n
    loss_sum, correct_sum, samples, acc_samples = all_reduce_sum(sums).tolist()
    if samples == 0:
        raise ValueError("val_loader yielded no batches")
    result = {"val_loss": loss_sum / samples}
    if acc_samples:
        result["val_acc"] = correct_sum / acc_samples
    return result
