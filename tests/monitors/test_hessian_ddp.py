"""Every rank measures: two gloo processes on CPU, each with its share of the curvature batch, give
the single-process numbers of the whole batch, identical on both ranks."""
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn import functional as F

from phasetrain.monitors.base import StepContext
from phasetrain.monitors.hessian import HessianMonitor


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _batches() -> list:
    gen = torch.Generator().manual_seed(1)  # 17 and 6 samples: uneven shares (9 + 8, 3 + 3)
    return [(torch.randn(n, 5, generator=gen, dtype=torch.float64), torch.randint(0, 3, (n,), generator=gen))
            for n in (17, 6)]


def _measure(rank: int | None = None) -> dict[str, float]:
    """Eigenvalues twice (cold, then warm after the weights move) and the diagonal statistics on the
    given batches; and eigenvalues on the default batch: on rank r its own first batch, _batches()[r]
    (in one process, both)."""
    model = _model()
    own = _batches()[rank or 0]
    ctx = StepContext(model, F.cross_entropy, torch.optim.SGD(model.parameters(), lr=0.1), 1, 0, own,
                      torch.device("cpu"))
    default = HessianMonitor("eigenvalues", k=2, tol=1e-9, max_iter=75,
                             batches=None if rank is not None else _batches())
    out = {f"default_{k}": v for k, v in default.compute(ctx).items()}
    out["default_saved_samples"] = float(sum(len(y) for _, y in default.state_dict()["batches"]))  # the union: 23
    eig = HessianMonitor("eigenvalues", k=3, tol=1e-9, max_iter=75, batches=_batches())
    out.update({f"cold_{k}": v for k, v in eig.compute(ctx).items()})
    with torch.no_grad():
        model[0].weight.mul_(1.05)
    out.update({f"warm_{k}": v for k, v in eig.compute(ctx).items()})
    out.update(HessianMonitor("diagonal", num_samples=12, num_exact=3, batches=_batches(), seed=4).compute(ctx))
    return out


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.save(_measure(rank), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
    # gloo's threads can still be winding down when the interpreter tears down its C++ objects, which
    # then aborts ("terminate called without an active exception", about 1 run in 20 on a 2-core
    # machine); the results are written, so the process leaves without that teardown
    os._exit(0)


def test_two_ranks_give_the_single_process_numbers(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    single = _measure()
    assert ranks[0] == ranks[1]  # bit for bit: same products, same random probes, same decisions
    assert set(ranks[0]) == set(single) and {"hessian_trace", "warm_hessian_eig_3",
                                             "default_hessian_eig_2"} <= set(single)
    for name, value in single.items():
        assert abs(ranks[0][name] - value) <= 1e-5 * abs(value) + 1e-12, name
