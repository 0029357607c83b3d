"""Per-step cost of PhaseTransitionTrainer, and of the anchors, against a hand-written PyTorch loop.

Each training loop is measured side by side with a plain loop in one process: every 10 steps (the
record interval, `log_freq=10`) a hook of the loop under test runs the next 10 steps of a plain
loop on a twin model (same shape, optimizer and batches), so both see the same machine state,
caches and load. A block of the loop under test is the time between two such hooks: 10 steps
including its record. Per-run work (start, the end of an epoch, metrics.json) falls outside the
blocks. Reported per loop: the median block time of each side, their ratio (ratio of medians) and
the added time per step in microseconds, (median block - median plain block) / 10.

Loops:
- phasetrain: `PhaseTransitionTrainer.train` with tracking on (loss, accuracy, gradient norm, weight
  norm, online detection of the key metrics, metrics.jsonl), log_freq=10, no checkpoints;
- lean: the least a recording loop must add (loss, correct count and gradient norm kept on the
  device, one read per record);
- ignite: `create_supervised_trainer` (when pytorch-ignite is installed);
- lightning: a bare `lightning.Trainer` (logger, checkpoints, progress bar and summary off; when
  lightning is installed).
Cases (the step times the targets name): MLP 32-64-10 at 2 threads (~0.5 ms) and at 1 thread
(~1 ms), MLP 64-256-256-10 batch 128 (~1.3 ms) and MLP 784-1024-1024-10 batch 256 (~30 ms), Adam,
on the CPU; and where a CUDA GPU is present, a tiny transformer (2 encoder layers of width 128, 64
sequences of 64 tokens, a few ms per step) with `AdamW(fused=True)`, the optimizer with which the
trainer makes no host sync on a step that does not record (block times are taken after
`torch.cuda.synchronize()`, so they cover the device's work). Every loop runs `--rounds` times
per case, the loops alternating round by round, and the medians over rounds are reported, on two
clocks: the process's CPU time (`time.process_time`), which other jobs on a shared machine do not
inflate, and wall time (what a user waits; at 2 threads CPU time also counts the second thread
spinning through serial Python). Results go to
benchmarks/results/overhead.json, replacing the rows of the cases measured and keeping the others.

usage: python benchmarks/overhead.py [--steps 2000] [--rounds 3] [--small] [--loops phasetrain,lean,...]
       [--case GPU ...] [--device cpu] [--json PATH]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from torch import nn, optim

from phasetrain import Callback, PhaseTransitionTrainer

RESULTS = Path(__file__).with_name("results") / "overhead.json"
CLOCKS = ("cpu", "wall")  # the order of the pair `clocks()` returns
BLOCK = 10  # steps per timed block: the record interval
WARM_BLOCKS = 5  # the first blocks warm caches and allocators for both sides


def mlp(*widths: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(widths, widths[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        return nn.Sequential(*layers[:-1])
    return build


class TinyTransformer(nn.Module):
    """A 2-layer encoder over `SEQUENCE` tokens, mean-pooled into 10 classes (the GPU case)."""

    def __init__(self, vocabulary: int = 128, width: int = 128, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocabulary, width)
        self.position = nn.Parameter(torch.zeros(SEQUENCE, width))
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, 10)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens) + self.position).mean(dim=1))


SEQUENCE = 64  # tokens per sequence of the transformer case


def make_batches(features: int, batch: int, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`steps` batches of `batch` Gaussian inputs with `features` features and 10 classes."""
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(batch, features, generator=generator), torch.randint(0, 10, (batch,), generator=generator))
            for _ in range(steps)]


def make_token_batches(batch: int, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`steps` batches of `batch` token sequences (vocabulary 128, length SEQUENCE) and 10 classes."""
    generator = torch.Generator().manual_seed(0)
    return [(torch.randint(0, 128, (batch, SEQUENCE), generator=generator),
             torch.randint(0, 10, (batch,), generator=generator)) for _ in range(steps)]


@dataclass(frozen=True)
class Case:
    """A measured setting: the model, its batches (`batches(steps)`, made on the CPU and moved to
    `device` before timing), CPU threads, the target ratio (None: the issue names none), steps as a
    fraction of --steps, and the optimizer every loop (and the plain twin) uses."""

    build: Callable[[], nn.Module]
    batches: Callable[[int], list]
    threads: int
    target: float | None
    fraction: float = 1.0
    device: str = "cpu"
    fused: bool = False  # AdamW(fused=True): on a GPU the trainer's finiteness check stays on the device

    def optimizer(self, model: nn.Module) -> optim.Optimizer:
        if self.fused:
            return optim.AdamW(model.parameters(), lr=1e-3, fused=True)
        return optim.Adam(model.parameters(), lr=1e-3)


CASES = {
    "MLP 32-64-10, batch 64, 2 threads": Case(mlp(32, 64, 10), partial(make_batches, 32, 64), 2, 1.10),
    "MLP 32-64-10, batch 64, 1 thread": Case(mlp(32, 64, 10), partial(make_batches, 32, 64), 1, 1.04),
    "MLP 64-256-256-10, batch 128, 1 thread": Case(mlp(64, 256, 256, 10), partial(make_batches, 64, 128), 1, 1.04),
    "MLP 784-1024-1024-10, batch 256, 1 thread": Case(mlp(784, 1024, 1024, 10), partial(make_batches, 784, 256), 1,
                                                      1.01, fraction=0.25),
    "transformer 2x128, batch 64x64 tokens, GPU": Case(TinyTransformer, partial(make_token_batches, 64), 1, None,
                                                       device="cuda", fused=True),
}


class PlainTwin:
    """The hand-written loop, run a block at a time between the blocks of the loop under test, on
    the case's device and optimizer. Every time is taken on both clocks: (CPU seconds, wall
    seconds), after the device has finished its queued work."""

    def __init__(self, case: Case, batches: list) -> None:
        torch.manual_seed(0)
        self.case, self.device = case, torch.device(case.device)
        self.model = case.build().to(self.device)
        self.optimizer = case.optimizer(self.model)
        self.loss_fn = nn.CrossEntropyLoss()
        self.batches = batches
        self.blocks: list[tuple[float, float]] = []
        self.tested_blocks: list[tuple[float, float]] = []
        self._resumed_at: tuple[float, float] | None = None

    def hook(self, step: int) -> None:
        """Called by the loop under test after its step `step` (a multiple of BLOCK)."""
        now = clocks(self.device)
        if self._resumed_at is not None:
            self.tested_blocks.append(elapsed(self._resumed_at, now))
        start = clocks(self.device)
        for inputs, targets in self.batches[step - BLOCK:step]:
            self.optimizer.zero_grad(set_to_none=True)
            self.loss_fn(self.model(inputs), targets).backward()
            self.optimizer.step()
        self.blocks.append(elapsed(start, clocks(self.device)))
        self._resumed_at = clocks(self.device)


def clocks(device: torch.device) -> tuple[float, float]:
    """(CPU seconds, wall seconds) once `device` has run what was queued on it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.process_time(), time.perf_counter()


def elapsed(start: tuple[float, float], end: tuple[float, float]) -> tuple[float, float]:
    return end[0] - start[0], end[1] - start[1]


class TwinCallback(Callback):
    def __init__(self, twin: PlainTwin) -> None:
        self.twin = twin

    def on_log(self, trainer, step, metrics):
        self.twin.hook(step)


def run_phasetrain(model: nn.Module, batches: list, twin: PlainTwin) -> None:
    with tempfile.TemporaryDirectory() as log_dir:
        trainer = PhaseTransitionTrainer(model, twin.case.optimizer(model), nn.CrossEntropyLoss(),
                                         device=twin.device, track_gradients=True, log_freq=BLOCK,
                                         checkpoint_freq=None, log_dir=log_dir, progress_bar=False)
        trainer.train(batches, num_epochs=1, callbacks=[TwinCallback(twin)])


def run_lean(model: nn.Module, batches: list, twin: PlainTwin) -> None:
    """Loss, correct count and gradient norm summed on the device; one read per record."""
    optimizer, loss_fn = twin.case.optimizer(model), nn.CrossEntropyLoss()
    params = list(model.parameters())
    losses, correct, norms = [], [], []
    for step, (inputs, targets) in enumerate(batches, start=1):
        optimizer.zero_grad(set_to_none=True)
        outputs = model(inputs)
        loss = loss_fn(outputs, targets)
        loss.backward()
        losses.append(loss.detach())
        correct.append((outputs.argmax(dim=1) == targets).sum())
        norms.append(torch.linalg.vector_norm(torch.stack(torch._foreach_norm([p.grad for p in params]))))
        optimizer.step()
        if step % BLOCK == 0:
            sums = [torch.stack(losses).sum(), torch.stack(correct).sum().float(), torch.stack(norms).sum()]
            torch.stack(sums).tolist()
            losses, correct, norms = [], [], []
            twin.hook(step)


def run_ignite(model: nn.Module, batches: list, twin: PlainTwin) -> None:
    from ignite.engine import Events, create_supervised_trainer

    engine = create_supervised_trainer(model, twin.case.optimizer(model), nn.CrossEntropyLoss(), device=twin.device)
    engine.add_event_handler(Events.ITERATION_COMPLETED(every=BLOCK), lambda e: twin.hook(e.state.iteration))
    engine.run(batches, max_epochs=1)


def run_lightning(model: nn.Module, batches: list, twin: PlainTwin) -> None:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.loss_fn = model, nn.CrossEntropyLoss()

        def training_step(self, batch, batch_idx):
            inputs, targets = batch
            return self.loss_fn(self.net(inputs), targets)

        def configure_optimizers(self):
            return twin.case.optimizer(self)

    class Hook(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step % BLOCK == 0:
                twin.hook(trainer.global_step)

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    trainer = pl.Trainer(max_epochs=1, accelerator="gpu" if twin.device.type == "cuda" else "cpu", devices=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[Hook()])
    trainer.fit(Module(), DataLoader(batches, batch_size=None))


LOOPS = {"phasetrain": (run_phasetrain, None), "lean": (run_lean, None), "ignite": (run_ignite, "ignite"),
         "lightning": (run_lightning, "lightning")}


def measure(loop: str, case: Case, batches: list) -> dict:
    """One run of `loop` against its plain twin: per clock, the median block times, their ratio and
    the added microseconds per step."""
    twin = PlainTwin(case, batches)
    torch.manual_seed(0)
    model = case.build().to(twin.device)
    LOOPS[loop][0](model, batches, twin)
    tested, plain = twin.tested_blocks[WARM_BLOCKS:], twin.blocks[WARM_BLOCKS + 1:]
    result = {}
    for index, clock in enumerate(CLOCKS):
        tested_median = statistics.median(block[index] for block in tested)
        plain_median = statistics.median(block[index] for block in plain)
        result[clock] = {"plain_ms_per_step": plain_median / BLOCK * 1e3, "ratio": tested_median / plain_median,
                         "added_us_per_step": (tested_median - plain_median) / BLOCK * 1e6}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="steps of each loop in the small cases")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every loop per case (medians reported)")
    parser.add_argument("--small", action="store_true", help="a quick smoke run (200 steps, one round, no JSON)")
    parser.add_argument("--loops", default=",".join(LOOPS), help="comma-separated loops to measure")
    parser.add_argument("--case", action="append", default=[],
                        help="only the cases whose name holds this text (repeatable)")
    parser.add_argument("--device", help="run the chosen cases on this device instead of their own (a smoke run of "
                                         "the GPU case on the CPU: --case GPU --device cpu)")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    args = parser.parse_args()
    if args.small:
        args.steps, args.rounds = 200, 1
    loops = [name for name in args.loops.split(",")
             if LOOPS[name][1] is None or importlib.util.find_spec(LOOPS[name][1]) is not None]
    cases = {name: case if args.device is None else replace(case, device=args.device)
             for name, case in CASES.items() if not args.case or any(text in name for text in args.case)}
    rows = []
    print(f"blocks of {BLOCK} steps alternating with a plain loop; medians over {args.rounds} rounds of the ratio of "
          f"median block times and of the added time per step")
    print(f"{'case':<44} {'loop':<11} {'plain ms':>9} {'ratio cpu':>10} {'added us':>9} {'ratio wall':>11} "
          f"{'added us':>9} {'target':>7}")
    for name, case in cases.items():
        if case.device == "cuda" and not torch.cuda.is_available():
            print(f"{name:<44} skipped: no CUDA GPU here")
            continue
        torch.set_num_threads(case.threads)
        steps = max(int(args.steps * case.fraction) // BLOCK * BLOCK, 20 * BLOCK)
        batches = [(inputs.to(case.device), targets.to(case.device)) for inputs, targets in case.batches(steps)]
        runs: dict[str, list[dict]] = {loop: [] for loop in loops}
        for _ in range(args.rounds):  # the loops alternate round by round
            for loop in loops:
                runs[loop].append(measure(loop, case, batches))
        for loop in loops:
            row = {"case": name, "loop": loop, "device": case.device, "threads": case.threads,
                   "torch": torch.__version__, "rounds_run": args.rounds,
                   "optimizer": "AdamW(fused=True)" if case.fused else "Adam", "target": case.target,
                   "steps": steps, "rounds": runs[loop]}
            for clock in CLOCKS:
                for key in ("plain_ms_per_step", "ratio", "added_us_per_step"):
                    row[f"{key}_{clock}"] = statistics.median(run[clock][key] for run in runs[loop])
            rows.append(row)
            target = case.target if loop == "phasetrain" and case.target is not None else ""
            print(f"{name:<44} {loop:<11} {row['plain_ms_per_step_cpu']:>9.3f} {row['ratio_cpu']:>10.3f} "
                  f"{row['added_us_per_step_cpu']:>9.1f} {row['ratio_wall']:>11.3f} "
                  f"{row['added_us_per_step_wall']:>9.1f} {target:>7}", flush=True)
    if not args.small and rows:
        write_rows(args.json, rows)
        print(f"wrote {args.json}")


def write_rows(path: Path, rows: list[dict]) -> None:
    """Write `rows` into the results at `path`, replacing the rows of the same case and device."""
    measured = {(row["case"], row["device"]) for row in rows}
    kept = []
    if path.is_file():
        kept = [row for row in json.loads(path.read_text())["rows"]
                if (row["case"], row.get("device", "cpu")) not in measured]
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"rows": kept + rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
