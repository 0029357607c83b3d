"""Hutchinson's estimators of the diagonal and the trace of a symmetric operator.

With Rademacher probes z (entries +-1), E[z * (A z)] = diag(A) and E[z^T A z] = trace(A)
(Hutchinson 1989; Bekas, Kokiopoulou & Saad 2007). Each probe costs one product. The per-element
estimate is noisy: its variance is sum_{j != i} A_ij^2 / num_samples, so on a network Hessian it is
mostly noise at tens of probes; aggregates (the trace, per-layer means) are far better. Every
estimate comes with its standard error (sample standard deviation across probes / sqrt(samples)).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

MatVec = Callable[[Tensor], Tensor]


@dataclass
class DiagonalEstimate:
    """Hutchinson estimate of diag(A): `diagonal` and `stderr` have shape (dim,); `trace` and
    `trace_stderr` are floats (the mean over probes of z^T A z); `block_traces[b]` and
    `block_trace_stderrs[b]` are the same for the sum of the diagonal over `slices[b]`."""

    diagonal: Tensor
    stderr: Tensor
    trace: float
    trace_stderr: float
    num_samples: int
    block_traces: list[float] = field(default_factory=list)
    block_trace_stderrs: list[float] = field(default_factory=list)


def rademacher(dim: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Tensor:
    """A vector of `dim` independent +-1 entries drawn from `generator`, on its device."""
    bits = torch.randint(0, 2, (dim,), generator=generator, device=generator.device)
    return (2 * bits - 1).to(dtype)


def _check(dim: int, num_samples: int, generator: torch.Generator) -> None:
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    if not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"num_samples must be an int >= 2 (for a standard error), got {num_samples!r}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator (the global RNG is never used), got {generator!r}"
        )


def hutchinson_diagonal(
    matvec: MatVec,
    dim: int,
    num_samples: int,
    generator: torch.Generator,
    *,
    slices: Sequence[slice] = (),
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> DiagonalEstimate:
    """Estimate diag(A) (and trace(A), free) of `matvec` with `num_samples` Rademacher probes.

    `slices` (e.g. one per parameter tensor) get their own partial traces with standard errors
    computed from the per-probe partial sums. Running sums stay in float64 on `device`; one
    host read at the end.
    """
    _check(dim, num_samples, generator)
    device = torch.device(device)
    total = torch.zeros(dim, dtype=torch.float64, device=device)
    total_sq = torch.zeros(dim, dtype=torch.float64, device=device)
    sums = torch.zeros(num_samples, 1 + len(slices), dtype=torch.float64, device=device)
    for p in range(num_samples):
        z = rademacher(dim, generator, dtype).to(device)
        x = (z * matvec(z).to(dtype)).double()
        total += x
        total_sq += x * x
        sums[p] = torch.stack([x.sum(), *(x[s].sum() for s in slices)])
    n = num_samples
    mean = total / n
    var = (total_sq - n * mean * mean).clamp_min(0) / (n - 1)
    means, sds = torch.stack([sums.mean(0), sums.std(0) / n**0.5]).tolist()
    return DiagonalEstimate(
        diagonal=mean.to(dtype),
        stderr=(var / n).sqrt().to(dtype),
        trace=means[0],
        trace_stderr=sds[0],
        num_samples=n,
        block_traces=means[1:],
        block_trace_stderrs=sds[1:],
    )


def hutchinson_trace(
    matvec: MatVec,
    dim: int,
    num_samples: int,
    generator: torch.Generator,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> tuple[float, float]:
    """Estimate trace(A) with `num_samples` Rademacher probes; returns (trace, standard error)."""
    _check(dim, num_samples, generator)
    device = torch.device(device)
    values = torch.zeros(num_samples, dtype=torch.float64, device=device)
    for p in range(num_samples):
        z = rademacher(dim, generator, dtype).to(device)
        values[p] = torch.dot(z, matvec(z).to(dtype)).double()
    trace, sd = torch.stack([values.mean(), values.std()]).tolist()
    return trace, sd / num_samples**0.5
