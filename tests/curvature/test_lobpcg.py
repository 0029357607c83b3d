import pytest
import torch

from phasetrain.curvature import lanczos, lobpcg


def _symmetric(eigenvalues: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    n = eigenvalues.numel()
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q @ torch.diag(eigenvalues) @ q.T, q


def _spectrum(n: int = 300) -> torch.Tensor:
    """A clustered top (10, 9.9, 9.8, 9.5, 9) over a bulk in [-2, 6]."""
    bulk = torch.rand(n - 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 8 - 2
    return torch.cat([torch.tensor([10.0, 9.9, 9.8, 9.5, 9.0], dtype=torch.float64), bulk])


@pytest.mark.parametrize("k", [1, 3])
def test_warm_block_meets_the_certificate_with_few_products(k):
    eigenvalues = _spectrum()
    a, q = _symmetric(eigenvalues)
    start = q[:, : k + 2] + 1e-3 * torch.randn(300, k + 2, generator=torch.Generator().manual_seed(2),
                                               dtype=torch.float64)
    result = lobpcg(a, start, k, tol=1e-4)
    cold = lanczos(a, k, tol=1e-4, max_iter=300, generator=torch.Generator().manual_seed(3))
    assert result.converged and result.num_matvecs < cold.num_matvecs
    y, theta = result.eigenvectors, result.eigenvalues
    true_residuals = torch.linalg.vector_norm(a @ y - y * theta, dim=0)
    torch.testing.assert_close(result.residuals, true_residuals, rtol=1e-6, atol=1e-12)  # the certificate is real
    assert torch.all(true_residuals <= 1e-4 * theta.abs())
    assert torch.all((theta - eigenvalues[:k]).abs() <= 1e-4 * eigenvalues[:k])
    assert torch.all(theta <= eigenvalues[:k] + 1e-12)  # Rayleigh-Ritz values interlace
    torch.testing.assert_close(result.ritz_vectors.T @ result.ritz_vectors, torch.eye(k + 2, dtype=torch.float64),
                               rtol=0, atol=1e-10)


def test_a_random_block_still_converges_and_largest_magnitude_is_supported():
    eigenvalues = torch.cat([torch.tensor([3.0, -5.0, -4.0], dtype=torch.float64),
                             torch.linspace(-1, 1, 97, dtype=torch.float64)])
    a, _ = _symmetric(eigenvalues, seed=4)
    start = torch.randn(100, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    la = lobpcg(a, start, 2, which="LA", tol=1e-8, max_iter=400)
    lm = lobpcg(a, start, 2, which="LM", tol=1e-8, max_iter=400)
    assert la.converged and lm.converged
    torch.testing.assert_close(la.eigenvalues, torch.tensor([3.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(lm.eigenvalues, torch.tensor([-5.0, -4.0], dtype=torch.float64))


def test_the_budget_is_never_exceeded_and_an_unconverged_result_says_so():
    a, _ = _symmetric(_spectrum())
    start = torch.randn(300, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    result = lobpcg(a, start, 3, tol=1e-10, max_iter=12)
    assert not result.converged and result.num_matvecs <= 12
    assert torch.all(result.residuals > 0)


def test_bad_arguments_are_rejected_with_their_names():
    a = torch.eye(6, dtype=torch.float64)
    with pytest.raises(ValueError, match="start must have shape"):
        lobpcg(a, torch.ones(6, 1, dtype=torch.float64), 2)
    with pytest.raises(ValueError, match="start must have shape"):
        lobpcg(a, torch.ones(5, 2, dtype=torch.float64), 1)
    with pytest.raises(ValueError, match="independent columns"):
        lobpcg(a, torch.ones(6, 2, dtype=torch.float64), 2)
    with pytest.raises(ValueError, match="which"):
        lobpcg(a, torch.ones(6, 1, dtype=torch.float64), 1, which="SA")


def test_a_stale_start_gives_up_after_the_first_rayleigh_ritz():
    a, q = _symmetric(_spectrum())
    stale = torch.randn(300, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)  # far from any
    result = lobpcg(a, stale, 2, give_up=0.2)
    assert result.gave_up and not result.converged and result.num_matvecs == 3
    assert torch.all(result.residuals > 0.2 * result.eigenvalues.abs())
    fresh = lobpcg(a, q[:, :3] + 1e-3 * stale, 2, give_up=0.2)
    assert not fresh.gave_up and fresh.converged
