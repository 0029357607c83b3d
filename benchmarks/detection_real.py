"""Detection on real training runs made here: grokking (3 seeds) and the edge of stability (2 step sizes).

Each run is trained by its example script; what the detector and the phenomena report is compared
with what the curves show directly:
- grokking: the step val_acc first crosses 50% against the val_acc level jump and the named
  "grokking" phenomenon (with its delay ratio t_grok / t_mem);
- edge of stability: the step sharpness first reaches 2/lr against the named "edge_of_stability"
  phenomenon (its slope change, or hessian_eos_ratio reaching 1), and the oscillation after it:
  regimes reported (one expected), where the regime starts against the arrival, level transitions
  left over after the arrival, and all detections of hessian_eig_1 besides the one regime.

usage: python benchmarks/detection_real.py [--small] [--lrs 0.1 0.15] [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import edge_of_stability  # noqa: E402
import grokking  # noqa: E402
from phasetrain.detect import detect_transitions, find_phenomena  # noqa: E402

RESULTS = Path(__file__).with_name("results") / "detection_real.json"


def named(phenomena, name):
    return next((p for p in phenomena if p.name == name), None)


def grokking_row(seed: int, small: bool) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        result = grokking.main(["--log-dir", folder, "--quiet", "--seed", str(seed), *(["--small"] if small else [])])
    history = result["history"]
    phenomena = find_phenomena(history)
    grok = named(phenomena, "grokking")
    jumps = [t.step for t in result["transitions"].get("val_acc", []) if t.direction == "up"]
    return {"run": f"grokking seed {seed}", "crossing_50": result["val_acc_crossing_step"],
            "val_acc_jump": jumps[0] if jumps else None, "grokking_step": grok.step if grok else None,
            "delay_ratio": grok.value if grok else None,
            "story": [f"{p.step}: {p.name}" for p in phenomena]}


def eos_row(lr: float, small: bool) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        result = edge_of_stability.main(["--log-dir", folder, "--quiet", "--lr", str(lr),
                                         *(["--small"] if small else [])])
    history = result["history"]
    phenomena = find_phenomena(history)
    eos = named(phenomena, "edge_of_stability")
    steps, values = history.steps("hessian_eig_1"), history.values("hessian_eig_1")
    found = detect_transitions(values, steps, kinds=("level", "slope", "regime"))
    arrival = result["crossing_step"]
    span = float(steps[-1] - steps[0])
    after = [t for t in found if arrival is not None and t.step > arrival]
    regimes = [t for t in found if t.kind == "regime"]
    return {"run": f"edge of stability lr={lr}", "limit_2_over_lr": result["limit"], "reaches_limit": arrival,
            "eos_reported": eos.step if eos else None,
            "error_fraction_of_run": None if eos is None or arrival is None else abs(eos.step - arrival) / span,
            "regimes": len(regimes),
            "regime_start": regimes[0].start_step if regimes else None,
            "regime_ongoing": regimes[0].ongoing if regimes else None,
            "regime_start_after_arrival_fraction_of_run": (regimes[0].start_step - arrival) / span
            if regimes and arrival is not None else None,
            "extra_level_transitions_after_arrival": sum(t.kind == "level" for t in after),
            "detections_besides_one_regime": len(found) - min(len(regimes), 1),
            "hessian_eig_1_all_kinds": [f"{t.step}: {t.kind}" for t in found],
            "story": [f"{p.step}: {p.name}" for p in phenomena]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="the examples' --small runs")
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.1, 0.15])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="grokking seeds (none: skip grokking)")
    args = parser.parse_args()
    rows = [grokking_row(seed, args.small) for seed in args.seeds] + [eos_row(lr, args.small) for lr in args.lrs]
    for row in rows:
        print(json.dumps(row))
    RESULTS.write_text(json.dumps({"small": args.small, "rows": rows}, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
