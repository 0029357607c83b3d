import pytest
import torch
from torch import nn
from torch.nn import functional as F

from phasetrain.curvature import (
    HessianOperator,
    diagonal_entries,
    diagonal_statistics,
    exact_diagonal,
    hutchinson_diagonal,
    hutchinson_trace,
    merge_groups,
    rademacher,
)


def _sym(n: int, seed: int, diag: torch.Tensor, off: float) -> torch.Tensor:
    noise = torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    a = off * (noise + noise.T) / 2
    a.diagonal().copy_(diag)
    return a


def test_rademacher_probes_are_signs_drawn_from_the_generator():
    z1 = rademacher(1000, torch.Generator().manual_seed(0), torch.float64)
    z2 = rademacher(1000, torch.Generator().manual_seed(0), torch.float64)
    assert torch.equal(z1, z2) and set(z1.unique().tolist()) == {-1.0, 1.0}
    assert abs(z1.mean().item()) < 0.1


def test_hessian_diagonal_and_trace_within_a_few_standard_errors_of_exact(problem):
    model, batch, H = problem
    with HessianOperator(model, F.cross_entropy, [batch]) as op:
        est = hutchinson_diagonal(op, 100, torch.Generator().manual_seed(0), slices=op.layer_slices())
    exact = H.diagonal()
    z = (est.diagonal - exact).abs() / est.stderr.clamp_min(1e-12)
    assert (z < 4).float().mean() > 0.97
    assert abs(est.trace - exact.sum().item()) < 4 * est.trace_stderr
    assert sum(est.block_traces) == pytest.approx(est.trace)
    for b, s in enumerate(op.layer_slices()):
        assert abs(est.block_traces[b] - exact[s].sum().item()) < 4 * est.block_trace_stderrs[b] + 1e-12


def test_trace_estimate_within_a_few_standard_errors_and_exact_for_a_diagonal_matrix(problem):
    model, batch, H = problem
    with HessianOperator(model, F.cross_entropy, [batch]) as op:
        trace, se = hutchinson_trace(op, 100, torch.Generator().manual_seed(1))
    assert abs(trace - H.trace().item()) < 4 * se
    d = torch.arange(1.0, 11.0, dtype=torch.float64)
    trace, se = hutchinson_trace(torch.diag(d), 5, torch.Generator().manual_seed(0))
    assert trace == pytest.approx(55.0) and se == pytest.approx(0.0, abs=1e-12)


def test_exact_diagonal_and_selected_entries_match_dense(problem):
    model, batch, H = problem
    with HessianOperator(model, F.cross_entropy, [batch]) as op:
        torch.testing.assert_close(exact_diagonal(op), H.diagonal())
        torch.testing.assert_close(
            diagonal_entries(op, [3, 0, 5]), H.diagonal()[[3, 0, 5]]
        )


def test_small_operator_statistics_are_exact(problem):
    model, batch, H = problem
    d = H.diagonal()
    with HessianOperator(model, F.cross_entropy, [batch]) as op:
        stats = diagonal_statistics(op, torch.Generator(), num_samples=100,
                                    num_exact=100, slices=op.layer_slices())
        layers = [d[s].mean().item() for s in op.layer_slices()]
    assert stats.exact and stats.num_matvecs == d.numel()
    assert stats.mean == pytest.approx(d.mean().item())
    assert stats.std == pytest.approx(d.std(correction=0).item())
    assert stats.max == pytest.approx(d.max().item())
    assert stats.layer_means == pytest.approx(layers)


def test_grouped_probes_remove_the_noise_of_couplings_between_groups():
    # Two groups, diagonal within each, strongly coupled across: one probe per group at a time
    # sees only its group's diagonal block, so the estimate is exact; whole-vector probes are not.
    gen = torch.Generator().manual_seed(0)
    diag = torch.rand(300, generator=gen, dtype=torch.float64)
    a = torch.diag(diag)
    a[:100, 100:] = torch.randn(100, 200, generator=gen, dtype=torch.float64)
    a[100:, :100] = a[:100, 100:].T
    groups = [slice(0, 100), slice(100, 300)]
    grouped = hutchinson_diagonal(a, 6, torch.Generator().manual_seed(1), groups=groups,
                                  slices=groups)
    plain = hutchinson_diagonal(a, 6, torch.Generator().manual_seed(1))
    torch.testing.assert_close(grouped.diagonal, diag)
    assert grouped.trace == pytest.approx(diag.sum().item()) and grouped.trace_stderr < 1e-9
    assert grouped.block_traces == pytest.approx([diag[:100].sum().item(), diag[100:].sum().item()])
    assert (plain.diagonal - diag).abs().mean() > 1.0 and plain.trace_stderr > 10


def _coupled(within: float, across: float) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    noise = torch.randn(400, 400, generator=gen, dtype=torch.float64)
    mask = torch.zeros(400, 400, dtype=torch.float64)
    mask[:200, :200] = mask[200:, 200:] = 1
    a = (within * mask + across * (1 - mask)) * (noise + noise.T) / 2
    diag = torch.rand(400, generator=gen, dtype=torch.float64)
    a.diagonal().copy_(diag)
    return a, diag


@pytest.mark.parametrize("within, across, grouped", [(0.0, 1.0, True), (1.0, 0.0, False)])
def test_statistics_confine_probes_to_groups_only_where_the_pilot_says_it_pays(within, across, grouped):
    a, diag = _coupled(within, across)
    stats = diagonal_statistics(a, torch.Generator().manual_seed(3), num_samples=24,
                                num_exact=4, groups=[slice(0, 200), slice(200, 400)])
    assert stats.grouped is grouped and stats.num_matvecs == 28
    if grouped:  # diagonal within groups: confined probes see no noise at all
        assert stats.mean == pytest.approx(diag.mean().item()) and stats.mean_stderr < 1e-12
    else:
        assert abs(stats.mean - diag.mean().item()) < 4 * stats.mean_stderr


def test_module_slices_put_a_layers_weight_and_bias_together():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2, bias=False), nn.LayerNorm(2))
    with HessianOperator(model, F.cross_entropy, [(torch.randn(5, 3), torch.randint(0, 2, (5,)))]) as op:
        assert op.module_slices() == [slice(0, 16), slice(16, 24), slice(24, 28)]


def test_merge_groups_keeps_them_contiguous_and_at_most_the_limit():
    groups = [slice(0, 10), slice(10, 12), slice(12, 40), slice(40, 41), slice(41, 80)]
    assert merge_groups(groups, 8) == groups
    assert merge_groups(groups, 2) == [slice(0, 40), slice(40, 80)]
    assert merge_groups(groups, 1) == [slice(0, 80)]


def test_debiased_std_recovers_the_spread_that_the_raw_estimate_overstates():
    n = 2000
    gen = torch.Generator().manual_seed(3)
    diag = 1.0 + 0.5 * torch.randn(n, generator=gen, dtype=torch.float64)
    a = _sym(n, 4, diag, off=0.08)
    stats = diagonal_statistics(a, torch.Generator().manual_seed(5), num_samples=24,
                                num_exact=8)
    raw = hutchinson_diagonal(a, 24, torch.Generator().manual_seed(5))
    true_std = diag.std(correction=0).item()
    assert not stats.exact and stats.num_matvecs == 32
    assert raw.diagonal.std().item() > 1.3 * true_std  # the probe noise inflates the raw spread
    assert stats.std == pytest.approx(true_std, rel=0.1)
    assert abs(stats.mean - diag.mean().item()) < 4 * stats.mean_stderr


def test_max_is_an_exact_entry_found_by_screening():
    n = 2000
    gen = torch.Generator().manual_seed(6)
    diag = 0.1 * torch.rand(n, generator=gen, dtype=torch.float64)
    diag[1234] = 1.0
    a = _sym(n, 7, diag, off=0.005)
    stats = diagonal_statistics(a, torch.Generator().manual_seed(8), num_samples=24,
                                num_exact=4)
    raw = hutchinson_diagonal(a, 24, torch.Generator().manual_seed(8))
    assert stats.max == 1.0  # exact entry, not an estimate
    assert raw.diagonal.max().item() != pytest.approx(1.0, abs=1e-3)


def test_bad_arguments_are_rejected_with_their_names():
    mv = torch.eye(4)
    with pytest.raises(ValueError, match="num_samples"):
        hutchinson_diagonal(mv, 1, torch.Generator())
    with pytest.raises(TypeError, match="generator"):
        hutchinson_trace(mv, 10, None)
    with pytest.raises(ValueError, match="square"):
        hutchinson_trace(torch.ones(0, 0), 10, torch.Generator())
    with pytest.raises(ValueError, match="num_exact"):
        diagonal_statistics(mv, torch.Generator(), num_exact=0)
    with pytest.raises(ValueError, match="num_samples"):
        diagonal_statistics(mv, torch.Generator(), num_samples=1)
    with pytest.raises(ValueError, match="groups must be contiguous"):
        hutchinson_diagonal(mv, 4, torch.Generator(), groups=[slice(0, 2), slice(3, 4)])
    with pytest.raises(ValueError, match="groups must be contiguous"):
        diagonal_statistics(torch.eye(100), torch.Generator(), groups=[slice(0, 50), slice(40, 100)])
    with pytest.raises(ValueError, match="2 per group"):
        hutchinson_diagonal(mv, 3, torch.Generator(), groups=[slice(0, 2), slice(2, 4)])
    with pytest.raises(ValueError, match="num_batches"):
        hutchinson_diagonal(mv, 4, torch.Generator(), num_batches=1)
