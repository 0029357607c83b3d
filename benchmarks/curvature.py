"""Curvature cost and accuracy: phasetrain against PyHessian, curvlinops, BackPACK and torch.func.

Models: an MLP 784-H-H-10 (tanh, H=256 by default) and a small CNN (1x28x28 -> conv16 -> pool ->
conv32 -> pool -> 10), random inputs and random labels, cross-entropy; plus a small MLP
64-32-32-10 whose exact diagonal is computed with one HVP per coordinate. All timings are in
*gradient steps* (forward + loss + backward on the same batch), measured in the same run, so they
compare across machines; wall seconds are in the JSON.

- HVP: the cost of one Hessian-vector product per backend (phasetrain reuses the first-order
  graph across the products of a computation; the one-off graph build is listed separately).
- Eigenvalues: true relative error against a tightly converged float64 reference (phasetrain's
  Lanczos, tol=1e-9), worst over the seeds and the k values; cost median over the seeds.
  phasetrain's tol bounds the relative eigenvalue error: residual ||H y - theta y|| <= tol * |theta|.
  PyHessian: power iteration with deflation, its default tol=1e-3 (change between iterations).
  curvlinops: its Hessian operator in scipy's ARPACK eigsh (which="LA", tol=1e-4).
- Warm starts (MLP): measurements 100 full-batch SGD steps apart (lr 0.05, 12 of them), each
  started as HessianMonitor starts it: the first by Lanczos from a random vector, every later one
  by LOBPCG from the previous k eigenvectors and one guard vector mixed with noise, or by Lanczos
  again where that start has gone stale (`top_eigenpairs`). HVPs,
  gradient steps (graph build included) and the true error against a float64 Lanczos reference
  (tol 1e-9) at every measurement; a cold Lanczos on the same weights for comparison.
- Diagonal statistics (mean, std, max): relative error against the exact diagonal (BackPACK's
  DiagHessian, checked against HVP entries, or one HVP per coordinate on the small MLP).

Run: python benchmarks/curvature.py [--small] [--hidden H] [--batch B] [--seeds S] [--threads T] [--warm-only]
Writes a table to stdout and benchmarks/results/curvature.json (`--warm-only`: only the warm-start
rows, merged into the existing JSON).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from phasetrain.curvature import (
    HessianOperator,
    diagonal_statistics,
    exact_diagonal,
    lanczos,
)
from phasetrain.monitors.hessian import top_eigenpairs

RESULTS = Path(__file__).resolve().parent / "results" / "curvature.json"


def build_mlp(hidden: int, inputs: int = 784) -> nn.Module:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                         nn.Linear(hidden, 10))


def build_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 5 * 5, 10))


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class StepClock:
    """Times work in gradient steps of `model` on (x, y), measured next to the work itself.

    The machine is shared, so its speed drifts: every measurement is divided by gradient steps
    timed immediately before and after it (interleaved, per call, for the per-HVP ratios).
    """

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, repeats: int) -> None:
        self.model, self.x, self.y, self.repeats = model, x, y, repeats
        self.seconds = median_seconds(self.step, repeats)

    def step(self) -> None:
        self.model.zero_grad(set_to_none=True)
        F.cross_entropy(self.model(self.x), self.y).backward()
        self.model.zero_grad(set_to_none=True)

    def _step_seconds(self) -> float:
        return median_seconds(self.step, 3)

    def measure(self, fn: Callable[[], object]) -> tuple[object, float, float]:
        """(fn(), cost in gradient steps, wall seconds)."""
        before = self._step_seconds()
        start = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - start
        return out, seconds / ((before + self._step_seconds()) / 2), seconds

    def ratio(self, fn: Callable[[], object]) -> float:
        """Median over `repeats` of (time of fn) / (time of the gradient step just before it)."""
        fn()
        ratios = []
        for _ in range(self.repeats):
            start = time.perf_counter()
            self.step()
            middle = time.perf_counter()
            fn()
            ratios.append((time.perf_counter() - middle) / (middle - start))
        return statistics.median(ratios)


class Counter:
    """Wraps a matvec and counts its calls."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, v: Tensor) -> Tensor:
        self.calls += 1
        return self.fn(v)


class CountingOperator(Counter):
    """A counted matvec as an operator for phasetrain.curvature (shape, dtype, device, @)."""

    def __init__(self, fn: Callable[[Tensor], Tensor], n: int) -> None:
        super().__init__(fn)
        self.shape, self.dtype, self.device = (n, n), torch.float32, torch.device("cpu")

    __matmul__ = Counter.__call__


def flat_split(model: nn.Module, v: Tensor) -> list[Tensor]:
    params = list(model.parameters())
    return [t.view_as(p) for t, p in zip(v.split([p.numel() for p in params]), params)]


# ---------------------------------------------------------------- HVP backends
def hvp_torch_func(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[Tensor], Tensor]:
    from torch.func import functional_call, grad, jvp

    names = [n for n, _ in model.named_parameters()]
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss_of(p: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(functional_call(model, p, (x,)), y)

    def matvec(v: Tensor) -> Tensor:
        tangents = dict(zip(names, flat_split(model, v)))
        _, out = jvp(grad(loss_of), (params,), (tangents,))
        return torch.cat([out[n].reshape(-1) for n in names])

    return matvec


def hvp_curvlinops(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[Tensor], Tensor]:
    from curvlinops import HessianLinearOperator

    op = HessianLinearOperator(model, nn.CrossEntropyLoss(), list(model.parameters()), [(x, y)],
                               check_deterministic=False)
    return lambda v: op @ v


def hvp_backpack(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[Tensor], Tensor]:
    from backpack.hessianfree.hvp import hessian_vector_product

    params = list(model.parameters())

    def matvec(v: Tensor) -> Tensor:
        loss = F.cross_entropy(model(x), y)
        return torch.cat([h.reshape(-1) for h in hessian_vector_product(loss, params, flat_split(model, v))])

    return matvec


def hvp_costs(model: nn.Module, x: Tensor, y: Tensor, clock: StepClock) -> list[dict]:
    n = sum(p.numel() for p in model.parameters())
    v = torch.randn(n, generator=torch.Generator().manual_seed(0))
    rows = []
    op = HessianOperator(model, F.cross_entropy, [(x, y)])
    rows.append({"backend": "phasetrain (graph reused)", "steps": clock.ratio(lambda: op.matvec(v))})
    op.close()
    build = clock.ratio(lambda: HessianOperator(model, F.cross_entropy, [(x, y)]).close())
    rows.append({"backend": "phasetrain graph build (once per computation)", "steps": build})
    for name, make in (("torch.func forward-over-reverse", hvp_torch_func), ("curvlinops", hvp_curvlinops),
                       ("BackPACK hvp (recomputed)", hvp_backpack)):
        try:
            matvec = make(model, x, y)
            rows.append({"backend": name, "steps": clock.ratio(lambda matvec=matvec: matvec(v))})
        except Exception as exc:  # noqa: BLE001 - a third-party failure is a result to report, not to hide
            rows.append({"backend": name, "steps": None, "error": f"{type(exc).__name__}: {exc}"[:200]})
    return rows


# ---------------------------------------------------------------- eigenvalue solvers
def reference_eigenvalues(model: nn.Module, x: Tensor, y: Tensor, k: int) -> tuple[list[float], Tensor]:
    """Top-k eigenvalues (float64, Lanczos tol 1e-9) and the top eigenvector."""
    m64 = copy.deepcopy(model).double()
    with HessianOperator(m64, F.cross_entropy, [(x.double(), y)]) as op:
        res = lanczos(op, k, tol=1e-9, max_iter=min(600, op.num_params),
                      generator=torch.Generator().manual_seed(123), return_eigenvectors=True)
    if not res.converged:
        raise RuntimeError("reference Lanczos did not converge")
    return res.eigenvalues.tolist(), res.eigenvectors[:, 0].float()


def run_phasetrain(model, x, y, k, seed, v0=None, hvp_factory=None, tol=1e-3):
    gen = torch.Generator().manual_seed(seed)
    n = sum(p.numel() for p in model.parameters())
    if hvp_factory is None:
        with HessianOperator(model, F.cross_entropy, [(x, y)]) as op:
            counter = CountingOperator(op.matvec, n)
            res = lanczos(counter, k, tol=tol, generator=gen, v0=v0, return_eigenvectors=True)
    else:
        counter = CountingOperator(hvp_factory(model, x, y), n)
        res = lanczos(counter, k, tol=tol, generator=gen, v0=v0)
    return res.eigenvalues.tolist(), counter.calls, res


@contextlib.contextmanager
def pyhessian_counted(model: nn.Module):
    """PyHessian's module with its HVP function wrapped in a Counter; restores both after."""
    ph = importlib.import_module("pyhessian.hessian")  # the package re-exports a class of that name
    original = ph.hessian_vector_product
    counter = Counter(lambda args: original(*args))
    ph.hessian_vector_product = lambda *args: counter(args)
    try:
        yield ph, counter
    finally:
        ph.hessian_vector_product = original
        model.zero_grad(set_to_none=True)  # PyHessian leaves create_graph gradients in .grad


def run_pyhessian(model, x, y, k, seed):
    with pyhessian_counted(model) as (ph, counter):
        torch.manual_seed(seed)
        values, _ = ph.hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False).eigenvalues(top_n=k)
    return [float(v) for v in values], counter.calls


def run_curvlinops(model, x, y, k, seed):
    from scipy.sparse.linalg import LinearOperator, eigsh

    matvec = hvp_curvlinops(model, x, y)
    n = sum(p.numel() for p in model.parameters())
    counter = Counter(lambda v: matvec(torch.as_tensor(v, dtype=torch.float32).reshape(-1)).detach().numpy())
    v0 = np.random.default_rng(seed).standard_normal(n)
    values = eigsh(LinearOperator((n, n), matvec=counter, dtype=np.float32), k=k, which="LA", tol=1e-4,
                   v0=v0, return_eigenvectors=False)
    return sorted(values.tolist(), reverse=True), counter.calls


def rel_error(values: list[float], ref: list[float]) -> float:
    """Worst relative error of the returned values (sorted descending) against the reference top-k."""
    got = sorted(values, reverse=True)
    return max(abs(g - r) / abs(r) for g, r in zip(got, ref[: len(got)]))


def eigen_rows(model, x, y, clock, seeds: list[int], ks=(1, 5)) -> tuple[list[float], list[dict]]:
    ref, _ = reference_eigenvalues(model, x, y, max(ks))
    rows = []
    solvers = {
        "phasetrain Lanczos (tol 1e-3, default)": lambda k, s: run_phasetrain(model, x, y, k, s)[:2],
        "phasetrain Lanczos (tol 1e-2)": lambda k, s: run_phasetrain(model, x, y, k, s, tol=1e-2)[:2],
        "torch.func HVP + phasetrain Lanczos": lambda k, s: run_phasetrain(model, x, y, k, s,
                                                                         hvp_factory=hvp_torch_func)[:2],
        "PyHessian power iteration (tol 1e-3)": lambda k, s: run_pyhessian(model, x, y, k, s),
        "curvlinops + scipy eigsh (tol 1e-4)": lambda k, s: run_curvlinops(model, x, y, k, s),
    }
    for name, solve in solvers.items():
        for k in ks:
            runs = []
            try:
                for seed in seeds:
                    (values, hvps), steps, seconds = clock.measure(lambda solve=solve, k=k, seed=seed: solve(k, seed))
                    runs.append((steps, hvps, values, seconds))
            except Exception as exc:  # noqa: BLE001 - a solver's failure is a row of the table
                traceback.print_exc()
                rows.append({"method": name, "k": k, "error": f"{type(exc).__name__}: {exc}"[:200]})
                continue
            rows.append({
                "method": name, "k": k,
                "steps": statistics.median(r[0] for r in runs),
                "seconds": statistics.median(r[3] for r in runs),
                "hvps": statistics.median(r[1] for r in runs),
                "rel_error": max(rel_error(r[2], ref) for r in runs),
                "returned_sorted": all(r[2] == sorted(r[2], reverse=True) for r in runs),
                "values_first_seed": runs[0][2],
            })
    return ref, rows


def warm_rows(model: nn.Module, x: Tensor, y: Tensor, clock: StepClock, ks=(1, 3), measurements: int = 12,
              spacing: int = 100, lr: float = 0.05) -> list[dict]:
    """Per k: measurements `spacing` full-batch SGD steps apart, started as HessianMonitor starts
    them (`top_eigenpairs`: cold Lanczos first, then LOBPCG from the kept vectors unless stale),
    against a float64 reference and a cold Lanczos on the same weights."""
    moving = copy.deepcopy(model)
    opt = torch.optim.SGD(moving.parameters(), lr=lr)
    kept: dict[int, Tensor | None] = {k: None for k in ks}
    gens = {k: torch.Generator().manual_seed(k) for k in ks}
    runs: dict[int, list[dict]] = {k: [] for k in ks}
    for m in range(measurements + 1):
        if m:
            for _ in range(spacing):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(moving(x), y).backward()
                opt.step()
            opt.zero_grad(set_to_none=True)
        ref, _ = reference_eigenvalues(moving, x, y, max(ks))
        for k in ks:
            def measure(k: int = k):
                with HessianOperator(moving, F.cross_entropy, [(x, y)]) as op:
                    res, vectors, warm = top_eigenpairs(op, k, kept[k], gens[k], tol=1e-3, max_iter=150)
                    return res, vectors, op.num_matvecs, warm

            (res, vectors, hvps, warm), steps, seconds = clock.measure(measure)
            kept[k] = vectors
            (_, cold_hvps, _), cold_steps, _ = clock.measure(lambda k=k, m=m: run_phasetrain(moving, x, y, k, 100 + m))
            runs[k].append({"sgd_steps": m * spacing, "warm": m > 0, "lobpcg": warm, "hvps": hvps, "steps": steps,
                            "seconds": seconds,
                            "converged": res.converged, "rel_error": rel_error(res.eigenvalues.tolist(), ref),
                            "cold_hvps": cold_hvps, "cold_steps": cold_steps, "reference": ref[:k]})
            print(f"k={k} after {m * spacing} SGD steps ({'LOBPCG' if warm else 'Lanczos'}): {hvps} HVPs, "
                  f"{steps:.1f} grad steps, "
                  f"error {runs[k][-1]['rel_error']:.1e} (cold Lanczos: {cold_hvps} HVPs, {cold_steps:.1f} steps)",
                  flush=True)
    rows = []
    for k in ks:
        warm = [r for r in runs[k] if r["warm"]]
        late = warm[len(warm) // 3:]
        rows.append({
            "k": k, "spacing": spacing, "lr": lr, "measurements": runs[k],
            "warm_hvps_median": statistics.median(r["hvps"] for r in warm),
            "warm_hvps_after_first_third": [r["hvps"] for r in late],
            "warm_steps_median": statistics.median(r["steps"] for r in warm),
            "cold_hvps_median": statistics.median(r["cold_hvps"] for r in warm),
            "cold_steps_median": statistics.median(r["cold_steps"] for r in warm),
            "worst_rel_error": max(r["rel_error"] for r in runs[k]),
            "all_converged": all(r["converged"] for r in runs[k]),
        })
    return rows


# ---------------------------------------------------------------- diagonal
def backpack_diagonal(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    from backpack import backpack, extend
    from backpack.extensions import DiagHessian

    ext = extend(copy.deepcopy(model))
    loss = extend(nn.CrossEntropyLoss())(ext(x), y)
    with backpack(DiagHessian()):
        loss.backward()
    return torch.cat([p.diag_h.reshape(-1) for p in ext.parameters()]).detach()


def diagonal_rows(model, x, y, clock, seeds, exact_by: str) -> dict:
    n = sum(p.numel() for p in model.parameters())
    if exact_by == "BackPACK DiagHessian":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exact, exact_steps, _ = clock.measure(lambda: backpack_diagonal(model, x, y))
        with HessianOperator(model, F.cross_entropy, [(x, y)]) as op:
            check = torch.topk(exact, 3).indices.tolist() + [0, n // 2]
            e = torch.zeros(n)
            worst = 0.0
            for i in check:
                e[i] = 1
                worst = max(worst, abs(op.matvec(e)[i].item() - exact[i].item()) / (abs(exact[i].item()) + 1e-12))
                e[i] = 0
    else:
        with HessianOperator(model, F.cross_entropy, [(x, y)]) as op:
            exact, exact_steps, _ = clock.measure(lambda: exact_diagonal(op))
        worst = 0.0
    truth = {"mean": exact.double().mean().item(), "std": exact.double().std(correction=0).item(),
             "max": exact.max().item()}
    runs = []
    def estimate(seed: int):
        with HessianOperator(model, F.cross_entropy, [(x, y)]) as op:
            return diagonal_statistics(op, torch.Generator().manual_seed(seed), groups=op.module_slices(),
                                       block_products=True)

    for seed in seeds:
        stats, steps, _ = clock.measure(lambda seed=seed: estimate(seed))
        runs.append((steps, stats))
    errors = {key: [abs(getattr(s, key) - truth[key]) / abs(truth[key]) for _, s in runs] for key in truth}
    mean_z = [abs(s.mean - truth["mean"]) / s.mean_stderr for _, s in runs]
    std_z = [abs(s.std - truth["std"]) / s.std_stderr for _, s in runs]
    ph = pyhessian_trace(model, x, y, seeds[0], n, clock)
    return {
        "num_params": n, "exact_by": exact_by, "exact_steps": exact_steps,
        "exact_check_rel_diff": worst, "truth": truth,
        "phasetrain_steps": statistics.median(r[0] for r in runs),
        "phasetrain_hvps": runs[0][1].num_matvecs,
        "rel_error_median": {k: statistics.median(v) for k, v in errors.items()},
        "rel_error_worst": {k: max(v) for k, v in errors.items()},
        "mean_error_in_stderrs_worst": max(mean_z),
        "std_error_in_stderrs_worst": max(std_z),
        "pyhessian_trace": ph,
    }


def pyhessian_trace(model, x, y, seed, n, clock) -> dict:
    try:
        with pyhessian_counted(model) as (ph, counter):
            torch.manual_seed(seed)
            np.random.seed(seed)
            traces, steps, seconds = clock.measure(
                lambda: ph.hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False).trace())
    except Exception as exc:  # noqa: BLE001 - PyHessian missing or failing is a result to report
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}
    return {"mean": float(np.mean(traces)) / n, "steps": steps, "seconds": seconds, "hvps": counter.calls}


# ---------------------------------------------------------------- driver
def case(name, model, x, y, args, seeds, exact_by) -> dict:
    print(f"\n== {name}: {sum(p.numel() for p in model.parameters())} parameters, batch {len(y)}", flush=True)
    clock = StepClock(model, x, y, args.repeats)
    print(f"gradient step: {clock.seconds * 1e3:.2f} ms", flush=True)
    result = {"model": name, "num_params": sum(p.numel() for p in model.parameters()), "batch": len(y),
              "grad_step_seconds": clock.seconds}
    if name.startswith("MLP"):
        result["warm"] = warm_rows(model, x, y, clock, measurements=args.measurements)
        print_warm(result["warm"])
    if args.warm_only:
        return result
    result["hvp"] = hvp_costs(model, x, y, clock)
    print_table(["HVP backend", "grad steps / HVP"],
                [[r["backend"], fmt(r.get("steps"), r.get("error"))] for r in result["hvp"]])
    if exact_by != "hvp":
        ref, rows = eigen_rows(model, x, y, clock, seeds)
        result["eigen_reference"], result["eigen"] = ref, rows
        print("reference top-5 (float64): " + ", ".join(f"{v:.5g}" for v in ref))
        print_table(["eigen solver", "k", "grad steps", "HVPs", "true rel err", "sorted"],
                    [[r["method"], r["k"], fmt(r.get("steps"), r.get("error")), fmt(r.get("hvps")),
                      fmt(r.get("rel_error"), fmt_spec=".1e"), r.get("returned_sorted", "")] for r in rows])
    d = diagonal_rows(model, x, y, clock, seeds, exact_by)
    result["diagonal"] = d
    print(f"exact diagonal by {d['exact_by']}: {d['exact_steps']:.1f} grad steps "
          f"(check against HVP entries: max rel diff {d['exact_check_rel_diff']:.1e}); "
          f"phasetrain diagonal_statistics: {d['phasetrain_hvps']} products (mostly block products H_gg v), "
          f"{d['phasetrain_steps']:.1f} grad steps")
    rows = [[k, f"{d['truth'][k]:.4g}", f"{d['rel_error_median'][k]:.3f}", f"{d['rel_error_worst'][k]:.3f}"]
            for k in d["truth"]]
    ph = d["pyhessian_trace"]
    if "error" in ph:
        rows.append(["mean (PyHessian trace)", "", ph["error"], ""])
    else:
        rows.append(["mean (PyHessian trace, its defaults)", f"{ph['hvps']} HVPs, {ph['steps']:.0f} steps",
                     f"{abs(ph['mean'] - d['truth']['mean']) / abs(d['truth']['mean']):.3f}", ""])
    print_table(["diag statistic", "exact", "rel err median", "rel err worst"], rows)
    return result


def print_warm(rows: list[dict]) -> None:
    print_table(["warm start (LOBPCG), k", "HVPs median (all warm)", "HVPs after the first third", "grad steps median",
                 "cold Lanczos HVPs / steps", "worst rel err", "converged"],
                [[r["k"], r["warm_hvps_median"], r["warm_hvps_after_first_third"], f"{r['warm_steps_median']:.1f}",
                  f"{r['cold_hvps_median']} / {r['cold_steps_median']:.1f}", f"{r['worst_rel_error']:.1e}",
                  r["all_converged"]] for r in rows])


def fmt(value, error=None, fmt_spec=".1f") -> str:
    if error:
        return "FAILED: " + error
    return "" if value is None else format(value, fmt_spec)


def print_table(header: list[str], rows: list[list]) -> None:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a fast smoke run (small models, one seed)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--cnn-batch", type=int, default=256)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--measurements", type=int, default=12, help="warm-start measurements, 100 SGD steps apart")
    parser.add_argument("--warm-only", action="store_true", help="only the warm-start rows, merged into --out")
    args = parser.parse_args()
    if args.small:
        args.hidden, args.batch, args.cnn_batch, args.seeds, args.repeats = 32, 128, 64, 1, 3
    torch.set_num_threads(args.threads)
    lanczos(torch.eye(4), 1, generator=torch.Generator())  # first-call library set-up, untimed
    # The diagonal's cost-counting pilot: its first use costs ~1 s, once per process, untimed here.
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False):
        torch.ones(2, 2) @ torch.ones(2, 2)
    seeds = list(range(args.seeds))
    gen = torch.Generator().manual_seed(0)
    cases = []
    torch.manual_seed(0)
    mlp = build_mlp(args.hidden)
    cases.append(case(f"MLP 784-{args.hidden}-{args.hidden}-10 tanh", mlp, torch.randn(args.batch, 784, generator=gen),
                      torch.randint(0, 10, (args.batch,), generator=gen), args, seeds, "BackPACK DiagHessian"))
    if args.warm_only:
        saved = json.loads(args.out.read_text())
        saved["cases"][0]["warm"] = cases[0]["warm"]
        saved["cases"][0]["eigen"] = [r for r in saved["cases"][0]["eigen"] if "warm" not in r["method"]]
        saved["meta"]["warm_rows"] = {"torch": torch.__version__, "threads": args.threads}
        args.out.write_text(json.dumps(saved, indent=2))
        print(f"\nmerged the warm-start rows into {args.out}")
        return
    torch.manual_seed(0)
    cases.append(case("small CNN", build_cnn(), torch.randn(args.cnn_batch, 1, 28, 28, generator=gen),
                      torch.randint(0, 10, (args.cnn_batch,), generator=gen), args, seeds, "BackPACK DiagHessian"))
    torch.manual_seed(0)
    small = build_mlp(16 if args.small else 32, inputs=64)
    cases.append(case("small MLP 64-32-32-10 tanh (exact diagonal by HVPs)", small,
                      torch.randn(args.batch, 64, generator=gen), torch.randint(0, 10, (args.batch,), generator=gen),
                      args, seeds, "hvp"))
    meta = {"torch": torch.__version__, "threads": args.threads, "small": args.small, "seeds": args.seeds}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "cases": cases}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
