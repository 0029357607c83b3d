"""Mixed precision: autocast for the forward pass and, for float16, a gradient scaler."""
from __future__ import annotations

import contextlib
from typing import Any, ContextManager

import torch


def autocast(device: torch.device, precision: str) -> ContextManager[Any]:
    """The autocast context for `precision` on `device` ("32": none)."""
    if precision == "32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> Any:
    """A GradScaler for "fp16" (loss scaling against float16 underflow), None otherwise."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)
