"""Extreme eigenvalues of a symmetric operator by Lanczos with full reorthogonalisation.

The Krylov basis, the products and the reorthogonalisation stay on the operator's device; only the
small tridiagonal matrix goes to the host, one pair of scalars per iteration (one device sync),
for the stopping test.
The stop is on the TRUE residual of the wanted Ritz pairs, ||A y - theta y|| = beta_m |s_m| (Paige
1971; Saad, "Numerical Methods for Large Eigenvalue Problems", 2011, sec. 6.6), so a cluster of
close eigenvalues (where a change-based stop halts early on the wrong value) is resolved.

A loss Hessian is indefinite. `which="LA"` (default) returns the largest *algebraic* eigenvalues:
lambda_max is the "sharpness" of the edge-of-stability literature (Cohen et al. 2021).
`which="LM"` returns those of largest magnitude.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

MatVec = Callable[[Tensor], Tensor]
_WHICH = ("LA", "LM")


@dataclass
class LanczosResult:
    """Top-k Ritz pairs. `eigenvalues`: shape (k,) on the CPU, descending (by value for "LA", by
    magnitude for "LM"); `eigenvectors`: shape (dim, k) unit columns on the operator's device, or
    None if not requested; `residuals`: ||A y_i - theta_i y_i||, shape (k,) on the CPU;
    `num_matvecs`: products used; `converged`: all residuals met the tolerance."""

    eigenvalues: Tensor
    eigenvectors: Tensor | None
    residuals: Tensor
    num_matvecs: int
    converged: bool


def _wanted(theta: np.ndarray, k: int, which: str) -> np.ndarray:
    """Indices of the k wanted Ritz values, best first."""
    key = -theta if which == "LA" else -np.abs(theta)
    return np.argsort(key, kind="stable")[:k]


def _start_vector(
    dim: int, v0: Tensor | None, generator: torch.Generator | None, dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    if v0 is not None:
        if v0.shape != (dim,):
            raise ValueError(f"v0 must have shape ({dim},), got {tuple(v0.shape)}")
        q = v0.detach().to(device=device, dtype=dtype).clone()
    else:
        if generator is None:
            raise ValueError("lanczos needs v0 or a torch.Generator (the global RNG is never used)")
        q = torch.randn(dim, generator=generator, device=generator.device, dtype=dtype).to(device)
    norm = torch.linalg.vector_norm(q)
    if not torch.isfinite(norm) or norm == 0:
        raise ValueError("v0 must be a finite, non-zero vector")
    return q / norm


def lanczos(
    matvec: MatVec,
    dim: int,
    k: int = 1,
    *,
    which: str = "LA",
    tol: float = 1e-3,
    max_iter: int = 150,
    v0: Tensor | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    return_eigenvectors: bool = False,
) -> LanczosResult:
    """Top-`k` eigenpairs of the symmetric operator `matvec` (R^dim -> R^dim).

    Stops when every wanted Ritz pair has residual <= `tol * max|theta|` (relative to the largest
    Ritz value, the operator's scale), after `max_iter` products, or when the Krylov space is
    invariant (then the pairs are exact). Start: `v0` (a warm start, e.g. the last top eigenvector)
    or a Gaussian vector drawn from `generator`. A residual r guarantees an eigenvalue within r of
    the Ritz value; once the pair is separated from the rest of the spectrum by a gap g the error
    is about r^2 / g, so typical errors are far below `tol` (see benchmarks/curvature.py). In a
    cluster of eigenvalues closer than r, the i-th Ritz value may sit on a neighbour of the i-th
    eigenvalue: lower `tol` below the cluster spacing to resolve it.
    """
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    if not isinstance(k, int) or not 1 <= k <= dim:
        raise ValueError(f"k must be an int in [1, dim={dim}], got {k!r}")
    if which not in _WHICH:
        raise ValueError(f"which must be one of {_WHICH}, got {which!r}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    if not isinstance(max_iter, int) or max_iter < k:
        raise ValueError(f"max_iter must be an int >= k={k}, got {max_iter!r}")
    device = torch.device(device)
    m_max = min(max_iter, dim)
    basis = torch.empty(m_max, dim, dtype=dtype, device=device)  # rows past j are never read
    basis[0] = _start_vector(dim, v0, generator, dtype, device)
    alphas: list[float] = []
    betas: list[float] = []
    idx = np.arange(k)
    s = np.eye(1)
    theta = np.zeros(1)
    resid = np.full(k, np.inf)
    beta = torch.zeros((), dtype=dtype, device=device)
    for j in range(m_max):
        q = basis[j]
        w = matvec(q).to(dtype)
        # Three-term recurrence, then one full reorthogonalisation pass against the whole basis
        # (Golub & Van Loan, "Matrix Computations", 4th ed., sec. 10.3.1): the recurrence removes
        # the large components, the pass removes what rounding leaves. Two reads of the basis.
        alpha = torch.dot(q, w)
        w = w.clone() if w.data_ptr() == q.data_ptr() else w  # in-place below: never the basis
        w.addcmul_(q, alpha, value=-1)
        if j > 0:
            w.addcmul_(basis[j - 1], beta, value=-1)
        h = basis[: j + 1] @ w
        w.addmv_(basis[: j + 1].T, h, alpha=-1)
        beta = torch.linalg.vector_norm(w)
        alpha_j, beta_j = torch.stack([alpha + h[j], beta]).tolist()
        alphas.append(alpha_j)
        tri = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        # torch's LAPACK, not numpy's: numpy's BLAS threads contend with torch's (ms per call).
        theta, s = (t.numpy() for t in torch.linalg.eigh(torch.from_numpy(tri)))
        scale = max(float(np.max(np.abs(theta))), np.finfo(np.float64).tiny)
        idx = _wanted(theta, min(k, j + 1), which)
        resid = beta_j * np.abs(s[-1, idx])
        invariant = beta_j <= 10 * torch.finfo(dtype).eps * scale
        if invariant:
            resid = np.zeros_like(resid)
        if invariant or (j + 1 >= k and np.all(resid <= tol * scale)) or j + 1 == m_max:
            break
        betas.append(beta_j)
        torch.div(w, beta, out=basis[j + 1])
    m = len(alphas)
    if len(idx) < k:
        raise RuntimeError(
            f"the Krylov space became invariant at dimension {m} < k={k}; the start vector lies "
            "in an invariant subspace (use a random start)"
        )
    vectors = None
    if return_eigenvectors:
        coeffs = torch.as_tensor(s[:, idx], dtype=dtype, device=device)
        vectors = basis[:m].T @ coeffs
    return LanczosResult(
        eigenvalues=torch.as_tensor(theta[idx], dtype=dtype),
        eigenvectors=vectors,
        residuals=torch.as_tensor(resid, dtype=dtype),
        num_matvecs=m,
        converged=bool(invariant or np.all(resid <= tol * scale)),
    )
