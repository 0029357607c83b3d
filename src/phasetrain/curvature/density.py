"""The eigenvalue density of a symmetric operator by stochastic Lanczos quadrature (SLQ).

For a unit probe v, m Lanczos steps give the tridiagonal T_m; its eigenvalues theta_j (nodes) and
the squared first components tau_j of its eigenvectors (weights, summing to 1) are the m-point
Gauss quadrature of the measure sum_i (v . u_i)^2 delta(lambda_i): sum_j tau_j f(theta_j) equals
v^T f(A) v for every polynomial f of degree <= 2m - 1 (Golub & Welsch 1969). With Rademacher
probes z / sqrt(dim), that measure's expectation is the eigenvalue density (1/dim) sum_i
delta(lambda_i); averaging over probes and widening every node into a Gaussian of width `sigma`
gives a smooth estimate (Lin, Saad & Yang 2016, "Approximating spectral densities of large
matrices"; Ghorbani, Krishnan & Xiao 2019 for network Hessians: outliers, bulk, negative mass).
The moments sum_j w_j theta_j^p are unbiased estimates of tr(A^p) / dim for p <= 2m - 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from phasetrain.curvature.hutchinson import rademacher
from phasetrain.curvature.lanczos import LanczosRecurrence
from phasetrain.curvature.operator import LinearOperator, operator_size


@dataclass
class SpectralDensity:
    """`grid` and `density`: shape (num_points,), float64 on the CPU; the density integrates to ~1
    over the grid (units: 1 / eigenvalue). `nodes`, `weights`: every probe's quadrature nodes
    (eigenvalue units) and weights divided by the number of probes, so the weights sum to 1;
    `sigma`: the Gaussian width used; `num_matvecs`: products used."""

    grid: Tensor
    density: Tensor
    nodes: Tensor
    weights: Tensor
    sigma: float
    num_matvecs: int


def _check(num_probes: int, num_steps: int, sigma: float | None, num_points: int) -> None:
    for name, value in (("num_probes", num_probes), ("num_steps", num_steps)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not isinstance(num_points, int) or num_points < 2:
        raise ValueError(f"num_points must be an int >= 2, got {num_points!r}")
    if sigma is not None and not (isinstance(sigma, (int, float)) and sigma > 0):
        raise ValueError(f"sigma must be a positive number or None, got {sigma!r}")


def gauss_quadrature(
    op: LinearOperator, start: Tensor, num_steps: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Nodes and weights (float64, shape (m,)) of the Gauss quadrature of the measure of the
    symmetric operator `op` (`LinearOperator`) for the unit vector `start` (shape (n,), in the
    operator's dtype and on its device), from m = min(num_steps, len(start)) Lanczos steps, fewer if the Krylov space
    becomes invariant (then the quadrature is exact); and m."""
    krylov = LanczosRecurrence(op, start, min(num_steps, start.numel()))
    for _ in range(krylov.basis.shape[0]):
        krylov.step()
        if krylov.betas[-1] <= 10 * krylov.eps * krylov.norm:
            break
    theta, s = krylov.ritz()
    return theta, s[0] ** 2, len(krylov.alphas)


def spectral_density(
    op: LinearOperator,
    generator: torch.Generator,
    *,
    num_probes: int = 4,
    num_steps: int = 80,
    sigma: float | None = None,
    num_points: int = 1000,
) -> SpectralDensity:
    """The eigenvalue density of the symmetric n x n operator `op` (`LinearOperator`) by SLQ.

    Costs `num_probes * num_steps` products. Probes: Rademacher vectors drawn from `generator`, in
    order, scaled to unit length, in the operator's dtype and on its device. `num_points`: the
    size of the grid. `sigma` (eigenvalue units): the width of the Gaussian each node
    is widened into; default 1% of the span of the nodes. The grid spans the nodes +- 5 sigma.
    More steps resolve the spectrum's shape (the extreme nodes converge to the extreme
    eigenvalues first); more probes lower the noise of the weights.
    """
    dim = operator_size(op)
    _check(num_probes, num_steps, sigma, num_points)
    nodes, weights, used = [], [], 0
    for _ in range(num_probes):
        probe = rademacher(dim, generator, op.dtype).to(op.device) / math.sqrt(dim)
        theta, tau, m = gauss_quadrature(op, probe, num_steps)
        nodes.append(theta)
        weights.append(tau / num_probes)
        used += m
    node, weight = np.concatenate(nodes), np.concatenate(weights)
    span = float(node.max() - node.min())
    width = float(sigma) if sigma is not None else (0.01 * span if span > 0 else 1.0)
    grid = np.linspace(node.min() - 5 * width, node.max() + 5 * width, num_points)
    z = (grid[:, None] - node[None, :]) / width
    density = np.exp(-0.5 * z**2) @ weight / (width * math.sqrt(2 * math.pi))
    return SpectralDensity(
        grid=torch.from_numpy(grid), density=torch.from_numpy(density), nodes=torch.from_numpy(node),
        weights=torch.from_numpy(weight), sigma=width, num_matvecs=used,
    )
