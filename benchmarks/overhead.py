"""Per-step cost of PhaseTransitionTrainer against a hand-written PyTorch loop, measured side by side.

The two loops alternate in blocks of `log_freq` (10) steps inside one process: a callback fired at
every trainer log record runs the next 10 steps of the plain loop on a twin model (same shape,
optimizer and batches), so both see the same machine state, caches and load. A trainer block is
the time between two such callbacks: 10 trainer steps including its record (one host sync, the
metric store, metrics.jsonl, the online detectors, the weight-norm monitor). Per-epoch work
(metrics.json, best_model.pt) falls outside the blocks and is not counted.
Setting: track_gradients=True, log_freq=10, checkpoint_freq=None, no progress bar, one thread.
Times are the process's CPU time (`time.process_time`), which other jobs on a shared machine do
not inflate; `--clock wall` uses wall-clock time instead.

usage: python benchmarks/overhead.py [--steps 3000] [--small] [--clock cpu|wall]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn, optim

from phasetrain import Callback, PhaseTransitionTrainer

RESULTS = Path(__file__).with_name("results") / "overhead.json"
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
LOG_FREQ = 10


def tiny_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def medium_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))


CASES = {
    "tiny MLP 64-256-256-10, batch 128": (tiny_mlp, 64, 128),
    "medium MLP 784-1024-1024-10, batch 256": (medium_mlp, 784, 256),
}


def make_batches(features: int, batch: int, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(batch, features, generator=generator), torch.randint(0, 10, (batch,), generator=generator))
            for _ in range(steps)]


def plain_steps(model: nn.Module, optimizer: optim.Optimizer, batches: list) -> None:
    """The loop a researcher writes by hand."""
    loss_fn = nn.CrossEntropyLoss()
    for inputs, targets in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()


class PlainTwin(Callback):
    """At each trainer record, times the trainer's last block, then runs and times a plain block."""

    def __init__(self, build, batches: list, clock) -> None:
        self.model = build()
        self.optimizer = optim.Adam(self.model.parameters(), lr=1e-3)
        self.batches, self.clock = batches, clock
        self.trainer_blocks: list[float] = []
        self.plain_blocks: list[float] = []
        self._resumed_at: float | None = None

    def on_log(self, trainer, step, metrics):
        now = self.clock()
        if self._resumed_at is not None:
            self.trainer_blocks.append(now - self._resumed_at)
        block = self.batches[step - LOG_FREQ:step]
        start = self.clock()
        plain_steps(self.model, self.optimizer, block)
        self.plain_blocks.append(self.clock() - start)
        self._resumed_at = self.clock()


def measure(name: str, build, features: int, batch: int, steps: int, clock) -> dict:
    torch.manual_seed(0)
    batches = make_batches(features, batch, steps)
    model = build()
    twin = PlainTwin(build, batches, clock)
    with tempfile.TemporaryDirectory() as log_dir:
        trainer = PhaseTransitionTrainer(model, optim.Adam(model.parameters(), lr=1e-3), nn.CrossEntropyLoss(),
                                         device="cpu", track_gradients=True, log_freq=LOG_FREQ, checkpoint_freq=None,
                                         log_dir=log_dir, progress_bar=False)
        trainer.train(batches, num_epochs=1, callbacks=[twin])
    warm = 5  # the first blocks warm caches and allocators for both
    ours, plain = twin.trainer_blocks[warm:], twin.plain_blocks[warm + 1:]
    ratios = [t / p for t, p in zip(ours, plain)]
    return {"case": name, "plain_ms_per_step": statistics.median(plain) / LOG_FREQ * 1e3,
            "trainer_ms_per_step": statistics.median(ours) / LOG_FREQ * 1e3,
            "ratio_median": statistics.median(ratios), "ratio_of_totals": sum(ours) / sum(plain[:len(ours)]),
            "blocks": len(ratios), "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="steps of each loop per case")
    parser.add_argument("--small", action="store_true", help="a quick smoke run (200 steps)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="cpu")
    args = parser.parse_args()
    if args.small:
        args.steps = 200
    torch.set_num_threads(args.threads)
    rows = []
    for name, (build, features, batch) in CASES.items():
        steps = args.steps if build is tiny_mlp else max(args.steps // 10, 200)
        rows.append(measure(name, build, features, batch, steps, CLOCKS[args.clock]))
    print(f"{args.clock} time per step, loops alternating in blocks of {LOG_FREQ} steps")
    print(f"{'case':<42} {'plain ms':>9} {'trainer ms':>11} {'ratio (median)':>15} {'ratio (totals)':>15}")
    for row in rows:
        print(f"{row['case']:<42} {row['plain_ms_per_step']:>9.3f} {row['trainer_ms_per_step']:>11.3f} "
              f"{row['ratio_median']:>15.3f} {row['ratio_of_totals']:>15.3f}")
    if not args.small:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps({"threads": args.threads, "clock": args.clock, "torch": torch.__version__,
                                       "rows": rows}, indent=2))
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
