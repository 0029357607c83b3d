"""One optimizer update, from one or more micro-batches: forward under autocast, scaled backward,
unscale, gradient norm and clipping, then the step. Mixed precision and accumulation live here so
the trainer's loop reads the same with or without them."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager

import torch
from torch import nn

from phasetrain.monitors.norms import global_grad_norm, host_grad_norm


class UpdateStep:
    """The mechanics of a parameter update for `model` (possibly DDP-wrapped) and `optimizer`.

    `accumulate` micro-batches make one update; each micro-batch loss is divided by `accumulate`
    so the summed gradient is that of their mean (equal micro-batch sizes). Under DDP, gradients
    are synchronised only on the last micro-batch (`no_sync` on the others). On a CPU
    (`reads_on_host`) figures are read to the host as floats, where a read costs no sync;
    elsewhere they stay device tensors, and an optimizer that takes a found-inf tensor (the fused
    ones, e.g. `AdamW(..., fused=True)`) can skip an update on the device (`can_skip_on_device`).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                 precision: str, accumulate: int, gradient_clip: float | None, track_gradients: bool) -> None:
        self.model, self.optimizer, self.device = model, optimizer, device
        self.precision, self.accumulate = precision, accumulate
        self.gradient_clip, self.track_gradients = gradient_clip, track_gradients
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.scaler = grad_scaler(device, precision)
        self._no_sync = getattr(model, "no_sync", None)  # DDP only; looked up once, not per step
        self._autocast = autocast(device, precision)  # entered afresh at every step
        self.reads_on_host = device.type == "cpu"
        # fp16's scaler hands the optimizer its own found-inf
        self._takes_found_inf = precision != "fp16" and bool(getattr(optimizer, "_step_supports_amp_scaling", False))

    @property
    def can_skip_on_device(self) -> bool:
        """Whether `apply(skip=...)` skips an update without a host read (device figures and an
        optimizer that takes a found-inf tensor)."""
        return not self.reads_on_host and self._takes_found_inf

    def forward_backward(self, forward: Callable[[Any], Any], loss_fn: Callable[[Any, Any], torch.Tensor],
                         inputs: Any, targets: Any, last_micro_batch: bool) -> tuple[Any, torch.Tensor]:
        """Forward (under autocast) and backward for one micro-batch; returns (outputs, unscaled
        batch-mean loss)."""
        if not last_micro_batch and self._no_sync is not None:
            with self._no_sync():  # DDP: gradients are all-reduced on the last micro-batch only
                return self.forward_backward(forward, loss_fn, inputs, targets, True)
        with self._autocast:
            outputs = forward(inputs)
            loss = loss_fn(outputs, targets)
        scaled = loss / self.accumulate if self.accumulate > 1 else loss
        (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        return outputs, loss

    def grad_norm(self) -> float | torch.Tensor | None:
        """Global L2 norm of the (unscaled) gradients before clipping, clipping them to
        `gradient_clip` when set; None when neither tracked nor clipped. A float when
        `reads_on_host`, else a 0-d device tensor."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.gradient_clip is not None:
            norm = nn.utils.clip_grad_norm_(self.params, self.gradient_clip)
            return norm.item() if self.reads_on_host else norm
        if self.track_gradients:
            return host_grad_norm(self.params) if self.reads_on_host else global_grad_norm(self.params)
        return None

    def apply(self, skip: torch.Tensor | None = None) -> None:
        """The optimizer step (through the scaler for fp16, which skips it on overflow). `skip`: a
        0-d float tensor, 1.0 to leave parameters and optimizer state as they are, decided on the
        device (only where `can_skip_on_device`)."""
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif skip is not None:
            self.optimizer.found_inf = skip  # read by the fused kernels of Adam, AdamW, SGD, ...
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf
        else:
            self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

def autocast(device: torch.device, precision: str) -> ContextManager[Any]:
    """The autocast context for `precision` on `device` ("32": none); it may be entered again
    after each exit."""
    if precision == "32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> Any:
    """A GradScaler for "fp16" (loss scaling against float16 underflow), None otherwise."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)
