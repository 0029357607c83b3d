"""Extreme eigenvalues of a symmetric operator by Lanczos with partial reorthogonalisation.

The Krylov basis, the products and the reorthogonalisation stay on the operator's device; only the
small tridiagonal matrix goes to the host, one pair of scalars per iteration (one device sync),
for the stopping test.

Reorthogonalisation (Simon 1984, "The Lanczos algorithm with partial reorthogonalization"): the
loss of orthogonality of the new basis vector against every earlier one is estimated by a scalar
recurrence on the host (O(j) flops, no read of the basis); only when an estimate exceeds
sqrt(eps) is the vector reorthogonalised against the whole basis (one classical Gram-Schmidt pass,
two matrix-vector products with the basis), and then the next one too. This keeps the basis
semi-orthogonal, which keeps the Ritz values and residuals as accurate as full reorthogonalisation
(Simon 1984), at a fraction of the reads of the basis (the dominant cost besides the products).

Stop: on the TRUE residual r_i = ||A y_i - theta_i y_i|| = beta_m |s_mi| of each wanted Ritz pair
(Paige 1971; Saad, "Numerical Methods for Large Eigenvalue Problems", 2011, sec. 6.6), not on the
change between iterations, which halts early in a cluster of close eigenvalues. For a symmetric A
the residual bounds the eigenvalue error: some eigenvalue lies within r_i of theta_i (Weyl /
Bauer-Fike), so stopping at r_i <= tol * |theta_i| bounds the relative error by `tol`. For the
largest algebraic values theta_i <= lambda_i always (Cauchy interlacing), and the error to lambda_i
itself is within r_i unless the Krylov space has missed an eigenvector entirely (a start vector
orthogonal to it: probability zero for a random start). Once theta_i is separated from the rest
of the spectrum by a gap g the error is about r_i^2 / g (Kato-Temple), so measured errors are far
below `tol` (benchmarks/curvature.py); the quadratic bound is not used to stop, because its gap
can only be estimated from Ritz values, and that estimate fails in an unresolved cluster.

A loss Hessian is indefinite. `which="LA"` (default) returns the largest *algebraic* eigenvalues:
lambda_max is the "sharpness" of the edge-of-stability literature (Cohen et al. 2021).
`which="LM"` returns those of largest magnitude.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from phasetrain.curvature.operator import LinearOperator, operator_size

_WHICH = ("LA", "LM")


@dataclass
class LanczosResult:
    """Top-k Ritz pairs. `eigenvalues`: shape (k,) on the CPU, descending (by value for "LA", by
    magnitude for "LM"); `eigenvectors`: shape (dim, k) unit columns on the operator's device, or
    None if not requested; `residuals`: ||A y_i - theta_i y_i||, shape (k,) on the CPU;
    `num_matvecs`: products used; `converged`: every residual met the tolerance;
    `num_reorthogonalizations`: passes against the whole basis (Lanczos only)."""

    eigenvalues: Tensor
    eigenvectors: Tensor | None
    residuals: Tensor
    num_matvecs: int
    converged: bool
    num_reorthogonalizations: int = 0


def wanted(theta: np.ndarray, k: int, which: str) -> np.ndarray:
    """Indices of the k wanted Ritz values, best first."""
    key = -theta if which == "LA" else -np.abs(theta)
    return np.argsort(key, kind="stable")[:k]


class _Orthogonality:
    """Simon's (1984) estimates omega_k ~ q_{j+1}^T q_k of the loss of orthogonality, on the host.

    `alphas`, `betas` are the recurrence coefficients (betas[i] couples q_i and q_{i+1}); `eps`
    the unit roundoff of the basis's dtype. `advance` returns the new row's largest estimate.
    """

    def __init__(self, eps: float) -> None:
        self.eps = eps
        self.previous = np.zeros(0)
        self.current = np.ones(1)  # omega_{0,0}
        self.norm = 0.0

    def advance(self, alphas: list[float], betas: list[float]) -> float:
        j = len(alphas) - 1
        a, b = np.asarray(alphas), np.asarray(betas)
        self.norm = max(self.norm, abs(a[j]) + b[j] + (b[j - 1] if j else 0.0))
        new = np.empty(j + 2)
        beta = max(b[j], np.finfo(np.float64).tiny)
        if j > 0:
            k = np.arange(j)
            t = b[k] * self.current[k + 1] + (a[k] - a[j]) * self.current[k]
            t[1:] += b[k[1:] - 1] * self.current[k[1:] - 1]
            t -= b[j - 1] * self.previous[k]
            new[:j] = (t + np.copysign(2 * self.eps * self.norm, t)) / beta
        new[j] = self.eps * self.norm / beta
        new[j + 1] = 1.0
        self.previous, self.current = self.current, new
        return float(np.max(np.abs(new[: j + 1])))

    def reset(self) -> None:
        """The newest vector was just reorthogonalised against all earlier ones."""
        self.current[:-1] = self.eps


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


def check_eigen_arguments(dim: int, k: int, which: str, tol: float, max_iter: int) -> None:
    """ValueError unless 1 <= k <= dim, `which` is known, tol > 0 and max_iter >= k."""
    if not isinstance(k, int) or not 1 <= k <= dim:
        raise ValueError(f"k must be an int in [1, dim={dim}], got {k!r}")
    if which not in _WHICH:
        raise ValueError(f"which must be one of {_WHICH}, got {which!r}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    if not isinstance(max_iter, int) or max_iter < k:
        raise ValueError(f"max_iter must be an int >= k={k}, got {max_iter!r}")


def _orthogonalize(w: Tensor, basis: Tensor) -> Tensor:
    """One classical Gram-Schmidt pass of `w` (in place) against the rows of `basis`; returns the
    removed coefficients, shape (rows,)."""
    h = basis @ w
    w.addmv_(basis.T, h, alpha=-1)
    return h


class LanczosRecurrence:
    """The Lanczos recurrence A Q_m = Q_m T_m + beta_m q_{m+1} e_m^T with partial
    reorthogonalisation (module notes), one `step()` per product, on the start vector's device.

    `basis` rows 0..m-1 are q_1..q_m (unit, semi-orthogonal); `alphas`, `betas`: the tridiagonal
    T_m's diagonal and the couplings (`betas[i]` couples q_i and q_{i+1}; the last one is beta_m);
    `passes`: reorthogonalisations against the whole basis; `norm`: a running estimate of ||A||.
    """

    def __init__(self, op: LinearOperator, start: Tensor, max_steps: int) -> None:
        self.op = op
        self.basis = torch.empty(max_steps, start.numel(), dtype=start.dtype, device=start.device)
        self.basis[0] = start  # rows past the last step are never read
        self.eps = float(torch.finfo(start.dtype).eps)
        self.omega = _Orthogonality(self.eps)
        self.alphas: list[float] = []
        self.betas: list[float] = []
        self.passes = 0
        self._w = start
        self._beta = torch.zeros((), dtype=start.dtype, device=start.device)
        self._reorthogonalize_next = False

    @property
    def norm(self) -> float:
        return self.omega.norm

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (ascending) and eigenvectors of T_m, float64 on the host."""
        a, b = self.alphas, self.betas[:-1]
        tri = np.diag(a) + np.diag(b, 1) + np.diag(b, -1)
        # torch's LAPACK, not numpy's: numpy's BLAS threads contend with torch's (ms per call).
        theta, s = torch.linalg.eigh(torch.from_numpy(tri))
        return theta.numpy(), s.numpy()

    def step(self) -> None:
        """One product: extends T by a row (one device sync for alpha and beta)."""
        j = len(self.alphas)
        basis, beta = self.basis, self._beta
        if j:
            torch.div(self._w, beta, out=basis[j])
        q = basis[j]
        w = (self.op @ q).to(basis.dtype)
        w = w.clone() if w.data_ptr() == q.data_ptr() else w  # in-place below: never the basis
        alpha = torch.dot(q, w)
        w.addcmul_(q, alpha, value=-1)
        if j > 0:
            w.addcmul_(basis[j - 1], beta, value=-1)
        if self._reorthogonalize_next:  # the second of a pair (Simon 1984)
            alpha = alpha + _orthogonalize(w, basis[: j + 1])[j]
            self.passes += 1
        beta = torch.linalg.vector_norm(w)
        alpha_j, beta_j = torch.stack([alpha, beta]).tolist()
        self.alphas.append(alpha_j)
        self.betas.append(beta_j)
        if self._reorthogonalize_next:
            self.omega.advance(self.alphas, self.betas)
            self.omega.reset()
            self._reorthogonalize_next = False
        elif self.omega.advance(self.alphas, self.betas) > self.eps**0.5:
            h_j = _orthogonalize(w, basis[: j + 1])[j]
            beta = torch.linalg.vector_norm(w)
            correction, self.betas[-1] = torch.stack([h_j, beta]).tolist()
            self.alphas[-1] += correction
            self.omega.reset()
            self.passes += 1
            self._reorthogonalize_next = True
        self._w, self._beta = w, beta


def lanczos(
    op: LinearOperator,
    k: int = 1,
    *,
    which: str = "LA",
    tol: float = 1e-3,
    max_iter: int = 150,
    v0: Tensor | None = None,
    generator: torch.Generator | None = None,
    return_eigenvectors: bool = False,
    guard: int = 0,
) -> LanczosResult:
    """Top-`k` eigenpairs of the symmetric n x n operator `op` (`LinearOperator`: a square tensor,
    a `HessianOperator`, ...), computed in its dtype on its device.

    `which`: "LA" (largest algebraic) or "LM" (largest magnitude). `tol` bounds the relative
    eigenvalue error: it stops when every wanted Ritz pair has residual r_i <= `tol * |theta_i|`
    (then an eigenvalue lies within that of theta_i; module notes), after `max_iter` products, or
    when the Krylov space is invariant (then the pairs are exact). An eigenvalue within rounding
    (eps * max|theta|) of zero meets it only at that level. Start: `v0` (shape (n,); a warm start,
    e.g. the last top eigenvector) or a Gaussian vector drawn from `generator`.
    `return_eigenvectors`: also return the Ritz vectors, shape (n, k + guard): the k certified
    ones, then the `guard` next ones of the same Krylov space, uncertified (no extra products; a
    block warm start for `lobpcg`).
    """
    dim = operator_size(op)
    check_eigen_arguments(dim, k, which, tol, max_iter)
    if not isinstance(guard, int) or guard < 0:
        raise ValueError(f"guard must be an int >= 0, got {guard!r}")
    dtype, device = op.dtype, torch.device(op.device)
    m_max = min(max_iter, dim)
    krylov = LanczosRecurrence(op, _start_vector(dim, v0, generator, dtype, device), m_max)
    eps = krylov.eps
    for j in range(m_max):
        krylov.step()
        beta_j = krylov.betas[-1]
        theta, s = krylov.ritz()
        scale = max(float(np.max(np.abs(theta))), np.finfo(np.float64).tiny)
        idx = wanted(theta, min(k, j + 1), which)
        resid = beta_j * np.abs(s[-1, idx])
        invariant = beta_j <= 10 * eps * scale
        if invariant:
            resid = np.zeros_like(resid)
        met = np.all(resid <= np.maximum(tol * np.abs(theta[idx]), eps * scale))
        if invariant or (j + 1 >= k and met) or j + 1 == m_max:
            break
    m = len(krylov.alphas)
    if len(idx) < k:
        raise RuntimeError(
            f"the Krylov space became invariant at dimension {m} < k={k}; the start vector lies "
            "in an invariant subspace (use a random start)"
        )
    vectors = None
    if return_eigenvectors:
        coeffs = torch.as_tensor(s[:, wanted(theta, min(k + guard, m), which)], dtype=dtype, device=device)
        vectors = krylov.basis[:m].T @ coeffs
    return LanczosResult(
        eigenvalues=torch.as_tensor(theta[idx], dtype=dtype),
        eigenvectors=vectors,
        residuals=torch.as_tensor(resid, dtype=dtype),
        num_matvecs=m,
        converged=bool(invariant or met),
        num_reorthogonalizations=krylov.passes,
    )
