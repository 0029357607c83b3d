"""Diagonal statistics: probe allocation, row-norm screening and the estimates against exact references."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from phasetrain.curvature import (
    HessianOperator,
    diagonal_statistics,
    exact_diagonal,
    hutchinson_diagonal,
    rademacher,
    spread_with_stderr,
)
from phasetrain.curvature.diagonal import (
    allocate_block_probes,
    allocate_probes,
    apportion,
    counted_block_probes,
    screened_coordinates,
)
from phasetrain.curvature.hutchinson import block_probe, confined_probe


def _blocks(sizes: list[int], offs: list[float], seed: int) -> tuple[torch.Tensor, list[slice]]:
    """A symmetric block-diagonal matrix: block g has off-diagonal entries of scale offs[g]."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    a = torch.zeros(n, n, dtype=torch.float64)
    groups, start = [], 0
    for size, off in zip(sizes, offs):
        g = slice(start, start + size)
        noise = torch.randn(size, size, generator=gen, dtype=torch.float64)
        a[g, g] = off * (noise + noise.T) / 2
        groups.append(g)
        start += size
    a.diagonal().copy_(torch.rand(n, generator=gen, dtype=torch.float64))
    return a, groups


def test_apportion_keeps_the_minimum_and_the_total_and_follows_the_weights():
    assert apportion([1.0, 1.0, 1.0], 9) == [3, 3, 3]
    assert apportion([8.0, 1.0, 1.0], 20) == [16, 2, 2]
    assert apportion([4.0, 1.0], 10) == [8, 2]
    assert apportion([0.0, 0.0], 6) == [3, 3]
    counts = apportion([5.0, 0.1, 2.0, 0.0], 22)
    assert sum(counts) == 22 and min(counts) == 2 and counts[0] > counts[2] > counts[1]


def test_allocation_favours_the_noisy_group_and_falls_back_to_whole_probes_when_confining_drops_little():
    a, groups = _blocks([150, 150], [1.0, 0.01], seed=0)
    gen = torch.Generator().manual_seed(1)
    a[:150, 150:] = torch.randn(150, 150, generator=gen, dtype=torch.float64)  # couplings to drop
    a[150:, :150] = a[:150, 150:].T
    pilot = [confined_probe(a, g, gen) for g in groups]
    counts = allocate_probes(pilot, groups, 20)
    assert counts is not None and sum(counts) == 20 and counts[0] > 2 * counts[1] >= 4
    # Couplings spread evenly: confined probes drop half the noise but cover half the vector.
    b = torch.randn(300, 300, generator=gen, dtype=torch.float64)
    b = b + b.T
    pilot = [confined_probe(b, g, gen) for g in groups[:1]]
    pilot.append(confined_probe(b, slice(150, 300), gen))
    assert allocate_probes(pilot, groups, 20) is None


def test_counts_and_pilot_give_exact_results_on_a_diagonal_matrix_and_unbiased_row_norms():
    d = torch.arange(1.0, 31.0, dtype=torch.float64)
    groups = [slice(0, 10), slice(10, 30)]
    gen = torch.Generator().manual_seed(0)
    pilot = [confined_probe(torch.diag(d), g, gen) for g in groups]
    est = hutchinson_diagonal(torch.diag(d), 7, gen, groups=groups, counts=[2, 5], pilot=pilot)
    torch.testing.assert_close(est.diagonal, d)
    torch.testing.assert_close(est.row_norms_sq, d * d)
    assert est.trace == pytest.approx(d.sum().item()) and est.trace_stderr < 1e-9
    # Dense blocks: row_norms_sq estimates each row's squared norm within its own group.
    a, groups = _blocks([40, 20], [0.5, 2.0], seed=3)
    a[:40, 40:] = 5.0  # couplings between the groups do not count
    a[40:, :40] = 5.0
    est = hutchinson_diagonal(a, 3000, torch.Generator().manual_seed(4), groups=groups,
                              counts=[1500, 1500])
    within = torch.cat([a[g, g].square().sum(1) for g in groups])
    assert ((est.row_norms_sq - within).abs() / within).max() < 0.15


def test_screening_takes_the_largest_rows_then_the_largest_other_estimates():
    estimate = torch.tensor([5.0, 1.0, 4.0, 0.0, 3.0], dtype=torch.float64)
    rows = torch.tensor([9.0, 0.0, 1.0, 8.0, 0.0], dtype=torch.float64)
    assert screened_coordinates(estimate, rows, 3).tolist() == [0, 3, 2]
    assert screened_coordinates(estimate, rows, 1).tolist() == [0]


def test_max_found_through_its_row_where_its_estimate_drowns_in_noise():
    # Entry 7 is the largest but sits in a heavily coupled block: its estimate's noise (~1.5)
    # dwarfs it, while its row norm stands out; whole-vector screening by estimate misses it.
    n = 3000
    gen = torch.Generator().manual_seed(0)
    diag = 0.5 * torch.rand(n, generator=gen, dtype=torch.float64)
    diag[7] = 1.0
    a = torch.diag(diag)
    a[7, 1000:2000] = a[1000:2000, 7] = 0.2 * torch.randn(1000, generator=gen, dtype=torch.float64)

    hits = [diagonal_statistics(a, torch.Generator().manual_seed(s), num_samples=12, num_exact=2).max for s in range(5)]
    assert hits == [1.0] * 5


def test_statistics_of_tiny_models_against_their_dense_hessians(problem):
    model, batch, H = problem
    d = H.diagonal()
    with HessianOperator(model, F.cross_entropy, [batch]) as op:
        n, groups = op.num_params, op.module_slices()
        runs = [diagonal_statistics(op, torch.Generator().manual_seed(s), num_samples=8, num_exact=2,
                                    groups=groups) for s in range(20)]
    assert n > 10 and all(not r.exact and r.num_matvecs == 10 for r in runs)
    assert all(r.max <= d.max().item() + 1e-12 and (d - r.max).abs().min() < 1e-9 for r in runs)  # exact entries
    z = torch.tensor([(r.mean - d.mean().item()) / max(r.mean_stderr, 1e-12) for r in runs])
    assert z.abs().max() < 5 and z.abs().median() < 2  # unbiased, with honest standard errors


def test_block_products_equal_the_dense_hessians_diagonal_blocks(problem):
    model, batch, H = problem
    with HessianOperator(model, F.cross_entropy, [batch]) as op:
        groups = op.module_slices() + op.layer_slices() + [slice(0, op.num_params)]
        for g in groups:
            v = torch.randn(g.stop - g.start, generator=torch.Generator().manual_seed(g.start), dtype=torch.float64)
            torch.testing.assert_close(op.block_matvec(g, v), H[g, g] @ v, rtol=1e-10, atol=1e-12)
        with pytest.raises(ValueError, match="whole parameter tensors"):
            op.block_matvec(slice(1, 3), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="closed"):
        op.block_matvec(groups[0], torch.zeros(groups[0].stop, dtype=torch.float64))


def test_block_allocation_buys_more_probes_where_they_are_cheap_within_the_budget():
    a, groups = _blocks([100, 100], [1.0, 1.0], seed=3)
    gen = torch.Generator().manual_seed(0)
    pilot = [block_probe(a, g, gen) for g in groups]
    equal = allocate_block_probes(pilot, groups, 20, [1.0, 1.0])
    assert sum(equal) == 20 and abs(equal[0] - equal[1]) <= 2
    cheap = allocate_block_probes(pilot, groups, 20, [1.0, 0.01])
    assert cheap[1] > 5 * cheap[0]  # 1/sqrt(c) for the trace, c^(-1/3) for the spread: ~7x
    spent = (cheap[0] - 1) * 1.0 + (cheap[1] - 1) * 0.01
    assert abs(spent - (20 * 1.0 - 1.01)) <= 1.0  # the budget: 20 products of the dearest block


def test_block_probe_costs_count_the_larger_products_as_dearer():
    big, small = slice(0, 400), slice(400, 410)
    a = torch.randn(410, 410, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    class Blocks:  # block products as matrix products on a batch, as in a network's H v
        shape, dtype, device = (410, 410), torch.float64, torch.device("cpu")

        def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
            return a @ v

        def block_matvec(self, g: slice, v: torch.Tensor) -> torch.Tensor:
            return (a[g, g] @ v.expand(256, -1).T).mean(1)

    _, costs = counted_block_probes(Blocks(), [big, small], torch.Generator())
    assert costs[0] > 20 * costs[1]  # 2 * 400^2 * 256 multiply-adds against 2 * 10^2 * 256
    assert costs[1] > 1e6  # every dispatched operation costs its fixed overhead


def test_block_statistics_are_exact_on_a_diagonal_matrix_and_unbiased_on_tiny_models(problem):
    d = torch.linspace(-1.0, 3.0, 60, dtype=torch.float64)
    groups = [slice(0, 20), slice(20, 45), slice(45, 60)]
    stats = diagonal_statistics(torch.diag(d), torch.Generator().manual_seed(0), num_samples=12, num_exact=2,
                                groups=groups, block_products=True)
    assert stats.grouped and not stats.exact
    assert (stats.mean, stats.std, stats.max) == pytest.approx((d.mean().item(), d.std(correction=0).item(), 3.0))
    model, batch, H = problem
    exact = H.diagonal()
    with HessianOperator(model, F.cross_entropy, [batch]) as op:
        runs = [diagonal_statistics(op, torch.Generator().manual_seed(s), num_samples=8,
                                    num_exact=2, groups=op.module_slices(), block_products=True) for s in range(20)]
    assert all(r.max <= exact.max().item() + 1e-12 and (exact - r.max).abs().min() < 1e-9 for r in runs)
    z = torch.tensor([(r.mean - exact.mean().item()) / max(r.mean_stderr, 1e-12) for r in runs])
    assert z.abs().max() < 5 and z.abs().median() < 2


def test_std_standard_error_is_the_delete_a_batch_jackknife_over_the_probes():
    a = torch.randn(40, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = (a + a.T) / 2 + torch.diag(torch.linspace(0, 3, 40, dtype=torch.float64))
    est = hutchinson_diagonal(a, 20, torch.Generator().manual_seed(1), num_batches=8)
    replay = torch.Generator().manual_seed(1)
    x = []
    for _ in range(20):
        z = rademacher(40, replay, torch.float64)
        x.append(z * (a @ z))
    x = torch.stack(x)

    def std_of(rows: torch.Tensor) -> float:  # the module's definition: var(d) - mean(stderr^2), clipped
        d, noise = rows.mean(0), rows.var(0) / rows.shape[0]
        return float((d.var(correction=0) - noise.mean()).clamp_min(0).sqrt())

    left_out = torch.tensor([std_of(x[[p for p in range(20) if p % 8 != b]]) for b in range(8)])
    jackknife = (7 / 8 * (left_out - left_out.mean()).square().sum()).sqrt().item()
    std, stderr = spread_with_stderr(est)
    assert std == pytest.approx(std_of(x), rel=1e-10)
    assert stderr == pytest.approx(jackknife, rel=1e-6) and stderr > 0


def test_std_standard_error_is_calibrated_against_the_exact_diagonal_over_seeds():
    # Small MLPs, many seeds: the std's error should fall within 2 standard errors in most seeds
    # (~95% for a normal estimate; the jackknife's few degrees of freedom cost some) and within 1
    # in not much more than ~68% (standard errors that are merely huge would pass the first test).
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    gen = torch.Generator().manual_seed(1)
    batch = (torch.randn(64, 8, generator=gen, dtype=torch.float64), torch.randint(0, 4, (64,), generator=gen))
    with HessianOperator(model, F.cross_entropy, [batch]) as op:
        true = exact_diagonal(op).std(correction=0).item()
        runs = [diagonal_statistics(op, torch.Generator().manual_seed(s), groups=op.module_slices(),
                                    block_products=True)
                for s in range(60)]
    z = torch.tensor([(r.std - true) / r.std_stderr for r in runs])
    assert (z.abs() <= 2).float().mean() >= 0.8
    assert (z.abs() <= 1).float().mean() <= 0.85
    assert abs(z.mean()) < 0.5  # no systematic bias beyond half a standard error
