"""Per-step cost of PhaseTransitionCallback against bare Lightning, measured side by side.

Each round fits the same model shape on the same random data three ways: a hand-written PyTorch
loop (for reference), bare Lightning (logger, checkpointing, progress bar and model summary off)
and the same Lightning Trainer with `PhaseTransitionCallback(log_dir, log_freq=10)` (gradient norm
every step, weight norm and a metrics.jsonl record every 10 steps). Variants alternate order
from round to round so they see the same machine load; the ratio is taken within each round and
the median over rounds is reported. A fit's time per step is the median over blocks of 10 steps
(one log record each) after `--warmup` steps, timed at `on_train_batch_end`; the per-run work
(metrics.json at the end) is outside. Two clocks: wall time, and this process's CPU time
(`time.process_time`), which other processes' load does not inflate: on a shared machine read the
CPU-time ratio. On a GPU (`--accelerator gpu`) the device is synchronised at block boundaries and
only wall time is reported.
Results are merged into benchmarks/results/lightning_overhead.json under `--label`.

usage: python benchmarks/lightning_overhead.py [--rounds 9] [--steps 120] [--warmup 10] [--small]
       [--threads 1] [--accelerator cpu|gpu] [--label NAME]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from phasetrain.integrations.lightning import PhaseTransitionCallback

RESULTS = Path(__file__).with_name("results") / "lightning_overhead.json"
TARGET = 1.05
BLOCK = 10  # steps per timed block: the callback's log_freq
CASES = {
    "medium MLP 784-1024-1024-10, batch 256, Adam": ((784, 1024, 1024, 10), 256),
    "tiny MLP 64-256-256-10, batch 128, Adam": ((64, 256, 256, 10), 128),
}


def mlp(widths: tuple[int, ...]) -> nn.Module:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class Module(pl.LightningModule):
    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.net = mlp(widths)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class StepClock(pl.Callback):
    """(wall, CPU) seconds at the end of every training batch (registered last, so it sees all the
    work). On a GPU it synchronises the device at each block boundary, so a block's time holds
    its device work too."""

    def __init__(self, warmup: int) -> None:
        self.times: list[tuple[float, float]] = []
        self.warmup = warmup

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda" and (len(self.times) - self.warmup) % BLOCK == 0:
            torch.cuda.synchronize()
        self.times.append((time.perf_counter(), time.process_time()))

    def per_step(self) -> tuple[float, float]:
        return block_median(self.times, self.warmup)


def block_median(times: list[tuple[float, float]], warmup: int) -> tuple[float, float]:
    """(wall, CPU) seconds per step: the median over blocks of BLOCK consecutive steps after
    `warmup`. Each block holds one log record of the callback, so its periodic work counts, while
    a block that another process interrupted does not move the median."""
    starts = range(warmup, len(times) - BLOCK, BLOCK)
    wall = statistics.median(times[i + BLOCK][0] - times[i][0] for i in starts) / BLOCK
    cpu = statistics.median(times[i + BLOCK][1] - times[i][1] for i in starts) / BLOCK
    return wall, cpu


def data(widths: tuple[int, ...], batch: int, steps: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(batch * steps, widths[0], generator=generator),
                         torch.randint(0, widths[-1], (batch * steps,), generator=generator))


def lightning_step_time(widths: tuple[int, ...], loader: DataLoader, steps: int, warmup: int, with_callback: bool,
                        accelerator: str) -> tuple[float, float]:
    """(wall, CPU) seconds per steady-state step of one Lightning fit."""
    clock = StepClock(warmup)
    with tempfile.TemporaryDirectory() as log_dir:
        callbacks = ([PhaseTransitionCallback(log_dir, log_freq=10)] if with_callback else []) + [clock]
        trainer = pl.Trainer(max_steps=steps, callbacks=callbacks, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, accelerator=accelerator,
                             devices=1)
        torch.manual_seed(0)
        trainer.fit(Module(widths), loader)
    return clock.per_step()


def plain_step_time(widths: tuple[int, ...], loader: DataLoader, warmup: int,
                    device: torch.device) -> tuple[float, float]:
    """(wall, CPU) seconds per steady-state step of the loop a researcher writes by hand."""
    torch.manual_seed(0)
    model = mlp(widths).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for index, (x, y) in enumerate(loader):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        if device.type == "cuda" and (index - warmup) % BLOCK == 0:
            torch.cuda.synchronize()
        times.append((time.perf_counter(), time.process_time()))
    return block_median(times, warmup)


def measure(name: str, widths: tuple[int, ...], batch: int, steps: int, warmup: int, rounds: int,
            accelerator: str) -> dict:
    loader = DataLoader(data(widths, batch, steps), batch_size=batch)
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    runs = {"plain": lambda: plain_step_time(widths, loader, warmup, device),
            "lightning": lambda: lightning_step_time(widths, loader, steps, warmup, False, accelerator),
            "lightning+phasetrain": lambda: lightning_step_time(widths, loader, steps, warmup, True, accelerator)}
    per_round: list[dict[str, tuple[float, float]]] = []
    for index in range(rounds):
        order = list(runs) if index % 2 == 0 else list(reversed(runs))
        per_round.append({variant: runs[variant]() for variant in order})
    result = {"case": name, "rounds": rounds, "steps": steps, "warmup": warmup, "target": TARGET}
    clocks = ("wall", "cpu") if accelerator == "cpu" else ("wall",)
    for k, clock in enumerate(clocks):
        ratios = [r["lightning+phasetrain"][k] / r["lightning"][k] for r in per_round]
        result[clock] = {
            "ms_per_step_median": {v: 1e3 * statistics.median(r[v][k] for r in per_round) for v in runs},
            "callback_over_lightning_per_round": ratios,
            "callback_over_lightning_median": statistics.median(ratios),
            "lightning_over_plain_median": statistics.median(r["lightning"][k] / r["plain"][k] for r in per_round),
            "meets_target": statistics.median(ratios) <= TARGET,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 for stable timings on a shared machine)")
    parser.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--label", default="cpu", help="key of these results in the JSON file")
    parser.add_argument("--small", action="store_true", help="the tiny MLP only, few steps (for CI); writes nothing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = {k: v for k, v in CASES.items() if "tiny" in k} if args.small else CASES
    steps = min(args.steps, 50) if args.small else args.steps
    results = [measure(name, widths, batch, steps, args.warmup, args.rounds, args.accelerator)
               for name, (widths, batch) in cases.items()]
    print(f"{'case':46} {'clock':5} {'plain ms':>9} {'Lightning ms':>13} {'+callback ms':>13} "
          f"{'callback/Lightning':>19} {'Lightning/plain':>16}")
    for r in results:
        for clock in ("wall", "cpu"):
            if clock in r:
                c, ms = r[clock], r[clock]["ms_per_step_median"]
                print(f"{r['case']:46} {clock:5} {ms['plain']:9.2f} {ms['lightning']:13.2f} "
                      f"{ms['lightning+phasetrain']:13.2f} {c['callback_over_lightning_median']:18.3f}x "
                      f"{c['lightning_over_plain_median']:15.3f}x")
    if args.small:
        return
    document = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"benchmark": "lightning_overhead", "runs": {}}
    device = torch.cuda.get_device_name() if args.accelerator == "gpu" else platform.processor() or platform.machine()
    document["runs"][args.label] = {"device": device, "accelerator": args.accelerator, "torch_threads": args.threads,
                                    "torch": torch.__version__, "lightning": pl.__version__, "results": results}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {RESULTS} [{args.label}]")


if __name__ == "__main__":
    main()
