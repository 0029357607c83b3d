"""Classification accuracy that refuses to guess: no number for outputs it cannot read as classes."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import torch


def is_classification(outputs: Any, targets: Any) -> bool:
    """True for class scores `(N, C, *)` against integer class targets `(N, *)`.

    Regression (float targets), binary logits `(N,)` and anything else are not classification:
    the trainer then records no accuracy rather than a wrong one. Shape and dtype checks only,
    so this costs no device sync.
    """
    return (
        isinstance(outputs, torch.Tensor)
        and isinstance(targets, torch.Tensor)
        and outputs.is_floating_point()
        and not targets.is_floating_point()
        and not targets.is_complex()
        and targets.dtype != torch.bool
        and outputs.dim() == targets.dim() + 1
        and outputs.dim() >= 2
        and outputs.shape[0] == targets.shape[0]
        and outputs.shape[2:] == targets.shape[1:]
    )


def class_scores(outputs: Any) -> Any:
    """The scores accuracy reads from `outputs`: the `"logits"` of a mapping (a Hugging Face
    `ModelOutput`, a dict) when they are `(N, C)`, else `outputs` as they are.

    Sequence logits `(N, L, C)` are left in their mapping, so they get no accuracy: a Hugging Face
    causal LM shifts its labels inside the model and token classifiers mark ignored positions -100,
    so a position-by-position arg-max would be a guess (an `accuracy_fn` knows the task)."""
    if isinstance(outputs, Mapping):
        logits = outputs.get("logits")
        if isinstance(logits, torch.Tensor) and logits.dim() == 2:
            return logits
    return outputs


def correct_count(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Number of positions whose arg-max class equals the target, as a 0-d tensor on the device."""
    return torch.count_nonzero(outputs.argmax(dim=1) == targets)


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float | None:
    """Fraction of correct arg-max predictions in a batch, or None when the task is not
    classification. The helper for hand-written loops (`trainer.log_step(..., acc=accuracy(out, y))`);
    `outputs` may be a Hugging Face `ModelOutput` (its `(N, C)` logits are read, see `class_scores`)."""
    outputs = class_scores(outputs)
    if not is_classification(outputs, targets):
        return None
    return float(correct_count(outputs, targets)) / targets.numel()


def batch_accuracy(outputs: Any, targets: Any,
                   accuracy_fn: Callable[[Any, Any], Any] | None = None) -> torch.Tensor | None:
    """Fraction correct in a batch as a 0-d tensor (no host sync): `accuracy_fn` when given (on the
    outputs as the model returned them), else arg-max accuracy for classification (of the `(N, C)`
    logits of a `ModelOutput` too, see `class_scores`), else None."""
    if accuracy_fn is not None:
        with torch.no_grad():
            return torch.as_tensor(accuracy_fn(outputs, targets), dtype=torch.float64)
    outputs = class_scores(outputs)
    if is_classification(outputs, targets):
        return correct_count(outputs, targets) / targets.numel()
    return None


def batch_correct(outputs: Any, targets: Any, batch_size: int,
                  accuracy_fn: Callable[[Any, Any], Any] | None = None) -> torch.Tensor | None:
    """Correct predictions in a batch counted in samples (0-d tensor; fractional for per-position
    targets), or None when accuracy is undefined. The training loop's path for all but plain
    tensor classification: a `ModelOutput`'s `(N, C)` logits are counted here, each batch."""
    if accuracy_fn is None:
        outputs = class_scores(outputs)
        if is_plain_classification(outputs, targets):
            return correct_count(outputs, targets)
    accuracy = batch_accuracy(outputs, targets, accuracy_fn)
    return None if accuracy is None else accuracy * batch_size


_PLAIN_CLASSIFICATION: dict[tuple, bool] = {}


def is_plain_classification(outputs: Any, targets: Any) -> bool:
    """`is_classification` for (N, C) scores against (N,) targets (whose arg-max count the
    training loop leaves to the record), remembered per shape signature (the hot path asks it
    every step with the same shapes)."""
    if not isinstance(outputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        return False
    key = (outputs.dtype, outputs.dim(), targets.dtype, targets.dim(), outputs.shape[0] == targets.shape[0])
    answer = _PLAIN_CLASSIFICATION.get(key)
    if answer is None:
        answer = _PLAIN_CLASSIFICATION[key] = targets.dim() == 1 and is_classification(outputs, targets)
    return answer
