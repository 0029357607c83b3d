"""What leaving curvature on costs a run, and what `hessian_budget` buys: measured side by side.

Two runs a user makes, each trained without curvature, with the monitor every `hessian_freq`
steps, and with a time budget, interleaved (each repeat runs every case, starting one case later
than the repeat before, so that no case always runs first) in one process, CPU time:
- `examples/grokking.py` (top eigenvalue, k=1, every 100 steps);
- the benchmark MLP 784-256-256-10 of `benchmarks/curvature.py`, SGD on random labels, batch 512,
  with the trainer's default curvature (diagonal) and with eigenvalues (k=3).
Overhead = (time with curvature) / (time without) - 1, medians over the repeats. For grokking,
measurements per 100 steps on the plateau before the jump and inside it (val_acc from 10% to 90%),
and the steps measured in each repeat; for the MLP, the number of measurements in each repeat.

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
        return {"plateau_per_100": None, "jump_per_100": None, "measurements": int(measured.size),
                "steps": measured.tolist()}
    memorised = result["train_acc_full_step"] or 0
    plateau = ((measured > memorised) & (measured < start)).sum()
    jump = ((measured >= start) & (measured <= end)).sum()
    plateau_span = start - memorised
    return {"plateau_per_100": 100 * plateau / max(plateau_span, 1), "jump_per_100": 100 * jump / max(end - start, 1),
            "jump": [start, end], "measurements": int(measured.size), "steps": measured.tolist()}


def mlp_run(curvature: dict, steps: int, hidden: int) -> tuple[float, int]:
    """CPU seconds of the run, and how many curvature measurements it made."""
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
        seconds = time.process_time() - started
    measured = [name for name in ("hessian_diag_mean", "hessian_eig_1") if name in trainer.history]
    return seconds, trainer.history.steps(measured[0]).size if measured else 0


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
    densities: dict[str, list[dict]] = {name: [] for name in grok_cases}
    counts: dict[str, list[int]] = {name: [] for name in mlp_cases}
    for repeat in range(args.repeats):  # interleaved: each repeat runs every case once
        for name in rotated(list(grok_cases), repeat):
            seconds, result = grokking_run(grok_cases[name], args.small)
            grok_times[name].append(seconds)
            densities[name].append(density(result))
        for name in rotated(list(mlp_cases), repeat):
            seconds, count = mlp_run(mlp_cases[name], mlp_steps, hidden)
            mlp_times[name].append(seconds)
            counts[name].append(count)
    rows = []
    for run, times in (("grokking", grok_times), ("MLP 784-256-256-10" if not args.small else "MLP small", mlp_times)):
        base = statistics.median(times["none"])
        for name, values in times.items():
            median = statistics.median(values)
            rows.append({"run": run, "case": name, "cpu_s": median, "overhead": median / base - 1,
                         **({"density": densities[name]} if run == "grokking" else {"measurements": counts[name]})})
    print("density (measurements per 100 steps on the plateau / in the jump) and measurements: of each repeat")
    print(f"{'run':20} {'curvature':34} {'cpu s':>8} {'overhead':>9}  measurements")
    for row in rows:
        shown = "; ".join(
            f"{d['plateau_per_100']:.2f} / {d['jump_per_100']:.2f} at {d['steps']}" if d.get("plateau_per_100")
            is not None else str(d.get("measurements", 0)) for d in row["density"]
        ) if "density" in row else str(row["measurements"])
        print(f"{row['run']:20} {row['case']:34} {row['cpu_s']:8.2f} {row['overhead']:9.1%}  {shown}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"threads": 1, "repeats": args.repeats, "small": args.small, "rows": rows},
                                  indent=1, default=float))
    print(f"wrote {RESULTS}")


def rotated(names: list[str], by: int) -> list[str]:
    """`names` starting at the one `by` places on (cyclically)."""
    by %= len(names)
    return names[by:] + names[:by]


if __name__ == "__main__":
    main()
