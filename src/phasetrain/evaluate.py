"""Validation: the mean loss and accuracy of a model over a loader, without gradients."""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn

from phasetrain.batches import move_to_device, split_batch


@torch.no_grad()
def validation_pass(model: nn.Module, loss_fn: Callable, loader: Iterable, device: torch.device,
                    forward: Callable[[Any], Any], batch_accuracy: Callable[[Any, Any], torch.Tensor | None]) -> dict[str, float]:
    """Sample-weighted mean loss (and accuracy, where defined) over `loader`, in eval mode without
    gradients; the model's per-module train/eval modes are restored afterwards."""
    modes = [module.training for module in model.modules()]
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    samples = acc_samples = 0
    try:
        for batch in loader:
            inputs, targets = move_to_device(split_batch(batch), device)
            outputs = forward(inputs)
            n = int(targets.shape[0]) if isinstance(targets, torch.Tensor) and targets.dim() else 1
            sums[0] += loss_fn(outputs, targets).detach().double() * n
            samples += n
            accuracy = batch_accuracy(outputs, targets)
            if accuracy is not None:
                sums[1] += accuracy * n
                acc_samples += n
    finally:
        for module, mode in zip(model.modules(), modes):
            module.training = mode
    if samples == 0:
        raise ValueError("val_loader yielded no batches")
    loss_sum, correct_sum = sums.tolist()
    result = {"val_loss": loss_sum / samples}
    if acc_samples:
        result["val_acc"] = correct_sum / acc_samples
    return result
