"""The loss Hessian of a model as a linear operator on flat parameter vectors.

`HessianOperator` builds the first-order gradient graph (`create_graph=True`) once and answers each
Hessian-vector product with one more backward pass through it (double backprop, Pearlmutter 1994).
Reusing that graph across the products of one computation is the cheapest HVP measured here
(~1.23 gradient steps per product, against ~2.0 for `torch.func` forward-over-reverse), so a
computation opens one operator, runs all its products, and closes it to free the graph.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, Self

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

Batch = tuple[Any, Any]
LossFn = Callable[[Any, Any], Tensor]


class LinearOperator(Protocol):
    """What every estimator in `phasetrain.curvature` takes: a symmetric n x n operator with
    `shape == (n, n)`, `dtype`, `device` and `op @ v` for a vector `v` of shape `(n,)` (returning
    shape `(n,)`). A dense square tensor is one; so is `HessianOperator`. Optionally
    `block_matvec(group, v)`, the product with the diagonal block of a slice (`block_product`),
    and `sum_over_processes(values)` (`HessianOperator.sum_over_processes`)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    def __matmul__(self, v: Tensor) -> Tensor: ...


def operator_size(op: LinearOperator) -> int:
    """n for an n x n operator (`LinearOperator`), else TypeError / ValueError."""
    if not all(hasattr(op, name) for name in ("shape", "dtype", "device", "__matmul__")):
        raise TypeError(
            f"expected an operator with shape, dtype, device and @ (e.g. a square tensor or a HessianOperator), "
            f"got {type(op).__name__}"
        )
    shape = tuple(op.shape)
    if len(shape) != 2 or shape[0] != shape[1] or not isinstance(shape[0], int) or shape[0] < 1:
        raise ValueError(f"the operator must be square and non-empty, got shape {shape}")
    return shape[0]


def block_product(op: LinearOperator, group: slice, v: Tensor) -> Tensor:
    """A_gg v for the diagonal block of the slice `group` (`v` and the result: shape
    `(group.stop - group.start,)`): the operator's own `block_matvec` where it has one (cheaper:
    `HessianOperator.block_matvec`), a sub-matrix product for a tensor, else `(A [0; v; 0])_g`."""
    if hasattr(op, "block_matvec"):
        return op.block_matvec(group, v)
    if isinstance(op, Tensor):
        return op[group, group] @ v
    full = torch.zeros(op.shape[0], dtype=v.dtype, device=v.device)
    full[group] = v
    return (op @ full)[group]


def process_sum(op: LinearOperator, values: Tensor) -> Tensor:
    """`op.sum_over_processes(values)` where the operator has it, else `values`."""
    return op.sum_over_processes(values) if hasattr(op, "sum_over_processes") else values


def trainable_parameters(model: nn.Module) -> list[Tensor]:
    """The parameters with `requires_grad=True`, in `model.parameters()` order, each once (a weight
    tied between modules, e.g. GPT-2's embedding and output layer, is one parameter)."""
    return [p for p in model.parameters() if p.requires_grad]


def uncompiled(model: nn.Module) -> nn.Module:
    """The module `torch.compile` wrapped (`model._orig_mod`, same parameters), else `model`: a
    compiled backward refuses `create_graph=True`, so Hessian products run on the original."""
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) else model


def batch_size(batch: Batch) -> int:
    """The number of samples in `batch`: the length of dim 0 of its targets, or, where the targets
    are None (a model computing its own loss), of its inputs' first tensor."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(f"batch must be a pair (inputs, targets), got {type(batch).__name__}")
    inputs, targets = batch
    if targets is not None:
        if not isinstance(targets, Tensor) or targets.dim() == 0:
            raise TypeError("batch targets must be a tensor with a batch dimension, or None")
        return int(targets.shape[0])
    values = (inputs.values() if isinstance(inputs, Mapping)
              else inputs if isinstance(inputs, (tuple, list)) else [inputs])
    for value in values:
        if isinstance(value, Tensor) and value.dim() > 0:
            return int(value.shape[0])
    raise TypeError("batch inputs hold no tensor with a batch dimension, and the targets are None")


def batch_loss(model: nn.Module, loss_fn: LossFn, batch: Batch) -> tuple[Tensor, int]:
    """`loss_fn(outputs, targets)` and the batch size (`batch_size`).

    `batch` is a pair `(inputs, targets)`. `inputs` is a tensor (called as `model(inputs)`), a
    tuple/list of tensors (`model(*inputs)`) or a dict of keyword arguments (`model(**inputs)`, e.g.
    a Hugging Face model's `input_ids`, `attention_mask`, `labels`). `targets` is a tensor with a
    batch dimension, or None when the model computes its own loss (then `loss_fn` reads it from the
    outputs, e.g. `lambda out, _: out.loss`).
    """
    size = batch_size(batch)
    inputs, targets = batch
    if isinstance(inputs, Tensor):
        outputs = model(inputs)
    elif isinstance(inputs, (tuple, list)) and all(isinstance(t, Tensor) for t in inputs):
        outputs = model(*inputs)
    elif isinstance(inputs, Mapping) and all(isinstance(k, str) for k in inputs):
        outputs = model(**inputs)
    else:
        raise TypeError(
            "batch inputs must be a tensor, a tuple/list of tensors or a dict of keyword arguments, "
            f"got {type(inputs).__name__}"
        )
    return loss_fn(outputs, targets), size


class HessianOperator:
    """H = d^2 L / d theta^2 of the batch-size-weighted mean loss over `batches`, as `v -> H v`.

    `theta` is the concatenation of the trainable parameters (`trainable_parameters`: frozen ones
    left out, tied ones once, in `model.parameters()` order), flattened (the `padding_idx` row of an
    embedding, whose gradient is zero by convention, gets zero rows and columns); `op @ v` (or `matvec`) maps
    a vector of shape `(num_params,)` to one of the same shape. The operator protocol of
    `phasetrain.curvature` (`shape`, `dtype`, `device`, `@`). `loss_fn` must return the mean loss
    over its batch, so several batches average to the loss on their union.

    Any model: a `torch.compile`d one is measured through its original module (`uncompiled`);
    the forward runs under the math backend of `scaled_dot_product_attention` (the fused CPU and
    GPU kernels have no double backward), without changing the model; buffers are only read. The
    model is run in whatever train/eval mode it is in. Use as a context manager, or call `close()`,
    so the gradient graph is freed when the computation ends. Never touches `.grad`.

    `distributed=True` (`torch.distributed` initialised): `batches` are this process's share of
    the curvature batches; the loss, every product and `sum_over_processes` are summed over the processes,
    weighted by their sample counts, so every process gets the Hessian of the union of all shares
    (and identical numbers). Every process must then make the same sequence of calls. A process
    whose share is empty contributes zero.
    """

    def __init__(
        self, model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch], *, distributed: bool = False
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        if not isinstance(batches, (list, tuple)) or (len(batches) == 0 and not distributed):
            raise ValueError(f"batches must be a non-empty list of (inputs, targets), got {batches!r}")
        if distributed and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise RuntimeError("distributed=True needs torch.distributed to be initialised")
        model = uncompiled(model)
        self.distributed = distributed
        self._params = trainable_parameters(model)
        if not self._params:
            raise ValueError("model has no parameters with requires_grad=True")
        owner: dict[int, int] = {}  # a tied parameter belongs to the first module holding it
        for i, m in enumerate(model.modules()):
            for p in m.parameters(recurse=False):
                owner.setdefault(id(p), i)
        self._owners = [owner[id(p)] for p in self._params]
        # An embedding's padding_idx row gets a zero gradient by convention (it is never trained),
        # not its derivative: keep it out (zero rows and columns), or H would not be symmetric.
        index = {id(p): i for i, p in enumerate(self._params)}
        self._padding_rows = {
            index[id(m.weight)]: int(m.padding_idx) for m in model.modules()
            if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.padding_idx is not None and id(m.weight) in index
        }
        self._shapes = [p.shape for p in self._params]
        self._offsets = [0]  # where each parameter tensor starts in the flat vector, and the end
        for p in self._params:
            self._offsets.append(self._offsets[-1] + p.numel())
        self.num_params = self._offsets[-1]
        self.dtype = self._params[0].dtype
        self.device = self._params[0].device
        self.num_matvecs = 0
        sizes = [batch_size(b) for b in batches]
        local = sum(sizes)
        total = (int(self._sum(torch.tensor(float(local), dtype=torch.float64, device=self.device)))
                 if distributed else local)
        if total == 0:
            raise ValueError("the curvature batches hold no samples")
        self._share = local / total  # this process's weight in the sums over processes
        grads: Sequence[Tensor | None] = [None] * len(self._params)
        loss = torch.zeros((), dtype=self.dtype, device=self.device)
        if local:
            with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
                losses = [batch_loss(model, loss_fn, b)[0] for b, n in zip(batches, sizes) if n]
                loss = sum(part_loss * (n / local) for part_loss, n in zip(losses, [n for n in sizes if n]))
                grads = torch.autograd.grad(loss, self._params, create_graph=True, allow_unused=True)
        self.loss = self._sum(loss.detach() * self._share) if distributed else loss.detach()
        # A gradient that does not depend on the parameters has a zero Hessian row: leave it out.
        self._grads: dict[int, Tensor] | None = {
            i: g for i, g in enumerate(grads) if g is not None and g.requires_grad
        }

    @property
    def shape(self) -> tuple[int, int]:
        """`(num_params, num_params)`."""
        return (self.num_params, self.num_params)

    def _sum(self, t: Tensor) -> Tensor:
        """`t` summed over the processes (in place; returned)."""
        torch.distributed.all_reduce(t)
        return t

    def sum_over_processes(self, values: Tensor) -> Tensor:
        """`values` summed over the processes (unchanged in one process): for decisions that every
        process must take alike from numbers measured locally (e.g. the FLOPs of a product)."""
        return self._sum(values.clone()) if self.distributed else values

    def matvec(self, v: Tensor) -> Tensor:
        """H v for a flat vector `v` of shape `(num_params,)`; returns the same shape and dtype."""
        return self.block_matvec(slice(0, self.num_params), v)

    __matmul__ = matvec
    __call__ = matvec

    def block_matvec(self, group: slice, v: Tensor) -> Tensor:
        """H_gg v: the product with the diagonal block of the flat-vector slice `group`, which must
        cover whole parameter tensors (e.g. one of `module_slices()`, several in a row, or all of
        them: `matvec`); `v` and the result have shape `(group.stop - group.start,)`. Cheaper than
        `matvec` the later the group's layers sit in the network: the double backward stops at the
        group's parameters (on the benchmark CNN, 0.016 gradient steps for the output layer against
        1.26 for H v).
        """
        if self._grads is None:
            raise RuntimeError("HessianOperator is closed; open a new one to compute more products")
        members = self._members(group)
        if v.shape != (group.stop - group.start,):
            raise ValueError(f"v must have shape ({group.stop - group.start},), got {tuple(v.shape)}")
        self.num_matvecs += 1
        live = [i for i in members if i in self._grads]
        if not live:
            hv = torch.zeros_like(v)
        else:
            start = group.start
            tangents = [self._without_padding(i, v[self._offsets[i] - start: self._offsets[i + 1] - start]
                                              .to(self.dtype).view(self._shapes[i])) for i in live]
            parts = torch.autograd.grad(
                [self._grads[i] for i in live], [self._params[i] for i in members], tangents,
                retain_graph=True, allow_unused=True, materialize_grads=True,
            )
            hv = torch.cat([self._without_padding(i, h).reshape(-1) for i, h in zip(members, parts)]).to(v.dtype)
        if self.distributed:
            hv = self._sum(hv * self._share)
        return hv

    def _without_padding(self, i: int, t: Tensor) -> Tensor:
        """`t` (shaped as parameter `i`) with its embedding padding row zeroed, if it has one."""
        if i not in self._padding_rows:
            return t
        t = t.clone()
        t[self._padding_rows[i]] = 0
        return t

    def _members(self, group: slice) -> list[int]:
        """Indices of the parameter tensors that make up `group` exactly (else ValueError)."""
        offsets = self._offsets
        if not (isinstance(group, slice) and group.step in (None, 1) and group.start in offsets
                and group.stop in offsets and group.stop > group.start):
            raise ValueError(
                f"group must be a slice covering whole parameter tensors (boundaries {offsets}), "
                f"got {group!r}"
            )
        return list(range(offsets.index(group.start), offsets.index(group.stop)))

    def layer_slices(self) -> list[slice]:
        """The slice of the flat vector that belongs to each trainable parameter tensor."""
        return [slice(a, b) for a, b in zip(self._offsets[:-1], self._offsets[1:])]

    def module_slices(self) -> list[slice]:
        """The slice of the flat vector that belongs to each module's own parameters (a layer's
        weight and bias together), in order."""
        merged: list[slice] = []
        for i, s in enumerate(self.layer_slices()):
            if i and self._owners[i] == self._owners[i - 1]:
                merged[-1] = slice(merged[-1].start, s.stop)
            else:
                merged.append(s)
        return merged

    def close(self) -> None:
        """Free the gradient graph. Further `matvec` calls raise."""
        self._grads = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def hessian_vector_product(model: nn.Module, loss_fn: LossFn, batch: Batch, v: Tensor) -> Tensor:
    """One H v for a single batch (flat `v`, shape `(num_params,)`). Builds and frees the graph."""
    with HessianOperator(model, loss_fn, [batch]) as op:
        return op.matvec(v)
