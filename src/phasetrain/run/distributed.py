"""Distributed data parallel plumbing: PyTorch's own engine, noticed when a process group is up.

Under `torchrun`, the user calls `torch.distributed.init_process_group(...)` before building the
trainer; the trainer then wraps the model in `DistributedDataParallel`, reduces the logged sums
across ranks, and lets rank 0 alone write files.
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def is_distributed() -> bool:
    """True inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if is_distributed() else 0


def default_device() -> torch.device:
    """CUDA (this rank's local device under torchrun) when available, else CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if is_distributed():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cuda")


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` wrapped in DistributedDataParallel when distributed (kept if already wrapped)."""
    if not is_distributed() or isinstance(model, DistributedDataParallel):
        return model
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DistributedDataParallel and `torch.compile` wrappers, in any order
    (or `model` itself): the module whose `state_dict` checkpoints hold, with the keys the plain
    model has (a compiled model's own keys carry an `_orig_mod.` prefix)."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over ranks in place (a no-op in a single process) and return it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (picklable Python values; a no-op in a single process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
