"""Extreme eigenvalues of a symmetric operator from a block of good start vectors (warm starts).

LOBPCG without a preconditioner (Knyazev 2001, "Toward the optimal preconditioned eigensolver"):
the block X of p Ritz vectors is improved by Rayleigh-Ritz on span[X, W, P], where W holds the
residuals A x - theta x of the wanted pairs not yet converged and P the previous step's update
directions. Only W costs products (one per column); A P and A X are updated by the same linear
combinations as P and X (exact up to rounding), so a step costs as many products as there are
unconverged wanted pairs ("soft locking"), and the first step p (one per start vector).

Started from the previous measurement's top eigenvectors plus a few guard vectors (the next Ritz
vectors), on a Hessian that has drifted, the Rayleigh-Ritz on the start block alone already gives
residuals near the tolerance: on the benchmark MLP, 100 SGD steps apart, k=3 is certified with
10-12 products against ~75 for a cold Lanczos (docs/curvature.md). A single-vector Lanczos
started from a combination of those vectors cannot do that: its Krylov space must first
suppress the rest of the start's spectrum, ~30 products for the clustered top of a network
Hessian.

Stop: the same certificate as `lanczos`, on the true residuals: every wanted Ritz pair has
||A y_i - theta_i y_i|| <= tol * |theta_i| (then an eigenvalue lies within tol * |theta_i| of
theta_i: Weyl / Bauer-Fike), or the product budget is spent. As for any method that is not run
from a random start, the k values certified are the largest of the subspace explored: an
eigenvalue whose eigenvector is orthogonal to the start block and every residual is not seen. The
residual directions cover that in practice (they are not orthogonal to anything in particular);
`HessianMonitor` adds one random vector to the start block as well.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from phasetrain.curvature.lanczos import LanczosResult, check_eigen_arguments, wanted
from phasetrain.curvature.operator import LinearOperator, operator_size


@dataclass
class BlockResult(LanczosResult):
    """A `LanczosResult` (the k certified pairs) plus `ritz_vectors`: all p Ritz vectors of the final
    block, shape (dim, p), best first (the first k are `eigenvectors`): the next warm start."""

    ritz_vectors: Tensor | None = None


def _orthonormalize(v: Tensor, av: Tensor | None, basis: Tensor, a_basis: Tensor | None,
                    drop: float) -> tuple[Tensor, Tensor | None]:
    """Columns of `v` orthonormalised against the orthonormal columns of `basis` and each other
    (classical Gram-Schmidt, twice), dropping any that keep less than `drop` of their norm; `av`
    (A v, or None) transformed alike, using `a_basis` = A basis. Returns (q, A q or None)."""
    kept, a_kept = [], []
    for j in range(v.shape[1]):
        q = v[:, j].clone()
        aq = None if av is None else av[:, j].clone()
        norm0 = torch.linalg.vector_norm(q)
        current = torch.cat([basis, *[c[:, None] for c in kept]], 1)
        a_current = None if av is None else torch.cat([a_basis, *[c[:, None] for c in a_kept]], 1)
        for _ in range(2):
            h = current.T @ q
            q -= current @ h
            if aq is not None:
                aq -= a_current @ h
        norm = torch.linalg.vector_norm(q)
        if float(norm) <= drop * float(norm0) or float(norm) == 0:
            continue
        kept.append(q / norm)
        if aq is not None:
            a_kept.append(aq / norm)
    empty = v.new_zeros(v.shape[0], 0)
    q = torch.stack(kept, 1) if kept else empty
    return q, (None if av is None else torch.stack(a_kept, 1) if a_kept else empty)


def _products(op: LinearOperator, columns: Tensor) -> Tensor:
    return torch.stack([(op @ columns[:, j]).to(columns.dtype) for j in range(columns.shape[1])], 1)


def lobpcg(
    op: LinearOperator,
    start: Tensor,
    k: int = 1,
    *,
    which: str = "LA",
    tol: float = 1e-3,
    max_iter: int = 150,
) -> BlockResult:
    """Top-`k` eigenpairs of the symmetric n x n operator `op` (`LinearOperator`) by LOBPCG from
    the block `start` (shape (n, p), p >= k independent columns: e.g. the previous top
    eigenvectors and a few guard vectors; module notes), in the operator's dtype, on its device.

    `which`: "LA" (largest algebraic) or "LM" (largest magnitude). `tol`: it stops when every
    wanted pair has residual <= `tol * |theta_i|` (as `lanczos`), or before a step would exceed
    `max_iter` products in all (then `converged` is False and the best pairs found are returned).
    The block keeps p Ritz vectors throughout (the p - k beyond the wanted ones speed up the
    wanted ones' convergence). Returns the k pairs, best first, and all p vectors (`BlockResult`).
    """
    dim = operator_size(op)
    check_eigen_arguments(dim, k, which, tol, max_iter)
    if start.dim() != 2 or start.shape[0] != dim or start.shape[1] < k:
        raise ValueError(f"start must have shape ({dim}, p) with p >= k={k}, got {tuple(start.shape)}")
    dtype, device = op.dtype, torch.device(op.device)
    eps = float(torch.finfo(dtype).eps)
    drop = eps**0.5
    x0 = start.detach().to(device=device, dtype=dtype)
    x, _ = _orthonormalize(x0, None, x0.new_zeros(dim, 0), None, drop)
    if x.shape[1] < k or x.shape[1] > max_iter:
        raise ValueError(f"start must hold between k={k} and max_iter={max_iter} independent columns")
    p = x.shape[1]
    ax = _products(op, x)
    used = p
    basis, a_basis = x, ax
    while True:
        gram = (basis.T @ a_basis).double().cpu().numpy()
        theta, coeffs = np.linalg.eigh((gram + gram.T) / 2)
        keep = wanted(theta, min(p, len(theta)), which)
        c = torch.as_tensor(coeffs[:, keep], dtype=dtype, device=device)
        x, ax = basis @ c, a_basis @ c
        values = torch.as_tensor(theta[keep], dtype=dtype, device=device)
        resid = torch.linalg.vector_norm(ax - x * values, dim=0).double().cpu().numpy()
        scale = max(float(np.max(np.abs(theta))), np.finfo(np.float64).tiny)
        met = resid[:k] <= np.maximum(tol * np.abs(theta[keep][:k]), 10 * eps * scale)
        active = [j for j in range(k) if not met[j]]
        if not active or used + len(active) > max_iter:
            break
        # The update directions: the new X's part outside the old X (the basis is [X, P, W]).
        p_dir, a_p_dir = _orthonormalize(basis[:, p:] @ c[p:], a_basis[:, p:] @ c[p:], x, ax, drop)
        residuals = (ax - x * values)[:, active]
        w, _ = _orthonormalize(residuals, None, torch.cat([x, p_dir], 1), None, drop)
        if w.shape[1] == 0:  # the residuals lie in the current subspace: nothing more to find
            break
        aw = _products(op, w)
        used += w.shape[1]
        basis = torch.cat([x, p_dir, w], 1)
        a_basis = torch.cat([ax, a_p_dir, aw], 1)
    return BlockResult(
        eigenvalues=torch.as_tensor(theta[keep][:k], dtype=dtype),
        eigenvectors=x[:, :k],
        residuals=torch.as_tensor(resid[:k], dtype=dtype),
        num_matvecs=used,
        converged=bool(np.all(met)),
        ritz_vectors=x,
    )
