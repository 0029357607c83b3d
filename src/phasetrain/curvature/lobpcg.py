"""Extreme eigenvalues of a symmetric operator from a block of good start vectors (warm starts).

LOBPCG without a preconditioner (Knyazev 2001, "Toward the optimal preconditioned eigensolver"):
the block X of p Ritz vectors is improved by Rayleigh-Ritz on span[X, W, P], where W holds the
residuals A x - theta x of the wanted pairs not yet converged and P the previous step's update
directions. Only W costs products (one per column); A P and A X are updated by the same linear
combinations as P and X (exact up to rounding), so a step costs as many products as there are
unconverged wanted pairs ("soft locking"), and the first step p (one per start vector).

Started from the previous measurement's top eigenvectors plus a few guard vectors (the next Ritz
vectors), on a Hessian that has drifted, the Rayleigh-Ritz on the start block alone already gives
residuals near the tolerance: on the benchmark MLP, 100 SGD steps apart, once the top
eigenvectors stop rotating, k=3 is certified with 9-11 products against 27-31 for a cold Lanczos
and 12-14 for Lanczos started from the sum of the previous eigenvectors (docs/curvature.md; each
step's block operations cost time too, so it is fewer products, not always less time, on a CPU).

Stop: the same certificate as `lanczos`, on the true residuals: every wanted Ritz pair has
||A y_i - theta_i y_i|| <= tol * |theta_i| (then an eigenvalue lies within tol * |theta_i| of
theta_i: Weyl / Bauer-Fike), or the product budget is spent. As for any method that is not run
from a random start, the k values certified are the largest of the subspace explored: an
eigenvalue whose eigenvector is orthogonal to the start block and every residual is not seen. The
residual directions cover that in practice (they are not orthogonal to anything in particular);
`HessianMonitor` mixes a little noise into its guard vectors as well.
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
    block, shape (dim, p), best first (the first k are `eigenvectors`): the next warm start; and
    `gave_up`: stopped after the first Rayleigh-Ritz because the start was stale (`give_up`)."""

    ritz_vectors: Tensor | None = None
    gave_up: bool = False


def _orthonormal_rows(w: Tensor, against: Tensor | None, drop: float) -> Tensor:
    """The rows of `w` orthonormalised against the orthonormal rows of `against` (one block classical
    Gram-Schmidt pass: Rayleigh-Ritz residuals are orthogonal to the subspace already, up to
    rounding) and among themselves (Cholesky QR, twice: Yamamoto et al. 2015), without
    directions that keep less than `drop` of their rows' length (nearly dependent ones). Host work
    on small Gram matrices only; every pass over the long rows is one matrix product."""
    if against is not None and against.shape[0]:
        w = w - (w @ against.T) @ against
    w = w / torch.linalg.vector_norm(w, dim=1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
    gram = (w @ w.T).double().cpu()
    d, u = torch.linalg.eigh((gram + gram.T) / 2)
    keep = d > drop**2
    if not bool(keep.any()):
        return w[:0]
    w = (u[:, keep] / d[keep].sqrt()).T.to(w.dtype).to(w.device) @ w
    gram = (w @ w.T).double().cpu()
    inverse = torch.linalg.inv(torch.linalg.cholesky((gram + gram.T) / 2))
    return inverse.to(w.dtype).to(w.device) @ w


def _products(op: LinearOperator, rows: Tensor) -> Tensor:
    return torch.stack([(op @ row).to(rows.dtype) for row in rows])


def lobpcg(
    op: LinearOperator,
    start: Tensor,
    k: int = 1,
    *,
    which: str = "LA",
    tol: float = 1e-3,
    max_iter: int = 150,
    give_up: float | None = None,
) -> BlockResult:
    """Top-`k` eigenpairs of the symmetric n x n operator `op` (`LinearOperator`) by LOBPCG from
    the block `start` (shape (n, p), p >= k independent columns: e.g. the previous top
    eigenvectors and a few guard vectors; module notes), in the operator's dtype, on its device.

    `which`: "LA" (largest algebraic) or "LM" (largest magnitude). `tol`: it stops when every
    wanted pair has residual <= `tol * |theta_i|` (as `lanczos`), or before a step would exceed
    `max_iter` products in all (then `converged` is False and the best pairs found are returned).
    The block keeps p Ritz vectors throughout (the p - k beyond the wanted ones speed up the
    wanted ones' convergence). `give_up`: if, after the first Rayleigh-Ritz (p products), some
    wanted pair's residual exceeds `give_up * |theta|`, stop there (`gave_up`): the start is too far
    from the eigenvectors for a warm start to pay (a cold Lanczos is cheaper; docs/curvature.md).
    Returns the k pairs, best first, and all p vectors (`BlockResult`).
    The vectors are kept as rows (the basis [X; P; W] and its products, each (m, n)), so every pass
    over them is one matrix product, and the orthogonality of P to X is arranged on the
    Rayleigh-Ritz coefficients (Hetmaniuk & Lehoucq 2006), not on the long vectors.
    """
    dim = operator_size(op)
    check_eigen_arguments(dim, k, which, tol, max_iter)
    if start.dim() != 2 or start.shape[0] != dim or start.shape[1] < k:
        raise ValueError(f"start must have shape ({dim}, p) with p >= k={k}, got {tuple(start.shape)}")
    dtype, device = op.dtype, torch.device(op.device)
    eps = float(torch.finfo(dtype).eps)
    x = _orthonormal_rows(start.detach().T.to(device=device, dtype=dtype), None, eps**0.5)
    p = x.shape[0]
    if p < k or p > max_iter:
        raise ValueError(f"start must hold between k={k} and max_iter={max_iter} independent columns")
    # Rows [X; P; W] (at most p + p + k) and A times them, in two pairs of buffers used in turn.
    buffers = [[torch.empty(3 * p, dim, dtype=dtype, device=device) for _ in range(2)] for _ in range(2)]
    basis, a_basis = buffers[0][0][:p], buffers[0][1][:p]
    basis.copy_(x)
    a_basis.copy_(_products(op, x))
    used, turn, gave_up = p, 0, False
    gram = (basis @ a_basis.T).double().cpu()  # S A S^T; later assembled from small pieces
    while True:
        theta, coeffs = torch.linalg.eigh((gram + gram.T) / 2)
        keep = wanted(theta.numpy(), p, which).tolist()
        c_x = coeffs[:, keep]
        # P: the new X's part outside the old X (its first p rows), orthogonal to the new X.
        c_p = c_x.clone()
        c_p[:p] = 0
        c_p -= c_x @ (c_x.T @ c_p)
        q, r = torch.linalg.qr(c_p)
        c_p = q[:, r.diagonal().abs() > 1e-10]
        mix64 = torch.cat([c_x, c_p], 1).T
        mix = mix64.to(dtype=dtype, device=device)
        turn, m = 1 - turn, mix.shape[0]
        xp = torch.matmul(mix, basis, out=buffers[turn][0][:m])
        a_xp = torch.matmul(mix, a_basis, out=buffers[turn][1][:m])
        values = theta[keep].to(dtype=dtype, device=device)
        residuals = a_xp[:p] - values[:, None] * xp[:p]
        resid = torch.linalg.vector_norm(residuals, dim=1).double().cpu().numpy()
        theta_k = theta[keep].numpy()
        scale = max(float(np.max(np.abs(theta.numpy()))), np.finfo(np.float64).tiny)
        met = resid[:k] <= np.maximum(tol * np.abs(theta_k[:k]), 10 * eps * scale)
        active = [j for j in range(k) if not met[j]]
        if give_up is not None and used == p and np.any(resid[:k] > give_up * np.abs(theta_k[:k])):
            gave_up = True
            break
        if not active or used + len(active) > max_iter:
            break
        w = _orthonormal_rows(residuals[active], xp, eps**0.5)
        if w.shape[0] == 0:  # the residuals lie in the current subspace: nothing more to find
            break
        basis, a_basis = buffers[turn][0][: m + w.shape[0]], buffers[turn][1][: m + w.shape[0]]
        basis[m:] = w
        for j, row in enumerate(w):
            a_basis[m + j] = (op @ row).to(dtype)
        used += w.shape[0]
        # The new Gram matrix: [X; P] against itself is mix G mix^T (no pass over the long rows);
        # only W's rows need products with the basis (by symmetry, (A W) . [X; P; W]).
        cross = (a_basis[m:] @ basis.T).double().cpu()
        previous, gram = gram, torch.empty(basis.shape[0], basis.shape[0], dtype=torch.float64)
        gram[:m, :m] = mix64 @ previous @ mix64.T
        gram[m:] = cross
        gram[:m, m:] = cross[:, :m].T
    x = xp[:p].T.contiguous()
    return BlockResult(
        eigenvalues=torch.as_tensor(theta_k[:k], dtype=dtype),
        eigenvectors=x[:, :k],
        residuals=torch.as_tensor(resid[:k], dtype=dtype),
        num_matvecs=used,
        converged=bool(np.all(met)),
        ritz_vectors=x,
        gave_up=gave_up,
    )
