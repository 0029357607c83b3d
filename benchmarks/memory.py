"""Memory over long runs: the metric store, metrics.json writing, and a long tiny training run.

1. MetricHistory holding N records of 8 metrics: bytes per record (tracemalloc).
2. save_metrics of that history: peak extra memory while writing, file size, seconds.
3. A tiny model trained for S steps with log_freq=1 (every step recorded, online detectors on):
   process RSS growth from the first to the last record, per 10^5 records.

usage: python benchmarks/memory.py [--records 1000000] [--steps 100000] [--small]
"""
from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch
from torch import nn, optim

from phasetrain import Callback, MetricHistory, PhaseTransitionTrainer, save_metrics

RESULTS = Path(__file__).with_name("results") / "memory.json"
NAMES = ("train_loss", "train_acc", "grad_norm", "lr", "epoch", "weight_norm", "val_loss", "val_acc")


def rss_mb() -> float:
    """Current resident set size in MB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def history_cost(records: int) -> dict:
    values = np.random.default_rng(0).random(records)
    tracemalloc.start()
    history = MetricHistory()
    for step in range(records):
        history.log(step + 1, {name: values[step] for name in NAMES})
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    with tempfile.TemporaryDirectory() as folder:
        save_metrics(Path(folder) / "metrics.json", history)
        peak = tracemalloc.get_traced_memory()[1] - held
        tracemalloc.stop()
        start = time.perf_counter()  # timed again without tracemalloc, which slows allocation
        save_metrics(Path(folder) / "metrics.json", history)
        seconds = time.perf_counter() - start
        size = (Path(folder) / "metrics.json").stat().st_size
    return {"records": records, "metrics": len(NAMES), "store_mb": held / 2**20,
            "bytes_per_record_per_metric": held / (records * len(NAMES)),
            "save_peak_extra_mb": peak / 2**20, "save_seconds": seconds, "file_mb": size / 2**20}


class RssProbe(Callback):
    def __init__(self) -> None:
        self.samples: list[tuple[int, float]] = []

    def on_log(self, trainer, step, metrics):
        if step % 10_000 == 0 or step == 100:
            self.samples.append((step, rss_mb()))


def long_run(steps: int) -> dict:
    torch.manual_seed(0)
    data = [(torch.randn(4, 4), torch.randint(0, 2, (4,))) for _ in range(1000)]
    model = nn.Linear(4, 2)
    probe = RssProbe()
    with tempfile.TemporaryDirectory() as folder:
        trainer = PhaseTransitionTrainer(model, optim.SGD(model.parameters(), lr=0.01), nn.CrossEntropyLoss(),
                                         device="cpu", log_dir=folder, log_freq=1, checkpoint_freq=None,
                                         progress_bar=False)
        start = time.perf_counter()
        trainer.train(data, num_epochs=steps // len(data), callbacks=[probe])
        seconds = time.perf_counter() - start
    (first_step, first_rss), (last_step, last_rss) = probe.samples[0], probe.samples[-1]
    return {"steps": last_step, "records_per_step": len(trainer.history.names()), "seconds": seconds,
            "rss_start_mb": first_rss, "rss_end_mb": last_rss,
            "rss_growth_mb_per_100k_steps": (last_rss - first_rss) / (last_step - first_step) * 1e5,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--small", action="store_true", help="10^5 records, 2*10^4 steps")
    args = parser.parse_args()
    if args.small:
        args.records, args.steps = 100_000, 20_000
    torch.set_num_threads(1)
    store = history_cost(args.records)
    print(f"MetricHistory, {store['records']:,} records x {store['metrics']} metrics: {store['store_mb']:.1f} MB "
          f"({store['bytes_per_record_per_metric']:.1f} B per value); "
          f"metrics.json {store['file_mb']:.0f} MB written in "
          f"{store['save_seconds']:.2f} s with {store['save_peak_extra_mb']:.0f} MB extra at peak")
    run = long_run(args.steps)
    print(f"tiny run, {run['steps']:,} steps logged every step ({run['records_per_step']} metrics): RSS "
          f"{run['rss_start_mb']:.0f} -> {run['rss_end_mb']:.0f} MB, "
          f"growth {run['rss_growth_mb_per_100k_steps']:.1f} MB "
          f"per 10^5 steps, peak RSS {run['peak_rss_mb']:.0f} MB, {run['seconds']:.0f} s")
    if not args.small:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps({"store": store, "long_run": run}, indent=2))
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
