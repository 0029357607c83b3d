"""Curvature of a loss as pure torch functions: Hessian-vector products, top eigenvalues
(Lanczos), the diagonal and the trace (Hutchinson), the eigenvalue density (stochastic Lanczos
quadrature). Nothing here knows about trainers."""
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
)
from phasetrain.curvature.hutchinson import (
    DiagonalEstimate,
    hutchinson_diagonal,
    hutchinson_trace,
    rademacher,
)
from phasetrain.curvature.lanczos import LanczosResult, lanczos
from phasetrain.curvature.operator import (
    HessianOperator,
    batch_loss,
    hessian_vector_product,
    trainable_parameters,
)

__all__ = [
    "DiagonalEstimate",
    "DiagonalStatistics",
    "HessianOperator",
    "LanczosResult",
    "SpectralDensity",
    "batch_loss",
    "diagonal_entries",
    "diagonal_statistics",
    "exact_diagonal",
    "gauss_quadrature",
    "hessian_vector_product",
    "hutchinson_diagonal",
    "hutchinson_trace",
    "lanczos",
    "merge_groups",
    "rademacher",
    "spectral_density",
    "trainable_parameters",
]
