import gc
import math
import random
import weakref

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian
from torch.nn import functional as F

from phasetrain.monitors.base import StepContext
from phasetrain.monitors.hessian import HessianMonitor, eos_ratio


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Dropout(0.3), nn.Linear(8, 3)).double()


def _batch(seed: int, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=gen, dtype=torch.float64), torch.randint(0, 3, (n,), generator=gen)


def _ctx(model, batch, optimizer=None, step=1, loss_fn=F.cross_entropy) -> StepContext:
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=0.1)
    return StepContext(model, loss_fn, optimizer, step, 0, batch, torch.device("cpu"))


def _dense_eigenvalues(model: nn.Module, batches) -> torch.Tensor:
    """Eigenvalues (descending) of the dense eval-mode Hessian of the size-weighted mean loss."""
    was = model.training
    model.eval()
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach() for p in model.parameters()]
    shapes, sizes = [p.shape for p in params], [p.numel() for p in params]
    total = sum(len(y) for _, y in batches)

    def loss_of(flat):
        values = dict(zip(names, [t.view(s) for t, s in zip(flat.split(sizes), shapes)]))
        return sum(F.cross_entropy(functional_call(model, values, (x,)), y) * len(y) / total for x, y in batches)

    H = hessian(loss_of)(torch.cat([p.reshape(-1) for p in params]))
    model.train(was)
    return torch.linalg.eigvalsh(H).flip(0)


def test_eigenvalues_match_the_dense_hessian_on_the_first_batch_and_stay_on_it():
    model = _model()
    model.train()
    first, other = _batch(1), _batch(2)
    monitor = HessianMonitor("eigenvalues", freq=5, k=3, tol=1e-8, max_iter=200)
    out1 = monitor.compute(_ctx(model, first))
    first[0].add_(100.0)  # the monitor holds its own copy
    out2 = monitor.compute(_ctx(model, other, step=10))
    exact = _dense_eigenvalues(model, [_batch(1)])[:3]
    got = torch.tensor([out1[f"hessian_eig_{i}"] for i in (1, 2, 3)], dtype=torch.float64)
    torch.testing.assert_close(got, exact, rtol=1e-5, atol=1e-9)
    assert out2["hessian_eig_1"] == pytest.approx(out1["hessian_eig_1"], rel=1e-6)


def test_user_batches_are_averaged_weighted_by_size():
    model = _model()
    batches = [_batch(3, 5), _batch(4, 11)]
    monitor = HessianMonitor("eigenvalues", k=1, batches=batches, tol=1e-8, max_iter=200)
    out = monitor.compute(_ctx(model, _batch(9)))
    assert out["hessian_eig_1"] == pytest.approx(_dense_eigenvalues(model, batches)[0].item(), rel=1e-5)


def test_diagonal_method_records_its_names_and_matches_the_exact_diagonal_when_small():
    model = _model()
    monitor = HessianMonitor("diagonal", num_samples=100, num_exact=100)  # 75 params: exact path
    out = monitor.compute(_ctx(model, _batch(1)))
    assert set(out) == {"hessian_diag_mean", "hessian_diag_mean_stderr", "hessian_diag_std",
                        "hessian_diag_std_stderr", "hessian_diag_max", "hessian_trace"}
    model.eval()
    x, y = _batch(1)
    params = list(model.parameters())
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])
    diag = torch.stack([torch.cat([h.reshape(-1) for h in torch.autograd.grad(flat[i], params, retain_graph=True)])[i]
                        for i in range(flat.numel())])
    assert out["hessian_diag_mean"] == pytest.approx(diag.mean().item())
    assert out["hessian_diag_std"] == pytest.approx(diag.std(correction=0).item())
    assert out["hessian_diag_max"] == pytest.approx(diag.max().item())
    assert out["hessian_trace"] == pytest.approx(diag.sum().item())
    assert out["hessian_diag_mean_stderr"] == 0.0 and out["hessian_diag_std_stderr"] == 0.0


def test_eos_ratio_for_sgd_plain_and_heavy_ball_only():
    params = [nn.Parameter(torch.zeros(1))]
    assert eos_ratio(40.0, torch.optim.SGD(params, lr=0.05)) == pytest.approx(1.0)
    assert eos_ratio(40.0, torch.optim.SGD(params, lr=0.05, momentum=0.9)) == pytest.approx(40 * 0.05 / 3.8)
    assert eos_ratio(40.0, torch.optim.SGD(params, lr=0.05, momentum=0.9, dampening=0.5)) == pytest.approx(
        40 * 0.025 / 3.8)
    assert eos_ratio(40.0, torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True)) is None
    assert eos_ratio(40.0, torch.optim.Adam(params, lr=0.05)) is None
    model = _model()
    out = HessianMonitor("eigenvalues", k=2).compute(_ctx(model, _batch(1),
                                                          torch.optim.SGD(model.parameters(), lr=0.2)))
    assert out["hessian_eos_ratio"] == pytest.approx(out["hessian_eig_1"] * 0.1)
    out = HessianMonitor("eigenvalues", k=2).compute(_ctx(model, _batch(1), torch.optim.Adam(model.parameters())))
    assert set(out) == {"hessian_eig_1", "hessian_eig_2"}


def test_module_modes_are_restored_module_by_module():
    model = _model()
    model.train()
    model[3].eval()  # dropout alone in eval mode
    for method in ("diagonal", "eigenvalues"):
        HessianMonitor(method, k=1).compute(_ctx(model, _batch(1)))
        assert [m.training for m in model] == [True, True, True, False, True]


def _train(with_monitor: bool, method: str) -> list[torch.Tensor]:
    torch.manual_seed(11)
    np.random.seed(11)
    random.seed(11)
    model = _model(seed=5)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    monitor = HessianMonitor(method, freq=2, k=2)
    for step in range(1, 7):
        batch = _batch(100 + step)
        optimizer.zero_grad()
        F.cross_entropy(model(batch[0]), batch[1]).backward()
        if with_monitor and monitor.should_run(step):
            grads = [p.grad.clone() for p in model.parameters()]
            monitor.compute(_ctx(model, batch, optimizer, step))
            assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))
        optimizer.step()
    return [*model.state_dict().values(), torch.rand(3), torch.tensor(np.random.rand(3)), torch.tensor(random.random())]


@pytest.mark.parametrize("method", ["diagonal", "eigenvalues"])
def test_training_with_the_monitor_matches_training_without(method):
    # Dropout consumes the global RNG, batch norm updates running stats: any leak would show here.
    for a, b in zip(_train(False, method), _train(True, method)):
        assert torch.equal(a, b)


def test_no_autograd_graph_outlives_a_measurement():
    model = _model()
    losses = []

    def loss_fn(out, y):
        loss = F.cross_entropy(out, y)
        losses.append(weakref.ref(loss))
        return loss

    monitor = HessianMonitor("eigenvalues", k=2)
    for step in (1, 2, 3):
        monitor.compute(_ctx(model, _batch(1), step=step, loss_fn=loss_fn))
    gc.collect()
    assert len(losses) == 3 and all(ref() is None for ref in losses)
    assert all(not t.requires_grad for t in monitor.state_dict()["vectors"].reshape(1, -1))


@pytest.mark.parametrize("method", ["diagonal", "eigenvalues"])
def test_state_dict_round_trip_resumes_exactly(tmp_path, method):
    model = _model()
    kwargs = {"k": 2, "num_samples": 10, "num_exact": 4, "seed": 3}
    original = HessianMonitor(method, **kwargs)
    original.compute(_ctx(model, _batch(1)))
    torch.save(original.state_dict(), tmp_path / "state.pt")
    resumed = HessianMonitor(method, **kwargs)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    with torch.no_grad():
        model[0].weight.mul_(1.1)
    # The resumed monitor keeps the original batch, not the one it is handed now.
    assert resumed.compute(_ctx(model, _batch(7), step=2)) == original.compute(_ctx(model, _batch(8), step=2))


def test_non_finite_loss_gives_nan_values():
    model = _model()
    x, y = _batch(1)
    x[0, 0] = float("nan")
    out = HessianMonitor("eigenvalues", k=2).compute(_ctx(model, (x, y)))
    assert set(out) == {"hessian_eig_1", "hessian_eig_2", "hessian_eos_ratio"}
    assert all(math.isnan(v) for v in out.values())


def test_bad_arguments_are_rejected_with_their_names():
    with pytest.raises(ValueError, match="method"):
        HessianMonitor("trace")
    with pytest.raises(ValueError, match="freq"):
        HessianMonitor(freq=0)
    with pytest.raises(ValueError, match="k must"):
        HessianMonitor(k=0)
    with pytest.raises(ValueError, match="tol"):
        HessianMonitor(tol=-1.0)
    with pytest.raises(ValueError, match="batches"):
        HessianMonitor(batches=[torch.zeros(3)])
    with pytest.raises(TypeError, match="seed"):
        HessianMonitor(seed=1.5)
    with pytest.raises(ValueError, match="k=3 exceeds"):
        HessianMonitor("eigenvalues", k=3).compute(_ctx(nn.Linear(1, 1).double(),
                                                        (torch.ones(2, 1, dtype=torch.float64),
                                                         torch.ones(2, 1, dtype=torch.float64)),
                                                        loss_fn=F.mse_loss))


def test_later_measurements_warm_start_lobpcg_from_the_kept_vectors(monkeypatch):
    import phasetrain.monitors.hessian as hessian_module

    cold_calls = []
    original = hessian_module.lanczos
    monkeypatch.setattr(hessian_module, "lanczos", lambda *a, **kw: cold_calls.append(1) or original(*a, **kw))
    model = _model()
    batch = _batch(1)
    n = sum(p.numel() for p in model.parameters())
    monitor = HessianMonitor("eigenvalues", k=3, tol=1e-9, max_iter=n)
    monitor.compute(_ctx(model, batch))
    assert monitor.vectors.shape == (n, 4)  # k + 1 guard vector kept
    for scale in (1.02, 1.04):
        with torch.no_grad():
            model[0].weight.mul_(scale)
        out = monitor.compute(_ctx(model, _batch(2), step=2))
        exact = _dense_eigenvalues(model, [batch])[:3]
        got = torch.tensor([out[f"hessian_eig_{i}"] for i in (1, 2, 3)], dtype=torch.float64)
        torch.testing.assert_close(got, exact, rtol=1e-6, atol=1e-10)
    assert len(cold_calls) == 1  # only the first measurement was cold


def _budget_run(moving: bool, steps: int = 2000) -> tuple[list[int], HessianMonitor]:
    """A monitor with a 5% budget asked at every step of a fake clock: a training step takes 1 s,
    a measurement 10 s (its one loss on the curvature batch), as long as the monitor expects of a
    first diagonal with 8 + 2 probes. The watched metrics move throughout, or never."""
    clock = [0.0]

    def loss_fn(out, y):
        clock[0] += 10.0
        return F.cross_entropy(out, y)

    model, batch = _model(), _batch(1)
    monitor = HessianMonitor("diagonal", freq=2, budget=0.05, num_samples=8, num_exact=2, clock=lambda: clock[0])
    measured = []
    for step in range(1, steps + 1):
        clock[0] += 1.0
        monitor.note_movement(moving)
        if monitor.should_run(step):
            monitor.compute(_ctx(model, batch, step=step, loss_fn=loss_fn))
            measured.append(step)
            share = 1.0 if moving or len(measured) == 1 else 0.5
            assert monitor.schedule.spent_s <= share * 0.05 * monitor.schedule.trained_s  # by its own accounts
    return measured, monitor


def test_a_time_budget_waits_for_the_first_measurement_then_spends_what_it_earned():
    measured, monitor = _budget_run(moving=True)
    # The first diagonal is expected to cost 8 + 2 steps: 5% of 200 steps pays for it.
    assert measured == list(range(201, 2001, 200))  # and each later one, 10 s, too
    assert monitor.schedule.overhead() == pytest.approx(9 * 10 / 1999)
    assert monitor.schedule.trained_s == 2000 - 1  # the measurements are not training time


def test_a_time_budget_measures_denser_while_the_watched_metrics_move():
    moving, _ = _budget_run(moving=True)
    still, monitor = _budget_run(moving=False)
    # The first as soon as it is paid for; then, on a plateau, at most half of what was earned.
    assert still == [201, 801, 1201, 1601] and len(moving) == 9
    assert monitor.schedule.overhead() <= 0.025


def test_the_time_budget_keeps_its_balance_across_a_resume_and_hessian_freq_alone_is_every_freq_steps():
    measured, monitor = _budget_run(moving=True, steps=600)
    state = monitor.state_dict()["budget"]
    resumed = HessianMonitor("diagonal", freq=2, budget=0.05, num_samples=8, num_exact=2, clock=lambda: 0.0)
    resumed.load_state_dict(monitor.state_dict())
    assert resumed.schedule.state_dict() == state and state["last_step"] == measured[-1]
    plain = HessianMonitor("diagonal", freq=7)
    plain.note_movement(True)
    assert [s for s in range(1, 30) if plain.should_run(s)] == [7, 14, 21, 28]


def test_a_time_budget_must_be_a_fraction():
    with pytest.raises(ValueError, match="budget"):
        HessianMonitor(budget=1.5)
