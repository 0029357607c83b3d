"""Summary statistics of a Hessian's diagonal: mean, spread, maximum and per-layer means.

Exact when the operator is small: if `dim` is at most the number of products the estimate would
use, the diagonal is computed exactly, one product e_i^T A e_i per coordinate. Otherwise:
- mean: Hutchinson's trace / dim, unbiased, with its standard error; with `groups` (one per layer)
  each probe may cover one group only, which removes the couplings between layers from the noise,
  where a pilot shows that they outweigh the loss of probes per group;
- per-layer means: Hutchinson's partial traces / layer size, unbiased, with standard errors;
- std: debiased. The spread of the per-element estimates is the true spread plus probe noise;
  the probe-noise variance of element i is estimated by its squared standard error, so
  std^2 = var_i(estimate_i) - mean_i(stderr_i^2) is unbiased for the spread (clipped at 0). (The
  screened exact entries below are not put in its place: chosen for their large estimates, they
  are where the noise is largest, so that swap biases the spread down, to 0 on a noisy CNN);
- max: screened and verified. Hutchinson's largest per-element estimate is mostly noise (biased
  up), so the `num_exact` coordinates with the largest estimates get their exact diagonal entry,
  and `max` is the largest of those: a lower bound on the true maximum, exact when the arg-max is
  among the screened coordinates.
Population statistics (no n-1 correction) over all coordinates.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from phasetrain.curvature.hutchinson import check_groups, hutchinson_diagonal, rademacher

MatVec = Callable[[Tensor], Tensor]


@dataclass
class DiagonalStatistics:
    """`mean`, `std`, `max` of diag(A); `mean_stderr` (0.0 when exact); `layer_means` and
    `layer_mean_stderrs` per requested slice; `exact`: computed exactly; `num_matvecs` used;
    `grouped`: the probes were confined to groups (`diagonal_statistics`)."""

    mean: float
    mean_stderr: float
    std: float
    max: float
    layer_means: list[float]
    layer_mean_stderrs: list[float]
    exact: bool
    num_matvecs: int
    grouped: bool = False


def diagonal_entries(
    matvec: MatVec, dim: int, indices: Sequence[int] | Tensor, *, dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """The exact entries A_ii for `indices`, one product each; shape (len(indices),), on `device`."""
    index = torch.as_tensor(indices, dtype=torch.long).tolist()  # one host read, then plain ints
    out = torch.empty(len(index), dtype=dtype, device=device)
    e = torch.zeros(dim, dtype=dtype, device=device)
    for k, i in enumerate(index):
        e[i] = 1
        out[k] = matvec(e)[i]
        e[i] = 0
    return out


def exact_diagonal(
    matvec: MatVec, dim: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> Tensor:
    """diag(A) exactly, with `dim` products (affordable for small operators only); shape (dim,)."""
    return diagonal_entries(matvec, dim, torch.arange(dim), dtype=dtype, device=device)


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


def grouping_pays(
    matvec: MatVec, dim: int, groups: Sequence[slice], generator: torch.Generator, *,
    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
) -> bool:
    """Whether probes confined to `groups` beat whole-vector probes, from one pilot probe per group.

    A probe's Hutchinson variance is about 2 ||A||_F^2 (off-diagonal part) for a whole-vector
    probe and 2 ||A_bb||_F^2 for one confined to group b, which then needs len(groups) probes to
    cover the vector. With z_b a Rademacher vector on group b, E||(A z_b)_b||^2 = ||A_bb||_F^2 and
    E||A z_b||^2 = ||A_:b||_F^2, so the pilot estimates both sums. Costs len(groups) products.
    """
    z = torch.zeros(dim, dtype=dtype, device=device)
    within = torch.zeros((), dtype=torch.float64, device=device)
    columns = torch.zeros((), dtype=torch.float64, device=device)
    for group in groups:
        z[group] = rademacher(group.stop - group.start, generator, dtype).to(device)
        y = matvec(z).double()
        z[group] = 0
        within += y[group].square().sum()
        columns += y.square().sum()
    return bool(len(groups) * within < columns)


def diagonal_statistics(
    matvec: MatVec,
    dim: int,
    generator: torch.Generator,
    *,
    num_samples: int = 24,
    num_exact: int = 8,
    slices: Sequence[slice] = (),
    groups: Sequence[slice] = (),
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> DiagonalStatistics:
    """Mean, std and max of diag(A) (see the module notes for what is exact and what estimated).

    Costs `num_samples + num_exact` products, or `dim` if that is no more (then exact). `slices`
    (one per layer, say) get per-slice means. `groups` (contiguous slices covering the vector,
    e.g. `HessianOperator.module_slices()`, merged to at most `num_samples // 4`) get probes of
    their own (`hutchinson_diagonal`) where a pilot of one probe per group, out of the
    `num_samples`, says that this lowers the variance (`grouping_pays`).
    """
    if not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"num_samples must be an int >= 2, got {num_samples!r}")
    if not isinstance(num_exact, int) or num_exact < 1:
        raise ValueError(f"num_exact must be an int >= 1, got {num_exact!r}")
    if dim <= num_samples + num_exact:
        diag = exact_diagonal(matvec, dim, dtype=dtype, device=device).double()
        stats = torch.stack([diag.mean(), diag.std(correction=0), diag.max()]).tolist()
        layers = [diag[s].mean().item() for s in slices]
        return DiagonalStatistics(
            stats[0], 0.0, stats[1], stats[2], layers, [0.0] * len(layers), True, dim
        )
    groups = merge_groups(check_groups(groups, dim), max(1, num_samples // 4))
    groups = groups if len(groups) > 1 else []
    grouped = bool(groups) and grouping_pays(matvec, dim, groups, generator, dtype=dtype, device=device)
    est = hutchinson_diagonal(
        matvec, dim, num_samples - len(groups), generator, slices=slices,
        groups=groups if grouped else (), dtype=dtype, device=device,
    )
    d = est.diagonal.double()
    noise = est.stderr.double() ** 2
    screened = torch.topk(d, min(num_exact, dim)).indices
    top = diagonal_entries(matvec, dim, screened, dtype=dtype, device=device)
    spread = d.var(correction=0) - noise.mean()
    std, top_max = torch.stack([spread.clamp_min(0).sqrt(), top.max().double()]).tolist()
    sizes = [len(range(dim)[s]) for s in slices]
    return DiagonalStatistics(
        mean=est.trace / dim,
        mean_stderr=est.trace_stderr / dim,
        std=std,
        max=top_max,
        layer_means=[t / n for t, n in zip(est.block_traces, sizes)],
        layer_mean_stderrs=[t / n for t, n in zip(est.block_trace_stderrs, sizes)],
        exact=False,
        num_matvecs=num_samples + len(screened),
        grouped=grouped,
    )
