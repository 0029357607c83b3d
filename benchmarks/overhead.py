"""Per-step cost of PhaseTransitionTrainer against a hand-written PyTorch loop, measured side by side.

Each round runs N steps of the plain loop, then one epoch of N steps of the trainer, on the same
model shape, data and optimizer; rounds alternate so both see the same machine load. The trainer's
per-step time is taken between its first and last log record of the epoch (steady state): the
per-epoch work (metrics.json, best_model.pt) is reported on its own column, not spread over steps.
Setting: track_gradients=True, log_freq=10, checkpoint_freq=None, no progress bar, one thread.
Times are the process's CPU time (`time.process_time`), which other jobs on a shared machine do
not inflate; `--clock wall` uses wall-clock time instead.

usage: python benchmarks/overhead.py [--rounds 7] [--steps 300] [--small]
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


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = time.process_time


def plain_loop(model: nn.Module, optimizer: optim.Optimizer, batches: list) -> float:
    """Seconds per step of the loop a researcher writes by hand."""
    loss_fn = nn.CrossEntropyLoss()
    start = clock()
    for inputs, targets in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
    return (clock() - start) / len(batches)


class LogClock(Callback):
    """Timestamps of log records, to time the trainer's steady-state steps."""

    def __init__(self) -> None:
        self.times: list[tuple[int, float]] = []

    def on_log(self, trainer, step, metrics):
        self.times.append((step, clock()))


def trainer_epoch(trainer: PhaseTransitionTrainer, batches: list, epochs: int) -> tuple[float, float]:
    """(seconds per step between the epoch's first and last log, seconds of the whole train() call)."""
    log_clock = LogClock()
    start = clock()
    trainer.train(batches, num_epochs=epochs, callbacks=[log_clock])
    total = clock() - start
    (first_step, first_time), (last_step, last_time) = log_clock.times[0], log_clock.times[-1]
    return (last_time - first_time) / (last_step - first_step), total


def measure(name: str, build, features: int, batch: int, steps: int, rounds: int) -> dict:
    torch.manual_seed(0)
    batches = make_batches(features, batch, steps)
    plain_model = build()
    plain_optimizer = optim.Adam(plain_model.parameters(), lr=1e-3)
    model = build()
    with tempfile.TemporaryDirectory() as log_dir:
        trainer = PhaseTransitionTrainer(model, optim.Adam(model.parameters(), lr=1e-3), nn.CrossEntropyLoss(),
                                         device="cpu", track_gradients=True, log_freq=10, checkpoint_freq=None,
                                         log_dir=log_dir, progress_bar=False)
        plain_loop(plain_model, plain_optimizer, batches[:20])  # warm-up both
        trainer_epoch(trainer, batches[:40], 1)
        plain_times, trainer_times, call_overheads = [], [], []
        for round_index in range(rounds):
            plain_times.append(plain_loop(plain_model, plain_optimizer, batches))
            per_step, total = trainer_epoch(trainer, batches, round_index + 2)
            trainer_times.append(per_step)
            call_overheads.append(total - per_step * steps)
    plain, ours = statistics.median(plain_times), statistics.median(trainer_times)
    ratios = [t / p for t, p in zip(trainer_times, plain_times)]
    return {"case": name, "plain_ms_per_step": plain * 1e3, "trainer_ms_per_step": ours * 1e3,
            "ratio_median": statistics.median(ratios), "ratio_of_medians": ours / plain,
            "per_epoch_fixed_cost_ms": statistics.median(call_overheads) * 1e3, "steps": steps, "rounds": rounds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--small", action="store_true", help="a quick smoke run (2 rounds of 40 steps)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="cpu")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    if args.small:
        args.rounds, args.steps = 2, 40
    torch.set_num_threads(args.threads)
    rows = [measure(name, *spec, steps=args.steps, rounds=args.rounds) for name, spec in CASES.items()]
    print(f"{args.clock} time per step, {args.rounds} interleaved rounds of {args.steps} steps")
    print(f"{'case':<42} {'plain ms':>9} {'trainer ms':>11} {'ratio':>7} {'epoch fixed ms':>15}")
    for row in rows:
        print(f"{row['case']:<42} {row['plain_ms_per_step']:>9.3f} {row['trainer_ms_per_step']:>11.3f} "
              f"{row['ratio_median']:>7.3f} {row['per_epoch_fixed_cost_ms']:>15.1f}")
    if not args.small:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps({"threads": args.threads, "clock": args.clock, "torch": torch.__version__,
                                       "rows": rows}, indent=2))
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
