"""Summary statistics of a Hessian's diagonal: mean, spread, maximum and per-layer means.

Exact when the operator is small: if `dim` is at most the number of products the estimate would
use, the diagonal is computed exactly, one product e_i^T A e_i per coordinate. Otherwise:
- probes: with `groups` (one per layer) each probe covers one group only, which removes the
  couplings between layers from the noise. A pilot of one probe per group (kept as the first probe
  of its group) predicts whether that beats whole-vector probes, and splits the probes between the
  groups as in stratified sampling (Neyman allocation; Cochran, "Sampling Techniques", 1977, 5.5):
  half the weight to the trace's noise, half to the spread's (`allocate_probes`);
- block products: with `block_products=True`, A_gg v by `operator.block_product` (for a
  `HessianOperator` its `block_matvec`, whose double backward stops at the group's layers) every
  probe is confined and answered by its
  block, at a cost that falls steeply towards the output (1% of a whole product for the benchmark
  CNN's output layer). The pilot also prices each block (FLOPs plus a fixed cost per dispatched
  operation, counted, not timed: the same allocation on every run), and the probes are bought by
  Cochran's allocation with costs within a budget of `num_samples` products of the costliest
  block (`allocate_block_probes`);
- mean: Hutchinson's trace / dim, unbiased, with its standard error; per-layer means likewise;
- std: debiased. The spread of the per-element estimates is the true spread plus probe noise;
  the probe-noise variance of element i is estimated by its squared standard error, so
  std^2 = var_i(estimate_i) - mean_i(stderr_i^2) is unbiased for the spread (clipped at 0)
  (up to the mean's own variance / dim^2); per group it is a U-statistic over pairs of probes.
  Its standard error: a stratified delete-a-batch jackknife over the probes (each group's probes
  dealt into up to 8 batches; Efron & Stein 1981, Shao & Tu "The Jackknife and Bootstrap" 1995,
  ch. 6 for strata), applied to the std itself (clip and square root included), computed in
  closed form from per-batch sums: no extra products. A group with 2 probes cannot lose a batch
  and adds nothing to it;
- max: screened and verified. Hutchinson's largest per-element estimate is mostly noise (biased
  up), so `num_exact` coordinates get their exact diagonal entry and `max` is the largest of those:
  a lower bound on the true maximum, exact when the arg-max is among them. Half of them (rounded
  up) are the coordinates with the largest estimated row norms within their group (|A_ii| is at
  most that norm, which is estimated far more precisely than A_ii: on the benchmark CNN the
  diagonal estimate's noise is ~10x the largest entries), the rest those with the largest estimates.
Population statistics (no n-1 correction) over all coordinates.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from phasetrain.curvature.hutchinson import (
    DiagonalEstimate,
    Probe,
    block_probe,
    check_groups,
    confined_probe,
    hutchinson_diagonal,
    on_group,
)
from phasetrain.curvature.operator import LinearOperator, block_product, operator_size, process_sum


@dataclass
class DiagonalStatistics:
    """`mean`, `std`, `max` of diag(A); `mean_stderr`, `std_stderr` their standard errors (0.0
    when exact); `layer_means` and `layer_mean_stderrs` per requested slice; `exact`: computed
    exactly; `num_matvecs` used; `grouped`: the probes were confined to groups
    (`diagonal_statistics`)."""

    mean: float
    mean_stderr: float
    std: float
    std_stderr: float
    max: float
    layer_means: list[float]
    layer_mean_stderrs: list[float]
    exact: bool
    num_matvecs: int
    grouped: bool = False


def diagonal_entries(op: LinearOperator, indices: Sequence[int] | Tensor) -> Tensor:
    """The exact entries A_ii for `indices` of the operator `op` (`LinearOperator`), one product
    each; shape (len(indices),), in its dtype, on its device."""
    return block_diagonal_entries(op, [slice(0, operator_size(op))], indices, block_products=False)


def exact_diagonal(op: LinearOperator) -> Tensor:
    """diag(A) exactly, with n products (affordable for small operators only); shape (n,)."""
    return diagonal_entries(op, torch.arange(operator_size(op)))


def merge_groups(groups: Sequence[slice], max_groups: int) -> list[slice]:
    """Consecutive contiguous `groups` merged into at most `max_groups` by where they start
    (group g goes to bucket floor(start * max_groups / dim)), so merged groups have similar sizes."""
    groups = list(groups)
    if len(groups) <= max_groups:
        return groups
    dim = groups[-1].stop
    merged: list[slice] = []
    last = -1
    for g in groups:
        bucket = min(g.start * max_groups // dim, max_groups - 1)
        if bucket == last:
            merged[-1] = slice(merged[-1].start, g.stop)
        else:
            merged.append(g)
        last = bucket
    return merged


def apportion(weights: Sequence[float], total: int, minimum: int = 2) -> list[int]:
    """Integers >= `minimum` summing to `total`, as close as greedily possible to shares of
    `total` proportional to `weights` (each extra unit goes to the largest remaining shortfall)."""
    counts = [minimum] * len(weights)
    whole = sum(weights)
    targets = [total * w / whole if whole > 0 else total / len(weights) for w in weights]
    for _ in range(total - minimum * len(weights)):
        g = max(range(len(weights)), key=lambda g: targets[g] - counts[g])
        counts[g] += 1
    return counts


def allocate_probes(pilot: Sequence[Probe], groups: Sequence[slice], num_samples: int) -> list[int] | None:
    """Probes per group for `num_samples` confined probes, or None where whole-vector probes are
    predicted to estimate the trace better; from one pilot probe per group (pilot[g] = (z_g, A z_g)).

    With y = A z_g: E||y_g||^2 = ||A_gg||_F^2 and E||y||^2 = ||A_:g||_F^2. A confined probe of
    group g has trace variance ~2 ||A_gg||_F^2, a whole-vector one ~2 ||A||_F^2 = 2 sum_g ||A_:g||_F^2;
    Neyman's allocation (n_g ~ ||A_gg||_F) gives 2 (sum_g ||A_gg||_F)^2 / num_samples, whole-vector
    probes 2 ||A||_F^2 / num_samples. The spread's estimate (a U-statistic, sum_i of d_i^2 each from
    pairs of probes) has a noise term ~2 sum_{i in g} sigma_i^4 / n_g^2 per group, with sigma_i^2 =
    sum_{j != i, j in g} A_ij^2 <= E[y_i^2], minimised at n_g ~ (sum_i sigma_i^4)^(1/3); the pilot's
    sum_i y_i^4 (about 3x that sum) stands in for it. Each rule's shares are normalised and the two
    weighed equally: the mean-only rule leaves too few probes to the small, high-curvature output
    layers for the spread (on the benchmark small MLP, simulated over 80 seeds, its std error is 13%
    at the 90th percentile, 10% with the mix; the mean's barely moves).
    """
    within, fourth = noise_sums(pilot, groups)
    columns = torch.stack([torch.linalg.vector_norm(y, dtype=torch.float64) ** 2 for _, y in pilot])
    confine = bool(within.sqrt().sum() ** 2 < columns.sum())
    return apportion(mixed_shares(within, fourth).tolist(), num_samples) if confine else None


def noise_sums(pilot: Sequence[Probe], groups: Sequence[slice]) -> tuple[Tensor, Tensor]:
    """Per group, from its pilot probe's block y_g = (A z_g)_g: sum_i y_i^2 (estimates
    ||A_gg||_F^2, the trace noise) and sum_i y_i^4 (stands in for the spread's noise); float64."""
    dim = groups[-1].stop
    blocks = [on_group(y, g, dim).double() for (_, y), g in zip(pilot, groups)]
    return torch.stack([b.square().sum() for b in blocks]), torch.stack([b.pow(4).sum() for b in blocks])


def mixed_shares(within: Tensor, fourth: Tensor, costs: Tensor | None = None) -> Tensor:
    """Shares of the probes per group: half by the trace rule (n_g ~ ||A_gg||_F / sqrt(c_g)), half by
    the spread rule (n_g ~ (sum_i sigma_i^4 / c_g)^(1/3)), each normalised. `costs` c_g: the cost
    of one probe of group g (default: equal); these are Cochran's (1977, 5.5) optimal allocations
    for a fixed total cost."""
    costs = torch.ones_like(within) if costs is None else costs
    trace_w = within.sqrt() / costs.sqrt()
    spread_w = (fourth / costs).pow(1 / 3)
    return (trace_w / trace_w.sum().clamp_min(1e-300) + spread_w / spread_w.sum().clamp_min(1e-300)) / 2


def allocate_block_probes(
    pilot: Sequence[Probe], groups: Sequence[slice], num_samples: int, costs: Sequence[float]
) -> list[int]:
    """Probes per group (the pilot's included) when a probe of group g is a block product costing
    `costs[g]` (`counted_block_probes`): the budget is `num_samples` products of the dearest block
    (the first layers' block, which runs nearly the whole double backward: about one H v), of
    which the pilot spent sum(costs); shares by `mixed_shares` with those costs."""
    within, fourth = noise_sums(pilot, groups)
    cost = torch.tensor(costs, dtype=torch.float64).clamp_min(1e-300)
    shares = mixed_shares(within, fourth, cost)
    left = num_samples * float(cost.max()) - float(cost.sum())
    extra = max(round(left / float((shares * cost).sum())), len(groups))
    return [1 + n for n in apportion(shares.tolist(), extra, minimum=1)]


# Fixed cost of one dispatched operation, in multiply-adds of equal time (launch and dispatch
# overhead; ~5 us at ~50 GFLOP/s on a CPU core, ~10 us at ~20 TFLOP/s on a GPU).
OP_COST = {"cpu": 2.5e5, "cuda": 2e8}


class _OpCounter(TorchDispatchMode):
    """Counts the operations dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def counted_block_probes(
    op: LinearOperator, groups: Sequence[slice], generator: torch.Generator
) -> tuple[list[Probe], list[float]]:
    """One block probe per group (`block_probe`) and its cost: the FLOPs of its matrix products and
    convolutions (`torch.utils.flop_counter`) plus `OP_COST` per dispatched operation for the
    device type, so that small layers, whose products are all overhead, are not taken for free.
    Counted, not timed: the same model and batch get the same allocation on every run; on a
    distributed operator the FLOPs are summed over the processes and the operations averaged
    (`process_sum`), so every process prices the blocks alike, as one process with the whole batch
    would."""
    # Imported on first use: its first use costs ~1 s, once per process.
    from torch.utils.flop_counter import FlopCounterMode

    per_op = OP_COST.get(torch.device(op.device).type, OP_COST["cuda"])
    probes, counts = [], []
    for group in groups:
        with FlopCounterMode(display=False) as flops, _OpCounter() as ops:
            probes.append(block_probe(op, group, generator))
        counts.append([float(flops.get_total_flops()), float(ops.ops), 1.0])
    totals = process_sum(op, torch.tensor(counts, dtype=torch.float64, device=op.device))
    return probes, (totals[:, 0] + per_op * totals[:, 1] / totals[:, 2]).tolist()


def block_diagonal_entries(
    op: LinearOperator, groups: Sequence[slice], indices: Sequence[int] | Tensor, *, block_products: bool = True
) -> Tensor:
    """The exact entries A_ii for `indices`, one product each: with `block_products`, with the
    block of i's group (`block_product`), else a whole product; shape (len(indices),)."""
    index = torch.as_tensor(indices, dtype=torch.long).tolist()  # one host read, then plain ints
    out = torch.empty(len(index), dtype=op.dtype, device=op.device)
    dim = operator_size(op)
    for k, i in enumerate(index):
        group = next(g for g in groups if g.start <= i < g.stop) if block_products else slice(0, dim)
        e = torch.zeros(group.stop - group.start, dtype=op.dtype, device=op.device)
        e[i - group.start] = 1
        y = block_product(op, group, e) if block_products else op @ e
        out[k] = y[i - group.start]
    return out


def screened_coordinates(estimate: Tensor, row_norms_sq: Tensor, num: int) -> Tensor:
    """`num` distinct coordinates to verify exactly: ceil(num/2) with the largest `row_norms_sq`
    (estimated squared row norms), then the rest with the largest `estimate`s; shape (num,), long."""
    by_row = torch.topk(row_norms_sq, (num + 1) // 2).indices
    rest = estimate.double().clone()
    rest[by_row] = -torch.inf
    by_estimate = torch.topk(rest, num // 2).indices
    return torch.cat([by_row, by_estimate])


def spread_with_stderr(est: DiagonalEstimate) -> tuple[float, float]:
    """The debiased std of diag(A) from a Hutchinson estimate (module notes) and its jackknife
    standard error, from the estimate's per-batch sums (`DiagonalEstimate`)."""
    dim = est.diagonal.numel()
    sums, sq, counts = est.batch_sums, est.batch_sq_sums, est.batch_counts
    n = counts.sum(1).tolist()
    totals = sums.sum(0)
    # Per group g with n_g probes: T (dim,) the sum of its estimates, q_g the sum of their squares.
    # Its share of sum_i (d_i^2 - stderr_i^2) is the pair statistic (sum_i T_i^2 - q_g) / (n_g (n_g - 1)).
    pair, mean_sum = [], []
    for g, group in enumerate(est.groups):
        t = totals[group]
        pair.append((t.dot(t) - sq[g].sum()) / (n[g] * (n[g] - 1)))
        mean_sum.append(t.sum() / n[g])
    pair_t, mean_t = torch.stack(pair), torch.stack(mean_sum)
    S = mean_t.sum()
    V = pair_t.sum() / dim - (S / dim) ** 2
    replicates = []  # per group: the std with each of its batches left out, (B_g,)
    for g, group in enumerate(est.groups):
        live = (counts[g] > 0).nonzero().flatten().tolist()
        size = counts[g, live].tolist()
        if min(n[g] - c for c in size) < 2:
            continue
        t, tb = totals[group], sums[live][:, group]
        m = torch.tensor([n[g] - c for c in size], dtype=torch.float64, device=t.device)
        left_sq = t.dot(t) - 2 * (tb @ t) + (tb * tb).sum(1)
        pair_b = (left_sq - (sq[g].sum() - sq[g, live])) / (m * (m - 1))
        S_b = S - mean_t[g] + (t.sum() - tb.sum(1)) / m
        V_b = V + (pair_b - pair_t[g]) / dim - (S_b**2 - S**2) / dim**2
        replicates.append(V_b.clamp_min(0).sqrt())
    variance = torch.zeros((), dtype=torch.float64, device=totals.device)
    for r in replicates:
        variance = variance + (len(r) - 1) / len(r) * (r - r.mean()).square().sum()
    std, var = torch.stack([V.clamp_min(0).sqrt(), variance]).tolist()
    return std, var**0.5


def diagonal_statistics(
    op: LinearOperator,
    generator: torch.Generator,
    *,
    num_samples: int = 22,
    num_exact: int = 4,
    slices: Sequence[slice] = (),
    groups: Sequence[slice] = (),
    block_products: bool = False,
) -> DiagonalStatistics:
    """Mean, std and max of diag(A) of the symmetric operator `op` (`LinearOperator`), with
    standard errors for the mean and the std (module notes: what is exact, what estimated).

    Costs `num_samples + num_exact` products, or n if that is no more (then exact). `slices`
    (one per layer, say) get per-slice means. `groups` (contiguous slices covering the vector,
    e.g. `HessianOperator.module_slices()`, merged to at most `num_samples // 4`) get probes of
    their own where a pilot of one probe per group, out of the `num_samples`, says that this
    lowers the variance, split between them by `allocate_probes`; otherwise the pilot is spent
    and the remaining probes cover the whole vector. With `groups` and `block_products`, the
    probes and the exact entries are block products (`block_product`) instead, bought within a
    budget of `num_samples` products of the costliest block (`allocate_block_probes`: more,
    cheaper products). Random signs are drawn from `generator`.
    """
    dim = operator_size(op)
    if not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"num_samples must be an int >= 2, got {num_samples!r}")
    if not isinstance(num_exact, int) or num_exact < 1:
        raise ValueError(f"num_exact must be an int >= 1, got {num_exact!r}")
    if dim <= num_samples + num_exact:
        diag = exact_diagonal(op).double()
        stats = torch.stack([diag.mean(), diag.std(correction=0), diag.max()]).tolist()
        layers = [diag[s].mean().item() for s in slices]
        return DiagonalStatistics(
            stats[0], 0.0, stats[1], 0.0, stats[2], layers, [0.0] * len(layers), True, dim
        )
    groups = merge_groups(check_groups(groups, dim), max(1, num_samples // 4))
    groups = groups if len(groups) > 1 else []
    blocks = block_products and bool(groups)
    if blocks:
        pilot, costs = counted_block_probes(op, groups, generator)
        counts = allocate_block_probes(pilot, groups, num_samples, costs)
    else:
        pilot = [confined_probe(op, g, generator) for g in groups]
        counts = allocate_probes(pilot, groups, num_samples) if groups else None
    grouped = counts is not None
    probes = sum(counts) if grouped else num_samples - len(groups)
    est = hutchinson_diagonal(
        op, probes, generator, slices=slices, groups=groups if grouped else (), counts=counts or (),
        pilot=pilot if grouped else (), block_products=blocks,
    )
    screened = screened_coordinates(est.diagonal.double(), est.row_norms_sq, min(num_exact, dim))
    top = block_diagonal_entries(op, groups, screened, block_products=blocks)
    std, std_stderr = spread_with_stderr(est)
    top_max = top.max().item()
    sizes = [len(range(dim)[s]) for s in slices]
    return DiagonalStatistics(
        mean=est.trace / dim,
        mean_stderr=est.trace_stderr / dim,
        std=std,
        std_stderr=std_stderr,
        max=top_max,
        layer_means=[t / n for t, n in zip(est.block_traces, sizes)],
        layer_mean_stderrs=[t / n for t, n in zip(est.block_trace_stderrs, sizes)],
        exact=False,
        num_matvecs=probes + (0 if grouped else len(pilot)) + len(screened),
        grouped=grouped,
    )
