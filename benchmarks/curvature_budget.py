"""What leaving curvature on costs a run, and what `hessian_budget` buys: measured side by side.

Two runs a user makes, each trained without curvature, with the monitor every `hessian_freq`
steps, and with a time budget, interleaved (repeats alternate the three) in one process, CPU time:
- `examples/grokking.py` (top eigenvalue, k=1, every 100 steps);
- the benchmark MLP 784-256-256-10 of `benchmarks/curvature.py`, SGD on random labels, batch 512,
  with the trainer's default curvature (diagonal) and with eigenvalues (k=3).
Overhead = (time with curvature) / (time without) - 1, medians over the repeats. For grokking,
measurements per 100 steps on the plateau before the jump and inside it (val_acc from 10% to 90%).

usage: python benchmarks/curvature_budget.py [--repeats 3] [--small]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import grokking  # noqa: E402
from curvature import build_mlp  # noqa: E402
from phasetrain import PhaseTransitionTrainer  # noqa: E402

RESULTS = Path(__file__).with_name("results") / "curvature_budget.json"


def grokking_run(extra: list[str], small: bool) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as folder:
        started = time.process_time()
        result = grokking.main(["--log-dir", folder, "--quiet", *(["--small"] if small else []), *extra])
        return time.process_time() - started, result


def density(result: dict) -> dict[str, float | None]:
    """Curvature measurements per 100 steps before the validation jump and inside it."""
    history = result["history"]
    if "hessian_eig_1" not in history:
        return {}
    steps = history.steps("val_acc").tolist()
    values = history.values("val_acc").tolist()
    start = next((s for s, v in zip(steps, values) if v >= 0.1), None)
    end = next((s for s, v in zip(steps, values) if v >= 0.9), None)
    measured = history.steps("hessian_eig_1")
    if start is None or end is None or end <= start:
        return {"plateau_per_100": None, "jump_per_100": None, "measurements": int(measured.size)}
    memorised = result["train_acc_full_step"] or 0
    plateau = ((measured > memorised) & (measured < start)).sum()
    jump = ((measured >= start) & (measured <= end)).sum()
    plateau_span = start - memorised
    return {"plateau_per_100": 100 * plateau / max(plateau_span, 1), "jump_per_100": 100 * jump / max(end - start, 1),
            "jump": [start, end], "measurements": int(measured.size)}


def mlp_run(curvature: dict, steps: int, hidden: int) -> float:
    torch.manual_seed(0)
    model = build_mlp(hidden)
    x = torch.randn(512, 784, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (512,), generator=torch.Generator().manual_seed(2))
    with tempfile.TemporaryDirectory() as folder:
        trainer = PhaseTransitionTrainer(model, torch.optim.SGD(model.parameters(), lr=0.05), nn.CrossEntropyLoss(),
                                         device="cpu", log_dir=folder, checkpoint_freq=None, progress_bar=False,
                                         **curvature)
        started = time.process_time()
        trainer.train([(x, y)] * 100, num_epochs=steps // 100)
        return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=0.05)
    parser.add_argument("--small", action="store_true", help="a quick smoke run (small grokking, small MLP)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    budget = str(args.budget)
    grok_cases = {"none": ["--no-curvature"], "every 100 steps": [], f"budget {budget}": ["--hessian-budget", budget]}
    mlp_steps, hidden = (200, 64) if args.small else (1000, 256)
    mlp_cases = {
        "none": {},
        "diagonal every 100": {"track_hessian": True},
        f"diagonal, budget {budget}": {"track_hessian": True, "hessian_budget": args.budget},
        "eigenvalues k=3 every 100": {"track_hessian": True, "hessian_method": "eigenvalues"},
        f"eigenvalues k=3, budget {budget}": {"track_hessian": True, "hessian_method": "eigenvalues",
                                              "hessian_budget": args.budget},
    }
    grok_times: dict[str, list[float]] = {name: [] for name in grok_cases}
    mlp_times: dict[str, list[float]] = {name: [] for name in mlp_cases}
    densities = {}
    for _ in range(args.repeats):  # interleaved: each repeat runs every case once
        for name, extra in grok_cases.items():
            seconds, result = grokking_run(extra, args.small)
            grok_times[name].append(seconds)
            densities[name] = density(result)
        for name, curvature in mlp_cases.items():
            mlp_times[name].append(mlp_run(curvature, mlp_steps, hidden))
    rows = []
    for run, times in (("grokking", grok_times), ("MLP 784-256-256-10" if not args.small else "MLP small", mlp_times)):
        base = statistics.median(times["none"])
        for name, values in times.items():
            median = statistics.median(values)
            rows.append({"run": run, "case": name, "cpu_s": median, "overhead": median / base - 1,
                         **({"density": densities[name]} if run == "grokking" and name in densities else {})})
    print(f"{'run':20} {'curvature':34} {'cpu s':>8} {'overhead':>9}  measurements per 100 steps (plateau / jump)")
    for row in rows:
        d = row.get("density") or {}
        shown = (f"{d['plateau_per_100']:.2f} / {d['jump_per_100']:.2f}" if d.get("plateau_per_100") is not None
                 else "")
        print(f"{row['run']:20} {row['case']:34} {row['cpu_s']:8.2f} {row['overhead']:9.1%}  {shown}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"threads": 1, "repeats": args.repeats, "small": args.small, "rows": rows},
                                  indent=1, default=float))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
