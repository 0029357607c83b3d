"""Curvature of a loss as pure torch functions: Hessian-vector products, top eigenvalues
(Lanczos cold, LOBPCG warm), the diagonal and the trace (Hutchinson), the eigenvalue density
(stochastic Lanczos quadrature). Nothing here knows about trainers. Every estimator takes one
operator (`LinearOperator`: `shape`, `dtype`, `device`, `@`): a `HessianOperator`, or a dense
square tensor."""
from phasetrain.curvature.density import (
    SpectralDensity,
    gauss_quadrature,
    spectral_density,
)
from phasetrain.curvature.diagonal import (
    DiagonalStatistics,
    diagonal_entries,
    diagonal_statistics,
    exact_diagonal,
    merge_groups,
    spread_with_stderr,
)
from phasetrain.curvature.hutchinson import (
    DiagonalEstimate,
    hutchinson_diagonal,
    hutchinson_trace,
    rademacher,
)
from phasetrain.curvature.lanczos import LanczosResult, lanczos
from phasetrain.curvature.lobpcg import lobpcg
from phasetrain.curvature.operator import (
    HessianOperator,
    LinearOperator,
    batch_loss,
    batch_size,
    block_product,
    hessian_vector_product,
    trainable_parameters,
    uncompiled,
)

__all__ = [
    "DiagonalEstimate",
    "DiagonalStatistics",
    "HessianOperator",
    "LanczosResult",
    "LinearOperator",
    "SpectralDensity",
    "batch_loss",
    "batch_size",
    "block_product",
    "diagonal_entries",
    "diagonal_statistics",
    "exact_diagonal",
    "gauss_quadrature",
    "hessian_vector_product",
    "hutchinson_diagonal",
    "hutchinson_trace",
    "lanczos",
    "lobpcg",
    "merge_groups",
    "rademacher",
    "spectral_density",
    "spread_with_stderr",
    "trainable_parameters",
    "uncompiled",
]
