"""HessianMonitor: curvature of the training loss on a fixed batch, every `freq` steps.

What it measures, and on what:
- the loss Hessian on a FIXED curvature batch, so the series is comparable across steps: by
  default the first training batch the monitor sees (cloned), or the `batches` given (averaged,
  weighted by batch size);
- with every module in eval mode: dropout off, batch norm using (and not updating) its running
  statistics, so measuring never changes the trajectory. Each module's own mode is restored after;
- `method="eigenvalues"`: `hessian_eig_1 >= ... >= hessian_eig_k`, the largest *algebraic*
  eigenvalues (the Hessian is indefinite; eig_1 is the "sharpness"), by Lanczos warm-started from
  the previous top eigenvectors; and, for `torch.optim.SGD` without Nesterov, `hessian_eos_ratio`
  = eig_1 * lr_eff / (2 (1 + momentum)), lr_eff = lr * (1 - dampening). Gradient descent on a
  quadratic is stable iff it is <= 1 (Cohen et al. 2021, "Gradient Descent on Neural Networks
  Typically Occurs at the Edge of Stability": sharpness hovers at 2/lr);
- `method="diagonal"`: `hessian_diag_mean` (with `hessian_diag_mean_stderr`), `hessian_diag_std`,
  `hessian_diag_max` and `hessian_trace`; see `phasetrain.curvature.diagonal` for what is exact
  and what is estimated.
It never touches `.grad`, keeps no autograd graph between calls, and draws random numbers only
from its own generator (seeded by `seed`), so a run with the monitor has the same weights as one
without. A non-finite loss on the curvature batch gives NaN values instead of an error.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from phasetrain.curvature.diagonal import diagonal_statistics
from phasetrain.curvature.lanczos import lanczos
from phasetrain.curvature.operator import Batch, HessianOperator
from phasetrain.monitors.base import Monitor, StepContext, eval_mode

HESSIAN_METHODS = ("diagonal", "eigenvalues")


def _to(x: Any, device: torch.device) -> Any:
    """A detached copy of a tensor (or a list/tuple of tensors) on `device`."""
    if isinstance(x, Tensor):
        return x.detach().to(device, copy=True)
    if isinstance(x, (tuple, list)) and all(isinstance(t, Tensor) for t in x):
        return [t.detach().to(device, copy=True) for t in x]
    raise TypeError(f"batch inputs and targets must be tensors or lists of tensors, got {type(x).__name__}")


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def eos_ratio(sharpness: float, optimizer: torch.optim.Optimizer) -> float | None:
    """sharpness * lr_eff / (2 (1 + momentum)) for torch.optim.SGD without Nesterov, else None.

    Heavy-ball GD on a quadratic with curvature lambda is stable iff lambda * lr_eff < 2 (1 + beta).
    Uses the first parameter group.
    """
    if not isinstance(optimizer, torch.optim.SGD):
        return None
    group = optimizer.param_groups[0]
    if group.get("nesterov", False):
        return None
    beta = float(group.get("momentum", 0.0))
    lr_eff = float(group["lr"]) * (1.0 - float(group.get("dampening", 0.0)) if beta else 1.0)
    return sharpness * lr_eff / (2.0 * (1.0 + beta))


def warm_start_vector(vectors: Tensor, generator: torch.Generator, noise: float = 0.1) -> Tensor:
    """A Lanczos start from the previous top eigenvectors (columns of `vectors`, shape (dim, k)).

    Their normalised sum plus a random part of relative size `noise`, so that an eigenvalue that
    has grown past them (orthogonal to all of them) is still found.
    """
    r = torch.randn(vectors.shape[0], generator=generator, device=vectors.device, dtype=vectors.dtype)
    return vectors.sum(1) / vectors.shape[1] ** 0.5 + noise * r / r.norm()


class HessianMonitor(Monitor):
    """Every `freq` steps, eigenvalues or diagonal statistics of the loss Hessian (module notes).

    `k`: eigenvalues to report; `tol`: bound on the relative eigenvalue error (Lanczos stops when
    every residual is <= tol * |eigenvalue|); `max_iter`: product budget;
    `num_samples`, `num_exact`: the diagonal's probe budget (in products of the costliest layer
    block, about one H v each) and its exactly verified entries (22 + 4; the probes are layer-block
    products H_gg z, many of them cheap);
    `batches`: fixed curvature batches `[(inputs, targets), ...]` (default: the first one seen);
    `seed`: of the monitor's own generator (random starts and probes).
    """

    def __init__(
        self,
        method: str = "diagonal",
        freq: int = 100,
        *,
        k: int = 3,
        batches: Sequence[Batch] | None = None,
        seed: int = 0,
        tol: float = 1e-3,
        max_iter: int = 150,
        num_samples: int = 22,
        num_exact: int = 4,
    ) -> None:
        if method not in HESSIAN_METHODS:
            raise ValueError(f"method must be one of {HESSIAN_METHODS}, got {method!r}")
        self.method = method
        self.freq = _positive_int("freq", freq)
        self.k = _positive_int("k", k)
        self.max_iter = _positive_int("max_iter", max_iter)
        self.num_samples = _positive_int("num_samples", num_samples)
        self.num_exact = _positive_int("num_exact", num_exact)
        if self.max_iter < self.k:
            raise ValueError(f"max_iter must be >= k={k}, got {max_iter!r}")
        if self.num_samples < 2:
            raise ValueError(f"num_samples must be >= 2, got {num_samples!r}")
        if not (isinstance(tol, (int, float)) and tol > 0):
            raise ValueError(f"tol must be a positive number, got {tol!r}")
        self.tol = float(tol)
        if not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.seed = seed
        if batches is not None:
            if not isinstance(batches, (list, tuple)) or not batches or not all(
                isinstance(b, (list, tuple)) and len(b) == 2 for b in batches
            ):
                raise ValueError(f"batches must be a non-empty list of (inputs, targets), got {batches!r}")
        self._batches: list[Batch] | None = None if batches is None else [tuple(b) for b in batches]
        self._batch_device: torch.device | None = None
        self._generator: torch.Generator | None = None
        self._generator_state: Tensor | None = None
        self._vectors: Tensor | None = None

    def _prepare(self, ctx: StepContext) -> list[Batch]:
        device = torch.device(ctx.device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if self._batches is None:
            self._batches = [ctx.batch]
            self._batch_device = None
        if self._batch_device != device:
            self._batches = [(_to(x, device), _to(y, device)) for x, y in self._batches]
            self._batch_device = device
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
            if self._generator_state is not None:
                self._generator.set_state(self._generator_state)
        return self._batches

    def compute(self, ctx: StepContext) -> dict[str, float]:
        """Measure on the fixed batch with every module in eval mode; restores the modes."""
        batches = self._prepare(ctx)
        with eval_mode(ctx.model), HessianOperator(ctx.model, ctx.loss_fn, batches) as op:
            if not bool(torch.isfinite(op.loss)):
                return {name: float("nan") for name in self._names(ctx.optimizer)}
            if self.method == "eigenvalues":
                return self._eigenvalues(op, ctx.optimizer)
            return self._diagonal(op)

    def _names(self, optimizer: torch.optim.Optimizer) -> list[str]:
        if self.method == "diagonal":
            return ["hessian_diag_mean", "hessian_diag_mean_stderr", "hessian_diag_std",
                    "hessian_diag_max", "hessian_trace"]
        names = [f"hessian_eig_{i + 1}" for i in range(self.k)]
        return names + (["hessian_eos_ratio"] if eos_ratio(0.0, optimizer) is not None else [])

    def _eigenvalues(self, op: HessianOperator, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        if self.k > op.num_params:
            raise ValueError(f"k={self.k} exceeds the number of trainable parameters {op.num_params}")
        v0 = None
        if self._vectors is not None and self._vectors.shape == (op.num_params, self.k):
            v0 = warm_start_vector(self._vectors.to(op.device, op.dtype), self._generator)
        result = lanczos(
            op.matvec, op.num_params, self.k, tol=self.tol, max_iter=min(self.max_iter, op.num_params),
            v0=v0, generator=self._generator, dtype=op.dtype, device=op.device,
            return_eigenvectors=True,
        )
        self._vectors = result.eigenvectors.detach()
        values = result.eigenvalues.tolist()
        out = {f"hessian_eig_{i + 1}": v for i, v in enumerate(values)}
        ratio = eos_ratio(values[0], optimizer)
        if ratio is not None:
            out["hessian_eos_ratio"] = ratio
        return out

    def _diagonal(self, op: HessianOperator) -> dict[str, float]:
        stats = diagonal_statistics(
            op.matvec, op.num_params, self._generator, num_samples=self.num_samples,
            num_exact=self.num_exact, groups=op.module_slices(), block_matvec=op.block_matvec,
            dtype=op.dtype, device=op.device,
        )
        return {
            "hessian_diag_mean": stats.mean,
            "hessian_diag_mean_stderr": stats.mean_stderr,
            "hessian_diag_std": stats.std,
            "hessian_diag_max": stats.max,
            "hessian_trace": stats.mean * op.num_params,
        }

    def state_dict(self) -> dict[str, Any]:
        """Warm-start vectors, generator state and the fixed batches (tensors and lists only)."""
        generator_state = self._generator.get_state() if self._generator is not None else self._generator_state
        batches = None if self._batches is None else [
            [x.detach().cpu() if isinstance(x, Tensor) else [t.detach().cpu() for t in x], y.detach().cpu()]
            for x, y in self._batches
        ]
        return {
            "generator_state": generator_state,
            "vectors": None if self._vectors is None else self._vectors.detach().cpu(),
            "batches": batches,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; tensors move to the device at the next `compute`."""
        self._generator_state = state["generator_state"]
        self._generator = None
        self._vectors = state["vectors"]
        if state["batches"] is not None:
            self._batches = [(x, y) for x, y in state["batches"]]
            self._batch_device = None
