"""HessianMonitor: curvature of the training loss on a fixed batch, every `freq` steps.

What it measures, and on what:
- the loss Hessian on a FIXED curvature batch, so the series is comparable across steps: by
  default the batch of the first update the monitor measures at (cloned), or the `batches` given (averaged,
  weighted by batch size). A batch is `(inputs, targets)`: inputs a tensor, a tuple/list of
  tensors or a dict of keyword arguments, targets a tensor or None (a model that computes its own
  loss); see `phasetrain.curvature.batch_loss`;
- with every module in eval mode: dropout off, batch norm using (and not updating) its running
  statistics, so measuring never changes the trajectory. Each module's own mode is restored after;
- on any model: a `torch.compile`d one through its original module, attention through the math
  kernel, tied weights once, frozen ones left out (`phasetrain.curvature.HessianOperator`);
- `method="eigenvalues"`: `hessian_eig_1 >= ... >= hessian_eig_k`, the largest *algebraic*
  eigenvalues (the Hessian is indefinite; eig_1 is the "sharpness"): the first time by Lanczos from
  a random start, then by LOBPCG from the previous top k eigenvectors and `GUARD` guard vectors
  (the next Ritz vectors) mixed with a little noise (`warm_start`, `phasetrain.curvature.lobpcg`),
  unless that start has gone stale (`STALE`: then by Lanczos again; `top_eigenpairs`); the same
  certificate either way (every
  residual <= tol * |eigenvalue|). For `torch.optim.SGD` without Nesterov also
  `hessian_eos_ratio` = eig_1 * lr_eff / (2 (1 + momentum)), lr_eff = lr * (1 - dampening).
  Gradient descent on a quadratic is stable iff it is <= 1 (Cohen et al. 2021, "Gradient Descent
  on Neural Networks Typically Occurs at the Edge of Stability": sharpness hovers at 2/lr);
- `method="diagonal"`: `hessian_diag_mean` (with `hessian_diag_mean_stderr`), `hessian_diag_std`
  (with `hessian_diag_std_stderr`), `hessian_diag_max` and `hessian_trace`; see
  `phasetrain.curvature.diagonal` for what is exact and what is estimated.
Methods are the table `METHODS`: a new one is a function and an entry. With `budget` (a fraction
of training wall time) the monitor picks its own steps (`phasetrain.monitors.budget.TimeBudget`).
Under `torch.distributed` (initialised, world size > 1) every process must call `compute` at the
same steps: each multiplies its share of the curvature batch (the `batches` given, split along
dim 0 by rank; by default, the union of the first batches the processes saw, gathered once),
products and losses are summed over processes weighted by sample counts, and random probes and
starts are the same everywhere (same seed), so every process returns the numbers one process
would compute on the whole batch.
It never touches `.grad`, keeps no autograd graph between calls, and draws random numbers only
from its own generator (seeded by `seed`), so a run with the monitor has the same weights as one
without. A non-finite loss on the curvature batch gives NaN values instead of an error.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from phasetrain.curvature.diagonal import diagonal_statistics
from phasetrain.curvature.lanczos import LanczosResult, lanczos
from phasetrain.curvature.lobpcg import lobpcg
from phasetrain.curvature.operator import Batch, HessianOperator, batch_size
from phasetrain.monitors.base import Monitor, StepContext, eval_mode
from phasetrain.monitors.budget import TimeBudget

GUARD = 1  # eigenvectors kept beyond the k reported, for the next warm start
# A warm start whose first Rayleigh-Ritz leaves a residual above STALE * |eigenvalue| is dropped for
# a cold Lanczos: on the benchmark MLP such starts (0.4-0.6) cost LOBPCG more products than a cold
# start, while those below 0.1 cost it a third to a half (docs/curvature.md).
STALE = 0.2


def _map(x: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """`fn` applied to every tensor of a batch part: a tensor, a tuple/list or a dict of them
    (other dict values kept as they are), or None."""
    if x is None:
        return None
    if isinstance(x, Tensor):
        return fn(x)
    if isinstance(x, (tuple, list)) and all(isinstance(t, Tensor) for t in x):
        return [fn(t) for t in x]
    if isinstance(x, Mapping):
        return {key: fn(v) if isinstance(v, Tensor) else v for key, v in x.items()}
    raise TypeError(
        f"batch inputs and targets must be tensors, lists or dicts of tensors (or None targets), got {type(x).__name__}"
    )


def _to(x: Any, device: torch.device) -> Any:
    """A detached copy of a batch part (`_map`) on `device`."""
    return _map(x, lambda t: t.detach().to(device, copy=True))


def batch_share(batch: Batch, rank: int, world: int) -> Batch:
    """Process `rank`'s share of `batch`: every tensor with the batch's length along dim 0 split
    into `world` near-equal parts (`torch.tensor_split`), part `rank` kept; other tensors whole."""
    n = batch_size(batch)

    def part(t: Tensor) -> Tensor:
        return torch.tensor_split(t, world)[rank] if t.dim() > 0 and t.shape[0] == n else t

    return (_map(batch[0], part), _map(batch[1], part))


def _world() -> tuple[int, int]:
    """(rank, world size), (0, 1) unless `torch.distributed` is initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


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


def warm_start(kept: Tensor, k: int, generator: torch.Generator, noise: float = 0.1) -> Tensor:
    """The LOBPCG start block from the last Ritz vectors `kept` (shape (n, k + guard)): the k
    eigenvectors as they are, each guard vector plus a random unit vector of norm `noise` drawn
    from `generator`, so that an eigenvector that has grown into the top, orthogonal to all of
    them, can still be found. Measured on the benchmark MLP (docs/curvature.md): no more products
    than the guard alone, one fewer than an extra random column."""
    guard = kept[:, k:]
    if not guard.shape[1]:
        return kept
    r = torch.randn(guard.shape, generator=generator, device=generator.device, dtype=kept.dtype).to(kept.device)
    return torch.cat([kept[:, :k], guard + noise * r / torch.linalg.vector_norm(r, dim=0)], 1)


def top_eigenpairs(
    op: HessianOperator, k: int, kept: Tensor | None, generator: torch.Generator, *, tol: float, max_iter: int
) -> tuple[LanczosResult, Tensor, bool]:
    """The top k eigenpairs of `op` as the monitor measures them: by LOBPCG from `kept` (the last
    Ritz vectors, shape (n, k + GUARD); `warm_start`) unless it is None or stale (`STALE`), else by
    Lanczos from a random start drawn from `generator`. Returns the result (its `num_matvecs`
    counts only the final solver's products), the Ritz vectors to keep (n, k + guard) and whether
    the warm start was used."""
    guard = min(GUARD, op.num_params - k)
    max_iter = min(max_iter, op.num_params)
    if kept is not None and kept.shape == (op.num_params, k + guard):
        start = warm_start(kept.to(op.device, op.dtype), k, generator)
        result = lobpcg(op, start, k, tol=tol, max_iter=max(max_iter, start.shape[1]), give_up=STALE)
        if not result.gave_up:
            return result, result.ritz_vectors[:, : k + guard], True
    result = lanczos(op, k, tol=tol, max_iter=max_iter, generator=generator, return_eigenvectors=True, guard=guard)
    return result, result.eigenvectors, False


def _eigenvalues(monitor: HessianMonitor, op: HessianOperator, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """`hessian_eig_1..k` (+ `hessian_eos_ratio`) by `top_eigenpairs`, keeping its vectors."""
    if monitor.k > op.num_params:
        raise ValueError(f"k={monitor.k} exceeds the number of trainable parameters {op.num_params}")
    result, vectors, _ = top_eigenpairs(op, monitor.k, monitor.vectors, monitor.generator, tol=monitor.tol,
                                        max_iter=monitor.max_iter)
    monitor.vectors = vectors.detach()  # a block of another shape is never used: cold start next time
    values = result.eigenvalues.tolist()
    out = {f"hessian_eig_{i + 1}": v for i, v in enumerate(values)}
    ratio = eos_ratio(values[0], optimizer)
    if ratio is not None:
        out["hessian_eos_ratio"] = ratio
    return out


def _eigenvalue_names(monitor: HessianMonitor, optimizer: torch.optim.Optimizer) -> list[str]:
    names = [f"hessian_eig_{i + 1}" for i in range(monitor.k)]
    return names + (["hessian_eos_ratio"] if eos_ratio(0.0, optimizer) is not None else [])


def _diagonal(monitor: HessianMonitor, op: HessianOperator, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Diagonal statistics with layer-block probes (`phasetrain.curvature.diagonal_statistics`)."""
    stats = diagonal_statistics(
        op, monitor.generator, num_samples=monitor.num_samples, num_exact=monitor.num_exact,
        groups=op.module_slices(), block_products=True,
    )
    return {
        "hessian_diag_mean": stats.mean,
        "hessian_diag_mean_stderr": stats.mean_stderr,
        "hessian_diag_std": stats.std,
        "hessian_diag_std_stderr": stats.std_stderr,
        "hessian_diag_max": stats.max,
        "hessian_trace": stats.mean * op.num_params,
    }


def _diagonal_names(monitor: HessianMonitor, optimizer: torch.optim.Optimizer) -> list[str]:
    return ["hessian_diag_mean", "hessian_diag_mean_stderr", "hessian_diag_std", "hessian_diag_std_stderr",
            "hessian_diag_max", "hessian_trace"]


def _eigenvalues_first_cost(monitor: HessianMonitor) -> float:
    """A cold top-k measurement in training steps: 30 + 15 k (Lanczos from a random start; measured
    32-41 for k=1 on grokking, 43-82 for k=3 on the benchmark MLP, README "Curvature")."""
    return 30.0 + 15.0 * monitor.k


def _diagonal_first_cost(monitor: HessianMonitor) -> float:
    """The diagonal in training steps: about one per probe (26 measured for 22 + 4 on the benchmark MLP)."""
    return float(monitor.num_samples + monitor.num_exact)


@dataclass(frozen=True)
class Method:
    """A curvature method of `HessianMonitor`: `measure(monitor, op, optimizer)` returns the metrics
    measured with the open `HessianOperator` `op`; `names(monitor, optimizer)` lists them (for the
    NaN values of a non-finite loss); `first_cost(monitor)` is the expected cost of a first
    measurement in training steps (a time budget waits until it has earned that much)."""

    measure: Callable[[HessianMonitor, HessianOperator, torch.optim.Optimizer], dict[str, float]]
    names: Callable[[HessianMonitor, torch.optim.Optimizer], list[str]]
    first_cost: Callable[[HessianMonitor], float]


METHODS: dict[str, Method] = {
    "diagonal": Method(_diagonal, _diagonal_names, _diagonal_first_cost),
    "eigenvalues": Method(_eigenvalues, _eigenvalue_names, _eigenvalues_first_cost),
}


class HessianMonitor(Monitor):
    """Every `freq` steps, eigenvalues or diagonal statistics of the loss Hessian (module notes).

    `method`: a key of `METHODS` ("diagonal" or "eigenvalues"); `freq`: steps between
    measurements; `k`: eigenvalues to report; `tol`: bound on the relative eigenvalue error (every
    residual is <= tol * |eigenvalue|); `max_iter`: product budget of one eigenvalue measurement;
    `num_samples`, `num_exact`: the diagonal's probe budget (in products of the costliest layer
    block, about one H v each) and its exactly verified entries (22 + 4; the probes are layer-block
    products H_gg z, many of them cheap);
    `batches`: fixed curvature batches `[(inputs, targets), ...]` (default: the first one seen);
    `seed`: of the monitor's own generator (random starts and probes);
    `budget`: a fraction of training wall time (e.g. 0.05) under which the monitor picks its own
    steps (`should_run`; `freq` is then the shortest interval), or None for every `freq` steps;
    `clock`: the wall clock of the budget, in seconds (`time.perf_counter`; tests pass a fake one).
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
        budget: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {tuple(METHODS)}, got {method!r}")
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
        if batches is not None and (not isinstance(batches, (list, tuple)) or not batches or not all(
            isinstance(b, (list, tuple)) and len(b) == 2 for b in batches
        )):
            raise ValueError(f"batches must be a non-empty list of (inputs, targets), got {batches!r}")
        self._batches: list[Batch] | None = None if batches is None else [tuple(b) for b in batches]
        self._split = batches is not None  # split between processes (given ones, or the union of first ones)
        self._batch_device: torch.device | None = None
        self._generator: torch.Generator | None = None
        self._generator_state: Tensor | None = None
        self.vectors: Tensor | None = None  # the last Ritz vectors, (num_params, k + GUARD): the warm start
        if budget is not None and not (isinstance(budget, (int, float)) and 0 < budget < 1):
            raise ValueError(f"budget must be a fraction of wall time in (0, 1) or None, got {budget!r}")
        self.budget = budget
        self.schedule = None if budget is None else TimeBudget(budget, self.freq, METHODS[method].first_cost(self),
                                                               clock)

    def should_run(self, step: int) -> bool:
        """Without `budget`: every `freq`-th step. With it: whenever its `TimeBudget` says so (the
        first measurement once the budget earned covers its expected cost, then dense while the
        run's watched metrics move and sparse while they stand still, at least `freq` steps apart),
        which is why the trainer must ask at every step. Under `torch.distributed` the processes
        agree (all measure only if all would): their clocks differ."""
        if self.schedule is None:
            return step % self.freq == 0
        run = self.schedule.due(step)
        if _world()[1] > 1:
            flag = torch.tensor([int(run)])
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
            run = bool(flag.item())
        return run

    def note_movement(self, moving: bool) -> None:
        """Whether the run's watched metrics move now: a budget spends more of itself while they do."""
        if self.schedule is not None:
            self.schedule.note_movement(moving)

    @property
    def generator(self) -> torch.Generator:
        """The monitor's own generator, on the device of the last `compute`."""
        if self._generator is None:
            raise RuntimeError("the generator exists from the first compute on")
        return self._generator

    def _prepare(self, ctx: StepContext) -> list[Batch]:
        device = torch.device(ctx.device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        rank, world = _world()
        if self._batches is None:
            self._batches = [ctx.batch]
            self._batch_device = None
            if world > 1:  # keep the union of the processes' first batches: what a checkpoint saves
                gathered: list[Any] = [None] * world
                torch.distributed.all_gather_object(gathered, [(_to(x, torch.device("cpu")),
                                                                _to(y, torch.device("cpu")))
                                                               for x, y in self._batches])
                self._batches = [b for part in gathered for b in part]
                self._split = True
        if self._batch_device != device:
            self._batches = [(_to(x, device), _to(y, device)) for x, y in self._batches]
            self._batch_device = device
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
            if self._generator_state is not None:
                self._generator.set_state(self._generator_state)
        if world > 1 and self._split:
            return [batch_share(b, rank, world) for b in self._batches]
        return self._batches

    def compute(self, ctx: StepContext) -> dict[str, float]:
        """Measure on the fixed batch with every module in eval mode; restores the modes. Under
        `torch.distributed`, every process must call it at the same step (module notes)."""
        start = self.schedule.clock() if self.schedule is not None else 0.0
        batches = self._prepare(ctx)
        method = METHODS[self.method]
        distributed = _world()[1] > 1
        with eval_mode(ctx.model), HessianOperator(ctx.model, ctx.loss_fn, batches, distributed=distributed) as op:
            if not bool(torch.isfinite(op.loss)):
                out = {name: float("nan") for name in method.names(self, ctx.optimizer)}
            else:
                out = method.measure(self, op, ctx.optimizer)
        if self.schedule is not None:
            self.schedule.book(ctx.step, self.schedule.clock() - start)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Warm-start vectors, generator state and the fixed batches (tensors, lists, dicts only)."""
        generator_state = self._generator.get_state() if self._generator is not None else self._generator_state
        batches = None if self._batches is None else [
            [_map(x, lambda t: t.detach().cpu()), _map(y, lambda t: t.detach().cpu())] for x, y in self._batches
        ]
        return {
            "generator_state": generator_state,
            "vectors": None if self.vectors is None else self.vectors.detach().cpu(),
            "batches": batches,
            "budget": None if self.schedule is None else self.schedule.state_dict(),
            "split": self._split,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; tensors move to the device at the next `compute`."""
        self._generator_state = state["generator_state"]
        self._generator = None
        self.vectors = state["vectors"]
        self._split = state.get("split", self._split)
        if self.schedule is not None and state.get("budget") is not None:  # older checkpoints: a fresh budget
            self.schedule.load_state_dict(state["budget"])
        if state["batches"] is not None:
            self._batches = [(x, y) for x, y in state["batches"]]
            self._batch_device = None
