"""DDP per-step cost: the trainer under 2 gloo processes on CPU against 1 process, same per-rank batch.

Each process uses one thread; with 2 processes the global batch is twice as large, so the ratio
is the price of the gradient all-reduce plus the per-record metric reduction. Measured between the
first and last log record (steady state), like benchmarks/overhead.py.

usage: python benchmarks/ddp.py [--steps 200] [--small]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn, optim

from phasetrain import Callback, PhaseTransitionTrainer

RESULTS = Path(__file__).with_name("results") / "ddp.json"


def medium_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))


class LogClock(Callback):
    def __init__(self) -> None:
        self.times: list[tuple[int, float]] = []

    def on_log(self, trainer, step, metrics):
        self.times.append((step, time.perf_counter()))


def seconds_per_step(steps: int, batch: int) -> float:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = [(torch.randn(batch, 784), torch.randint(0, 10, (batch,))) for _ in range(steps)]
    model = medium_mlp()
    clock = LogClock()
    with tempfile.TemporaryDirectory() as folder:
        trainer = PhaseTransitionTrainer(model, optim.Adam(model.parameters(), lr=1e-3), nn.CrossEntropyLoss(),
                                         device="cpu", log_dir=folder, log_freq=10, checkpoint_freq=None,
                                         progress_bar=False)
        trainer.train(data, num_epochs=1, callbacks=[clock])
    (s0, t0), (s1, t1) = clock.times[1], clock.times[-1]
    return (t1 - t0) / (s1 - s0)


def worker(rank: int, port: int, steps: int, batch: int, out: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        value = seconds_per_step(steps, batch)
        if rank == 0:
            Path(out).write_text(str(value))
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--small", action="store_true", help="40 steps")
    args = parser.parse_args()
    if args.small:
        args.steps = 40
    single = seconds_per_step(args.steps, args.batch)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.NamedTemporaryFile() as out:
        mp.spawn(worker, args=(port, args.steps, args.batch, out.name), nprocs=2)
        double = float(Path(out.name).read_text())
    print(f"{'setting':<34} {'ms/step':>8}")
    print(f"{'1 process, batch ' + str(args.batch):<34} {single * 1e3:>8.2f}")
    print(f"{'2 processes (gloo), batch ' + str(args.batch) + ' each':<34} {double * 1e3:>8.2f}")
    print(f"ratio 2 processes / 1 process: {double / single:.2f}")
    if not args.small:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps({"single_ms": single * 1e3, "ddp2_ms": double * 1e3, "ratio": double / single,
                                       "batch_per_rank": args.batch, "steps": args.steps}, indent=2))


if __name__ == "__main__":
    main()
