"""Curvature on every rank: one process against two gloo processes on the CPU.

The benchmark MLP (784-256-256-10, tanh, batch 512, random data); each measurement is what
HessianMonitor runs: top-3 eigenvalues by Lanczos from a fixed random start (tol 1e-3), and the
diagonal statistics (22 + 4 block-product budget). "1 process": the whole batch in one process;
"2 ranks": each rank multiplies its half of the batch and the products are all-reduced
(`HessianOperator(distributed=True)`). Interleaved: every repeat times the single process (on
rank 0, rank 1 waiting at a barrier), then both ranks together; one thread per process. The
numbers agree up to float32 rounding (summation order), which can move Lanczos's stop by a step
and the diagonal's estimate by much less than its standard error.

Run: python benchmarks/curvature_ddp.py [--repeats R] [--hidden H] [--batch B]
Writes benchmarks/results/curvature_ddp.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from curvature import build_mlp
from phasetrain.curvature import HessianOperator, diagonal_statistics, lanczos
from phasetrain.monitors.hessian import batch_share

RESULTS = Path(__file__).resolve().parent / "results" / "curvature_ddp.json"


def measure(model, batch, distributed: bool) -> tuple[dict, float, int]:
    """(eigenvalues and diagonal statistics, wall seconds, products) of one monitor-style measurement."""
    start = time.perf_counter()
    with HessianOperator(model, F.cross_entropy, [batch], distributed=distributed) as op:
        eig = lanczos(op, 3, generator=torch.Generator().manual_seed(0))
        diag = diagonal_statistics(op, torch.Generator().manual_seed(1), groups=op.module_slices(),
                                   block_products=True)
        products = op.num_matvecs
    seconds = time.perf_counter() - start
    values = {"eig": eig.eigenvalues.tolist(), "trace": diag.mean * op.num_params, "std": diag.std}
    return values, seconds, products


def worker(rank: int, world: int, init: str, args: argparse.Namespace, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = build_mlp(args.hidden)
    gen = torch.Generator().manual_seed(0)
    batch = (torch.randn(args.batch, 784, generator=gen), torch.randint(0, 10, (args.batch,), generator=gen))
    share = batch_share(batch, rank, world)
    lanczos(torch.eye(4), 1, generator=torch.Generator())  # first-call set-up, untimed
    measure(model, share, True)
    single, ranks, values = [], [], {}
    for _ in range(args.repeats):
        dist.barrier()
        if rank == 0:
            values["single"], seconds, products = measure(model, batch, False)
            single.append(seconds)
        dist.barrier()
        values["ranks"], seconds, products = measure(model, share, True)
        ranks.append(seconds)
    if rank == 0:
        Path(out).write_text(json.dumps({"single_seconds": single, "ranks_seconds": ranks, "products": products,
                                         "values": values}))
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rank0.json")
        mp.spawn(worker, args=(2, os.path.join(tmp, "init"), args, out), nprocs=2, join=True)
        result = json.loads(Path(out).read_text())
    single, ranks = statistics.median(result["single_seconds"]), statistics.median(result["ranks_seconds"])
    v1, v2 = result["values"]["single"], result["values"]["ranks"]
    eig = max(abs(a - b) / abs(a) for a, b in zip(v1["eig"], v2["eig"]))
    trace = abs(v1["trace"] - v2["trace"]) / abs(v1["trace"])
    load = os.getloadavg()
    summary = {"cpu_cores": os.cpu_count(), "load_average_1_5_15": load, "threads_per_process": 1,
               "hidden": args.hidden, "batch": args.batch, "single_median_seconds": single,
               "two_ranks_median_seconds": ranks, "speedup": single / ranks,
               "products_per_measurement": result["products"],
               "eigenvalues_max_rel_difference": eig, "trace_rel_difference": trace, **result}
    print(f"{os.cpu_count()} CPU cores, shared (load average {load[0]:.1f}), 1 thread per process; "
          f"{result['products']} products per measurement")
    print(f"1 process: {single:.2f} s, 2 ranks: {ranks:.2f} s (median of {args.repeats}); "
          f"speedup {single / ranks:.2f}x; "
          f"eigenvalues agree to {eig:.1e}, the trace to {trace:.1e}")
    RESULTS.write_text(json.dumps(summary, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
