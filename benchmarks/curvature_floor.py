"""How cheap can a cold top-k eigenvalue be? The floor for any Krylov method on the benchmark models.

`benchmarks/curvature.py` measures what phasetrain's Lanczos costs; this script measures what *no*
Krylov method started from a random vector can beat on the same models, so a cost target can be
checked against it:

- Product cost: one Hessian-vector product (first-order graph reused) against one gradient step,
  interleaved; and the same for a block of b products in one batched backward
  (`is_grads_batched=True`), per vector.
- Products an oracle needs: Lanczos with full reorthogonalisation from a random start (Krylov
  spaces are the best any method can extract from that many products with one start vector),
  stopped at the first iteration whose Ritz values are all within 1e-3 true relative error of a
  float64 reference. A real stopping test cannot know the error, so it stops later.
- Products the residual test needs (`r_i <= tol |theta_i|`, tol 1e-3, phasetrain's default) on the
  same Krylov sequences, the true error there, and how often a value hidden in a cluster made the
  returned top-k wrong by more than 1e-3.

Run: python benchmarks/curvature_floor.py [--seeds 8] [--threads 1]
Writes a table to stdout and benchmarks/results/curvature_floor.json.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from curvature import StepClock, build_cnn, build_mlp  # noqa: E402
from phasetrain.curvature import HessianOperator, lanczos  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "curvature_floor.json"
TOL = 1e-3


def ritz_trace(matvec, dim: int, steps: int, seed: int, keep: int = 8) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per Lanczos iteration (full reorthogonalisation, two Gram-Schmidt passes, float32 basis):
    the top `keep` Ritz values, descending, and their residuals beta_m |s_mi|."""
    q = torch.randn(dim, generator=torch.Generator().manual_seed(seed))
    basis = torch.empty(steps, dim)
    basis[0] = q / q.norm()
    alphas: list[float] = []
    betas: list[float] = []
    out = []
    for j in range(steps):
        w = matvec(basis[j])
        alpha = torch.dot(basis[j], w)
        w -= alpha * basis[j]
        if j:
            w -= betas[-1] * basis[j - 1]
        for _ in range(2):
            h = basis[: j + 1] @ w
            w -= basis[: j + 1].T @ h
            alpha = alpha + h[j]
        alphas.append(float(alpha))
        betas.append(float(w.norm()))
        tri = np.diag(alphas) + np.diag(betas[:-1], 1) + np.diag(betas[:-1], -1)
        theta, s = np.linalg.eigh(tri)
        out.append((theta[::-1][:keep].copy(), betas[-1] * np.abs(s[-1, ::-1][:keep])))
        if j + 1 < steps:
            basis[j + 1] = w / betas[-1]
    return out


def first_iteration(trace: list[tuple[np.ndarray, np.ndarray]], ok: Callable) -> int | None:
    """1-based index of the first iteration where `ok(theta, residuals)` holds, or None."""
    return next((j + 1 for j, (theta, resid) in enumerate(trace) if ok(theta, resid)), None)


def true_error(theta: np.ndarray, ref: np.ndarray, k: int) -> float:
    return float(np.max(np.abs(theta[:k] - ref[:k]) / np.abs(ref[:k])))


def product_costs(model, x: Tensor, y: Tensor, clock: StepClock, blocks=(1, 4, 8)) -> dict:
    """Gradient steps per Hessian-vector product, one at a time and batched in blocks of b."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=True)
    costs = {}
    for b in blocks:
        tangents = [torch.randn(b, *p.shape) for p in params]
        if b == 1:
            def product(t=tangents):
                return torch.autograd.grad(grads, params, [v[0] for v in t], retain_graph=True)
        else:
            def product(t=tangents):
                return torch.autograd.grad(grads, params, t, retain_graph=True, is_grads_batched=True)
        costs[b] = clock.ratio(product) / b
    return costs


def floor_case(name: str, model, x: Tensor, y: Tensor, seeds: list[int], steps: int, repeats: int) -> dict:
    print(f"\n== {name}: {sum(p.numel() for p in model.parameters())} parameters, batch {len(y)}", flush=True)
    clock = StepClock(model, x, y, repeats)
    costs = product_costs(model, x, y, clock)
    print("gradient steps per HVP, by block size: " + ", ".join(f"b={b}: {c:.2f}" for b, c in costs.items()))
    m64 = copy.deepcopy(model).double()
    with HessianOperator(m64, F.cross_entropy, [(x.double(), y)]) as op:
        ref = lanczos(op, 8, tol=1e-10, max_iter=600,
                      generator=torch.Generator().manual_seed(123)).eigenvalues.double().numpy()
    print("reference top-8 (float64): " + ", ".join(f"{v:.5g}" for v in ref))
    with HessianOperator(model, F.cross_entropy, [(x, y)]) as op:
        traces = [ritz_trace(op.matvec, op.num_params, steps, seed) for seed in seeds]
    rows = []
    for k in (1, 3, 5):
        oracle = [first_iteration(t, lambda th, r, k=k: len(th) >= k and true_error(th, ref, k) <= TOL)
                  for t in traces]
        stops = [first_iteration(t, lambda th, r, k=k: len(th) > k and bool(np.all(r[:k] <= TOL * np.abs(th[:k]))))
                 for t in traces]
        errors = [true_error(t[s - 1][0], ref, k) if s else float("nan") for t, s in zip(traces, stops)]
        row = {"k": k, "oracle_products": oracle, "residual_test_products": stops, "residual_test_errors": errors,
               "wrong_top_k": sum(e > TOL for e in errors)}
        known = [o for o in oracle if o]
        row["oracle_steps_floor"] = [1 + o * costs[1] for o in (min(known), max(known))] if known else None
        rows.append(row)
    print_rows(rows)
    return {"model": name, "reference": ref.tolist(), "hvp_steps_by_block": costs, "seeds": seeds, "rows": rows}


def print_rows(rows: list[dict]) -> None:
    header = ["k", "oracle products (min/median/max)", "floor in grad steps", "residual test products",
              "worst true error", "wrong top-k"]
    table = []
    for r in rows:
        o = [v for v in r["oracle_products"] if v]
        s = [v for v in r["residual_test_products"] if v]
        floor = r["oracle_steps_floor"]
        table.append([str(r["k"]), f"{min(o)}/{statistics.median(o):g}/{max(o)}" if o else "-",
                      f"{floor[0]:.0f}-{floor[1]:.0f}" if floor else "-",
                      f"{min(s)}/{statistics.median(s):g}/{max(s)}" if s else "-",
                      f"{np.nanmax(r['residual_test_errors']):.1e}", f"{r['wrong_top_k']}/{len(r['oracle_products'])}"])
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for t in table:
        print("  ".join(c.ljust(w) for c, w in zip(t, widths)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = list(range(args.seeds))
    gen = torch.Generator().manual_seed(0)  # the same models and batches as benchmarks/curvature.py
    torch.manual_seed(0)
    mlp = build_mlp(256)
    x, y = torch.randn(512, 784, generator=gen), torch.randint(0, 10, (512,), generator=gen)
    cases = [floor_case("MLP 784-256-256-10 tanh", mlp, x, y, seeds, 140, args.repeats)]
    torch.manual_seed(0)
    cnn = build_cnn()
    xc, yc = torch.randn(256, 1, 28, 28, generator=gen), torch.randint(0, 10, (256,), generator=gen)
    cases.append(floor_case("small CNN", cnn, xc, yc, seeds, 40, args.repeats))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": {"torch": torch.__version__, "threads": args.threads, "tol": TOL},
                                    "cases": cases}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
