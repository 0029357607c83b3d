"""Hutchinson's estimators of the diagonal and the trace of a symmetric operator.

With Rademacher probes z (entries +-1), E[z * (A z)] = diag(A) and E[z^T A z] = trace(A)
(Hutchinson 1989; Bekas, Kokiopoulou & Saad 2007). Each probe costs one product. The per-element
estimate is noisy: its variance is sum_{j != i} A_ij^2 / num_samples, so on a network Hessian it is
mostly noise at tens of probes; aggregates (the trace, per-layer means) are far better. Every
estimate comes with its standard error (sample standard deviation across probes / sqrt(samples)).
The products also give each row's squared norm within its group: E[(A z)_i^2] = sum_j A_ij^2 over
the probed coordinates j, far less noisy than the diagonal estimate itself (to screen for the max).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from phasetrain.curvature.operator import LinearOperator, block_product, operator_size


@dataclass
class DiagonalEstimate:
    """Hutchinson estimate of diag(A): `diagonal` and `stderr` have shape (dim,); `trace` and
    `trace_stderr` are floats (the mean over probes of z^T A z); `block_traces[b]` and
    `block_trace_stderrs[b]` are the same for the sum of the diagonal over `slices[b]`;
    `row_norms_sq` (shape (dim,)): unbiased estimates of sum_j A_ij^2 over j in i's group.
    For resampling over probes (the jackknife of `diagonal.spread_with_stderr`): `groups`, and the
    probes of each group dealt round-robin into at most `num_batches` batches, with per batch
    `batch_sums` (shape (num_batches, dim), float64: the sum of its probes' estimates on its
    group's coordinates, zero elsewhere), `batch_sq_sums` (shape (len(groups), num_batches),
    float64: the sum over its probes and its group's coordinates of the squared estimates) and
    `batch_counts` (same shape, int64: its number of probes)."""

    diagonal: Tensor
    stderr: Tensor
    trace: float
    trace_stderr: float
    num_samples: int
    block_traces: list[float] = field(default_factory=list)
    block_trace_stderrs: list[float] = field(default_factory=list)
    row_norms_sq: Tensor | None = None
    groups: list[slice] = field(default_factory=list)
    batch_sums: Tensor | None = None
    batch_sq_sums: Tensor | None = None
    batch_counts: Tensor | None = None


def rademacher(dim: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Tensor:
    """A vector of `dim` independent +-1 entries drawn from `generator`, on its device."""
    # int8 bits: a quarter of the int64 default's memory traffic, ~5x faster on a CPU.
    bits = torch.randint(0, 2, (dim,), generator=generator, device=generator.device, dtype=torch.int8)
    return (2 * bits - 1).to(dtype)


def _check(num_samples: int, generator: torch.Generator) -> None:
    if not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"num_samples must be an int >= 2 (for a standard error), got {num_samples!r}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator (the global RNG is never used), got {generator!r}"
        )


def check_groups(groups: Sequence[slice], dim: int) -> list[slice]:
    """`groups` as a list (one whole group if empty); they must cover range(dim) with contiguous,
    ordered, non-empty slices."""
    groups = list(groups) or [slice(0, dim)]
    stops = [0] + [g.stop for g in groups[:-1]]
    if any(not isinstance(g, slice) or g.step not in (None, 1) for g in groups) or [
        g.start for g in groups
    ] != stops or groups[-1].stop != dim or any(g.stop <= g.start for g in groups):
        raise ValueError(f"groups must be contiguous slices covering range({dim}) in order, got {groups!r}")
    return groups


Probe = tuple[Tensor, Tensor]  # (signs z_g on one group, A z (dim,) or A_gg z_g): one confined probe


def on_group(y: Tensor, group: slice, dim: int) -> Tensor:
    """A probe's product restricted to its group: `y` is either a whole product (shape (dim,)) or
    already the block's (shape (len(group),))."""
    return y[group] if y.numel() == dim else y


def confined_probe(op: LinearOperator, group: slice, generator: torch.Generator) -> Probe:
    """One Rademacher probe z non-zero on `group` only: (z[group], A z), shapes (len(group),), (dim,),
    in the operator's dtype and on its device."""
    dim = operator_size(op)
    signs = rademacher(group.stop - group.start, generator, op.dtype).to(op.device)
    z = torch.zeros(dim, dtype=op.dtype, device=op.device)
    z[group] = signs
    return signs, (op @ z).to(op.dtype)


def block_probe(op: LinearOperator, group: slice, generator: torch.Generator) -> Probe:
    """One Rademacher probe on `group` through the block product (`block_product`): (z_g, A_gg z_g),
    both of shape (len(group),). All a confined probe's estimates need, often at a fraction of
    A z's cost."""
    signs = rademacher(group.stop - group.start, generator, op.dtype).to(op.device)
    return signs, block_product(op, group, signs).to(op.dtype)


def hutchinson_diagonal(
    op: LinearOperator,
    num_samples: int,
    generator: torch.Generator,
    *,
    slices: Sequence[slice] = (),
    groups: Sequence[slice] = (),
    counts: Sequence[int] = (),
    pilot: Sequence[Probe] = (),
    block_products: bool = False,
    num_batches: int = 8,
) -> DiagonalEstimate:
    """Estimate diag(A) (and trace(A), free) of the symmetric operator `op` (`LinearOperator`)
    with `num_samples` Rademacher probes.

    `groups` (contiguous slices covering the vector, e.g. one per layer): each probe is non-zero
    on one group only, so an entry's estimate carries noise from its own group's off-diagonal
    entries only, not from the couplings between groups (on network Hessians most of the
    off-diagonal mass; see docs/curvature.md). `counts[g]` probes go to `groups[g]` (at least 2
    each, summing to `num_samples`; default: equal shares). `pilot[g]`, if given, is a probe of
    group g already computed (`confined_probe`), counted as its first. Default: one group, every
    probe on every coordinate. `block_products`: answer the confined probes with A_gg z_g
    (`block_product`, e.g. `HessianOperator.block_matvec`) instead of A z. `slices` (e.g. one per
    parameter tensor) get their own partial traces with standard errors. `num_batches` (>= 2):
    the batches for resampling (`DiagonalEstimate`); they hold `num_batches * dim` float64 sums.
    Running sums stay in float64 on the operator's device; one host read at the end.
    """
    dim = operator_size(op)
    _check(num_samples, generator)
    if not isinstance(num_batches, int) or num_batches < 2:
        raise ValueError(f"num_batches must be an int >= 2, got {num_batches!r}")
    groups = check_groups(groups, dim)
    counts = list(counts) or [len(range(g, num_samples, len(groups))) for g in range(len(groups))]
    if len(counts) != len(groups) or sum(counts) != num_samples or min(counts) < 2:
        raise ValueError(
            f"num_samples must be >= 2 per group ({2 * len(groups)} for {len(groups)} groups), "
            f"split as counts summing to it, got {num_samples} as {counts}"
        )
    if pilot and len(pilot) != len(groups):
        raise ValueError(f"pilot must hold one probe per group ({len(groups)}), got {len(pilot)}")
    device = torch.device(op.device)
    batch_sums = torch.zeros(num_batches, dim, dtype=torch.float64, device=device)
    batch_sq = torch.zeros(len(groups), num_batches, dtype=torch.float64, device=device)
    batch_counts = torch.zeros(len(groups), num_batches, dtype=torch.int64)
    total_sq = torch.zeros(dim, dtype=torch.float64, device=device)
    count = torch.empty(dim, dtype=torch.float64, device=device)
    parts = []  # per group: (its probes, 1 + len(slices)) sums of the probes' estimates
    for g, group in enumerate(groups):
        count[group] = counts[g]
        sums = torch.zeros(counts[g], 1 + len(slices), dtype=torch.float64, device=device)
        for p in range(counts[g]):
            if pilot and p == 0:
                signs, y = pilot[g]
            elif block_products:
                signs, y = block_probe(op, group, generator)
            else:
                signs, y = confined_probe(op, group, generator)
            x = (signs * on_group(y, group, dim)).double()  # the probe's estimate on its group
            b = p % num_batches
            batch_sums[b, group] += x
            x_sq = x * x
            total_sq[group] += x_sq  # = y_i^2: E[y_i^2] = sum_{j in group} A_ij^2
            batch_sq[g, b] += x_sq.sum()
            batch_counts[g, b] += 1
            sums[p, 0] = x.sum()
            if slices:
                full = torch.zeros(dim, dtype=torch.float64, device=device)
                full[group] = x
                sums[p, 1:] = torch.stack([full[s].sum() for s in slices])
        parts.append(sums)
    mean = batch_sums.sum(0) / count
    var = (total_sq - count * mean * mean).clamp_min(0) / (count - 1)
    # Each group's probes estimate its share of every sum; shares add, and so do their variances.
    means = torch.stack([part.mean(0) for part in parts]).sum(0)
    variances = torch.stack([part.var(0) / part.shape[0] for part in parts]).sum(0)
    means, sds = torch.stack([means, variances.sqrt()]).tolist()
    return DiagonalEstimate(
        diagonal=mean.to(op.dtype),
        stderr=(var / count).sqrt().to(op.dtype),
        trace=means[0],
        trace_stderr=sds[0],
        num_samples=num_samples,
        block_traces=means[1:],
        block_trace_stderrs=sds[1:],
        row_norms_sq=(total_sq / count).to(op.dtype),
        groups=groups,
        batch_sums=batch_sums,
        batch_sq_sums=batch_sq,
        batch_counts=batch_counts,
    )


def hutchinson_trace(op: LinearOperator, num_samples: int, generator: torch.Generator) -> tuple[float, float]:
    """Estimate trace(A) of the symmetric operator `op` (`LinearOperator`) with `num_samples`
    Rademacher probes; returns (trace, standard error)."""
    dim = operator_size(op)
    _check(num_samples, generator)
    values = torch.zeros(num_samples, dtype=torch.float64, device=op.device)
    for p in range(num_samples):
        z = rademacher(dim, generator, op.dtype).to(op.device)
        values[p] = torch.dot(z, (op @ z).to(op.dtype)).double()
    trace, sd = torch.stack([values.mean(), values.std()]).tolist()
    return trace, sd / num_samples**0.5
