import math

import pytest
import torch
from torch.nn import functional as F

from phasetrain.curvature import (
    HessianOperator,
    gauss_quadrature,
    rademacher,
    spectral_density,
)


def _symmetric(eigenvalues: torch.Tensor, seed: int = 0) -> torch.Tensor:
    n = eigenvalues.numel()
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q @ torch.diag(eigenvalues) @ q.T


def _smoothed(eigenvalues: torch.Tensor, grid: torch.Tensor, sigma: float) -> torch.Tensor:
    """The exact density (1/n) sum_i N(t; lambda_i, sigma^2) on `grid`."""
    z = (grid[:, None] - eigenvalues[None, :].double()) / sigma
    return torch.exp(-0.5 * z**2).mean(dim=1) / (sigma * math.sqrt(2 * math.pi))


def test_gauss_quadrature_is_exact_for_polynomials_up_to_degree_2m_minus_1():
    a = _symmetric(torch.linspace(-1.0, 2.0, 60, dtype=torch.float64))
    v = torch.randn(60, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    v /= v.norm()
    nodes, weights, m = gauss_quadrature(a, v, 8)
    assert m == 8
    power = v.clone()
    for p in range(2 * m):  # v^T A^p v = sum_j tau_j theta_j^p for p <= 2m - 1
        assert (weights * nodes**p).sum() == pytest.approx(float(v @ power), rel=1e-9, abs=1e-12)
        power = a @ power
    # Degree 2m is not integrated exactly: the test above is not vacuous.
    assert abs((weights * nodes ** (2 * m)).sum() - float(v @ power)) > 1e-6


def test_quadrature_stops_when_the_krylov_space_is_invariant():
    a = _symmetric(torch.tensor([1.0, 1.0, 1.0, 3.0, 3.0, -2.0] * 5, dtype=torch.float64))
    v = torch.ones(30, dtype=torch.float64) / math.sqrt(30)
    nodes, weights, m = gauss_quadrature(a, v, 20)
    assert m == 3  # three distinct eigenvalues
    torch.testing.assert_close(torch.from_numpy(nodes), torch.tensor([-2.0, 1.0, 3.0], dtype=torch.float64))
    assert weights.sum() == pytest.approx(1.0)


def test_density_matches_the_exact_smoothed_spectrum_and_its_moments():
    gen = torch.Generator().manual_seed(1)
    eigenvalues = torch.cat([torch.rand(270, generator=gen, dtype=torch.float64) * 0.4 - 0.2,
                             torch.tensor([3.0, 4.0, 4.1], dtype=torch.float64)])
    a = _symmetric(eigenvalues, seed=2)
    result = spectral_density(a, torch.Generator().manual_seed(0), num_probes=20,
                              num_steps=40, sigma=0.05)
    assert result.num_matvecs == 20 * 40
    assert result.weights.sum().item() == pytest.approx(1.0)
    step = (result.grid[1] - result.grid[0]).item()
    assert (result.density.sum() * step).item() == pytest.approx(1.0, abs=1e-3)
    exact = _smoothed(eigenvalues, result.grid, 0.05)
    assert ((result.density - exact).abs().sum() * step).item() < 0.05  # L1 distance; 4 steps give 0.46
    # The outliers are resolved: the density's mass above 2.5 is the outliers' 3/273.
    above = result.grid > 2.5
    assert (result.density[above].sum() * step).item() == pytest.approx(3 / 273, rel=0.2)
    # First moment: an unbiased trace estimate, within a few standard errors.
    assert (result.weights * result.nodes).sum().item() == pytest.approx(eigenvalues.mean().item(), abs=0.01)


def test_probes_are_the_generators_rademacher_vectors_in_order():
    a = _symmetric(torch.linspace(0.0, 1.0, 50, dtype=torch.float64))
    result = spectral_density(a, torch.Generator().manual_seed(4), num_probes=2, num_steps=5)
    gen = torch.Generator().manual_seed(4)
    first = rademacher(50, gen, torch.float64) / math.sqrt(50)
    nodes, weights, _ = gauss_quadrature(a, first, 5)
    torch.testing.assert_close(result.nodes[:5], torch.from_numpy(nodes))
    torch.testing.assert_close(result.weights[:5], torch.from_numpy(weights) / 2)


def test_hessian_density_with_full_steps_has_the_dense_eigenvalues_as_nodes(problem):
    model, batch, H = problem
    exact = torch.linalg.eigvalsh(H)
    with HessianOperator(model, F.cross_entropy, [batch]) as op:
        result = spectral_density(op, torch.Generator().manual_seed(0), num_probes=2,
                                  num_steps=op.num_params)
    # Every node of a complete (or invariant) Krylov space is an eigenvalue of H.
    distance = (result.nodes[:, None] - exact[None, :]).abs().min(dim=1).values
    assert distance.max().item() < 1e-8 * exact.abs().max().item()
    assert result.nodes.max().item() == pytest.approx(exact.max().item(), rel=1e-8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"num_probes": 0}, "num_probes"), ({"num_steps": 1.5}, "num_steps"), ({"sigma": -1.0}, "sigma"),
     ({"num_points": 1}, "num_points")],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        spectral_density(torch.eye(10), torch.Generator(), **kwargs)
