import pytest
import torch
from torch.nn import functional as F

from phasetrain.curvature import HessianOperator, lanczos


def _symmetric(eigenvalues: torch.Tensor, seed: int = 0) -> torch.Tensor:
    n = eigenvalues.numel()
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q @ torch.diag(eigenvalues) @ q.T


def _clustered(n: int = 400) -> torch.Tensor:
    """Ten eigenvalues 1.0, 0.999, ..., 0.991 on top of a bulk in [-0.5, 0.5]."""
    gen = torch.Generator().manual_seed(5)
    top = 1.0 - 0.001 * torch.arange(10, dtype=torch.float64)
    return torch.cat([top, torch.rand(n - 10, generator=gen, dtype=torch.float64) - 0.5])


def _power_iteration_change_stop(a: torch.Tensor, tol: float, gen: torch.Generator) -> float:
    """What PyHessian does: stop when the Rayleigh quotient changes by less than tol (relative)."""
    v = torch.randn(a.shape[0], generator=gen, dtype=a.dtype)
    v /= v.norm()
    previous = None
    for _ in range(1000):
        w = a @ v
        value = float(v @ w)
        if previous is not None and abs(value - previous) < tol * abs(previous):
            return value
        previous, v = value, w / w.norm()
    return value


def test_top_k_hessian_eigenvalues_match_dense_to_1e_5(problem):
    model, batch, H = problem
    exact = torch.linalg.eigvalsh(H).flip(0)[:3]
    with HessianOperator(model, F.cross_entropy, [batch]) as op:
        result = lanczos(
            op, 3, tol=1e-8, max_iter=op.num_params,
            generator=torch.Generator().manual_seed(0), return_eigenvectors=True,
        )
    assert result.converged
    torch.testing.assert_close(result.eigenvalues, exact, rtol=1e-5, atol=1e-10)
    vecs = result.eigenvectors
    true_residuals = torch.linalg.vector_norm(H @ vecs - vecs * result.eigenvalues, dim=0)
    torch.testing.assert_close(true_residuals, result.residuals, rtol=1e-4, atol=1e-12)
    assert torch.all(true_residuals < 1e-4)
    # A semi-orthogonal basis (|q_i^T q_j| <= sqrt(eps) = 1.5e-8) gives Ritz vectors orthogonal to that level.
    torch.testing.assert_close(vecs.T @ vecs, torch.eye(3, dtype=torch.float64), rtol=0, atol=1.5e-8)


def test_clustered_top_eigenvalues_defeat_change_based_power_iteration_but_not_lanczos():
    eigenvalues = _clustered()
    a = _symmetric(eigenvalues)
    power = _power_iteration_change_stop(a, 1e-4, torch.Generator().manual_seed(1))
    result = lanczos(a, 5, tol=1e-6, max_iter=200,
                     generator=torch.Generator().manual_seed(1))
    assert abs(power - 1.0) > 2e-3  # stopped on a value that had merely stopped moving
    assert result.converged
    torch.testing.assert_close(result.eigenvalues, eigenvalues[:5], rtol=1e-8, atol=0)


def test_residuals_reported_are_the_true_residuals():
    a = _symmetric(_clustered())
    result = lanczos(a, 4, tol=1e-4, max_iter=200,
                     generator=torch.Generator().manual_seed(2), return_eigenvectors=True)
    true = torch.linalg.vector_norm(a @ result.eigenvectors - result.eigenvectors * result.eigenvalues, dim=0)
    torch.testing.assert_close(result.residuals, true, rtol=1e-6, atol=1e-12)
    assert result.converged and torch.all(result.residuals <= 1e-4 * result.eigenvalues.abs())
    # tol (1e-4) below the cluster spacing (1e-3): each Ritz value is on its own eigenvalue.
    assert torch.all((result.eigenvalues - torch.linalg.eigvalsh(a).flip(0)[:4]).abs() <= 1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_ritz_value_is_below_its_eigenvalue_and_within_its_residual_of_one(seed):
    a = _symmetric(_clustered(300), seed=seed)
    spectrum = torch.linalg.eigvalsh(a)
    for m in range(5, 150, 6):
        r = lanczos(a, 5, tol=1e-12, max_iter=m,
                    generator=torch.Generator().manual_seed(seed))
        nearest = (r.eigenvalues[:, None] - spectrum[None, :]).abs().min(1).values
        assert torch.all(nearest <= r.residuals + 1e-12), m  # Weyl: the stopping bound holds
        assert torch.all(r.eigenvalues <= spectrum.flip(0)[:5] + 1e-12), m  # Cauchy interlacing


@pytest.mark.parametrize("k", [1, 5])
@pytest.mark.parametrize("tol", [1e-2, 1e-3, 1e-4])
def test_stop_meets_the_requested_relative_accuracy_in_a_cluster(k, tol):
    eigenvalues = _clustered()
    a = _symmetric(eigenvalues, seed=3)
    result = lanczos(a, k, tol=tol, max_iter=300,
                     generator=torch.Generator().manual_seed(4))
    assert result.converged
    assert torch.all((result.eigenvalues - eigenvalues[:k]).abs() <= tol * eigenvalues[:k])


def test_partial_reorthogonalisation_keeps_float32_ritz_values_free_of_ghosts():
    # The top eigenvalue converges long before the cluster under it: without reorthogonalisation
    # (checked by hand) a float32 run returns five copies of 10.0 here.
    eigenvalues = torch.cat([torch.tensor([10.0, 1.04, 1.03, 1.02, 1.01]), torch.linspace(-1, 1, 1995)])
    a = _symmetric(eigenvalues.double()).float()
    result = lanczos(a, 5, tol=1e-6, max_iter=200,
                     generator=torch.Generator().manual_seed(0), return_eigenvectors=True)
    assert result.converged and 0 < result.num_reorthogonalizations < result.num_matvecs
    torch.testing.assert_close(result.eigenvalues, eigenvalues[:5], rtol=1e-5, atol=0)
    vecs = result.eigenvectors
    torch.testing.assert_close(vecs.T @ vecs, torch.eye(5), rtol=0, atol=1e-3)


def test_largest_algebraic_versus_largest_magnitude_on_an_indefinite_operator():
    eigenvalues = torch.tensor([3.0, 1.0, 0.5, -0.2, -5.0, -4.0] + [0.01 * i for i in range(30)], dtype=torch.float64)
    a = _symmetric(eigenvalues)
    la = lanczos(a, 2, which="LA", tol=1e-10, max_iter=36,
                 generator=torch.Generator().manual_seed(0))
    lm = lanczos(a, 2, which="LM", tol=1e-10, max_iter=36,
                 generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(la.eigenvalues, torch.tensor([3.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(lm.eigenvalues, torch.tensor([-5.0, -4.0], dtype=torch.float64))


def test_warm_start_from_the_top_eigenvector_needs_few_products():
    bulk = torch.rand(398, generator=torch.Generator().manual_seed(4), dtype=torch.float64) - 0.5
    a = _symmetric(torch.cat([torch.tensor([1.0, 0.9], dtype=torch.float64), bulk]))
    cold = lanczos(a, 1, tol=1e-6, max_iter=200,
                   generator=torch.Generator().manual_seed(3), return_eigenvectors=True)
    perturbed = a + 1e-4 * _symmetric(torch.linspace(-1, 1, a.shape[0], dtype=torch.float64), seed=9)
    warm = lanczos(perturbed, 1, tol=1e-6, max_iter=200,
                   v0=cold.eigenvectors[:, 0])
    exact = torch.linalg.eigvalsh(perturbed)[-1]
    assert warm.converged and abs(warm.eigenvalues[0] - exact) < 1e-8
    assert warm.num_matvecs < cold.num_matvecs / 2


def test_small_operator_is_solved_exactly_when_the_krylov_space_closes():
    a = _symmetric(torch.tensor([2.0, 1.0, -1.0, 0.5, 0.25], dtype=torch.float64))
    result = lanczos(a, 5, tol=1e-12, max_iter=50,
                     generator=torch.Generator().manual_seed(0))
    assert result.converged and result.num_matvecs == 5
    torch.testing.assert_close(result.eigenvalues, torch.tensor([2.0, 1.0, 0.5, 0.25, -1.0], dtype=torch.float64))


def test_random_start_uses_only_the_given_generator():
    a = _symmetric(_clustered(100))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    runs = [lanczos(a, 2, tol=1e-3, max_iter=60,
                    generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(runs[0].eigenvalues, runs[1].eigenvalues)
    assert runs[0].num_matvecs == runs[1].num_matvecs


def test_bad_arguments_are_rejected_with_their_names():
    mv = torch.eye(4, dtype=torch.float64)
    gen = torch.Generator()
    with pytest.raises(ValueError, match="k must be"):
        lanczos(mv, 5, generator=gen)
    with pytest.raises(ValueError, match="which"):
        lanczos(mv, 1, which="SM", generator=gen)
    with pytest.raises(ValueError, match="Generator"):
        lanczos(mv, 1)
    with pytest.raises(ValueError, match="v0 must have shape"):
        lanczos(mv, 1, v0=torch.ones(3))
    with pytest.raises(ValueError, match="v0 must be a finite"):
        lanczos(mv, 1, v0=torch.zeros(4))
    with pytest.raises(ValueError, match="tol"):
        lanczos(mv, 1, tol=0.0, generator=gen)
    with pytest.raises(ValueError, match="max_iter"):
        lanczos(mv, 3, max_iter=2, generator=gen)
    with pytest.raises(ValueError, match="guard"):
        lanczos(mv, 1, generator=gen, guard=-1)
    with pytest.raises(TypeError, match="shape, dtype, device"):
        lanczos(lambda v: v, 1, generator=gen)
    with pytest.raises(ValueError, match="square"):
        lanczos(torch.ones(3, 4), 1, generator=gen)
