"""Kill-and-fault test of the run folder: SIGKILL training runs at random moments, resume them, compare.

Each trial trains a small MLP with `PhaseTransitionTrainer` in a subprocess and SIGKILLs it either
at a random moment of training or the instant a checkpoint's temp file appears (inside
`torch.save`). After the kill it inspects the folder (unreadable checkpoints, whether
metrics.json is valid JSON, temp files left behind); every third trial then damages the newest
checkpoint (1 byte, random bytes, or cut in half) as a disk fault would. Then it resumes with
`resume_from="latest"` (or starts afresh when the kill came before the first checkpoint) and
compares the final weights with an uninterrupted run of the same seed, bit for bit.

usage: python benchmarks/faults.py [--kills 20] [--seed 0]
Writes benchmarks/results/faults.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("results") / "faults.json"
ROOT = Path(__file__).resolve().parents[1]
EPOCHS, BATCHES_PER_EPOCH, CHECKPOINT_FREQ = 6, 20, 7
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


def worker(log_dir: str, resume: bool) -> None:
    """One training run (the subprocess): prints "ready" when training starts."""
    import numpy as np
    import torch
    from torch import nn, optim
    from torch.utils.data import DataLoader, TensorDataset

    from phasetrain import Callback, PhaseTransitionTrainer

    class Ready(Callback):
        def on_train_start(self, trainer):
            print("ready", flush=True)

    torch.manual_seed(0)
    np.random.seed(0)
    data = torch.Generator().manual_seed(1)
    inputs = torch.randn(BATCHES_PER_EPOCH * 32 + 128, 64, generator=data)
    targets = (inputs[:, :10].argmax(dim=1)).long()
    train = DataLoader(TensorDataset(inputs[:-128], targets[:-128]), batch_size=32, shuffle=True)
    val = DataLoader(TensorDataset(inputs[-128:], targets[-128:]), batch_size=64)
    # ~0.4M parameters: a checkpoint (weights + Adam moments) is ~5 MB, so writes take a while
    model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Dropout(0.2), nn.Linear(512, 512), nn.ReLU(),
                          nn.Linear(512, 10))
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    trainer = PhaseTransitionTrainer(model, optimizer, nn.CrossEntropyLoss(), device="cpu", log_dir=log_dir,
                                     log_freq=5, checkpoint_freq=CHECKPOINT_FREQ, progress_bar=False)
    trainer.train(train, val, num_epochs=EPOCHS, callbacks=[Ready()], resume_from="latest" if resume else None)


def launch(log_dir: Path, resume: bool = False) -> subprocess.Popen:
    command = [sys.executable, __file__, "--worker", str(log_dir)] + (["--resume"] if resume else [])
    return subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=600)
    return process.returncode, stderr


def final_weights(log_dir: Path) -> dict:
    from phasetrain.run.checkpoints import load_checkpoint_file

    return load_checkpoint_file(log_dir / "final_model.pt")["model"]


def wait_ready(process: subprocess.Popen) -> None:
    line = process.stdout.readline().strip()
    if line != "ready":
        raise RuntimeError(f"worker did not start: {process.communicate()[1][-2000:]}")


def kill_at_random_moment(process: subprocess.Popen, train_seconds: float, rng: random.Random) -> str:
    wait_ready(process)
    time.sleep(rng.uniform(0.0, 0.9 * train_seconds))
    process.send_signal(signal.SIGKILL)
    return "random moment"


def kill_during_checkpoint_write(process: subprocess.Popen, log_dir: Path, rng: random.Random) -> str:
    """SIGKILL the moment the n-th checkpoint temp file is seen (n random), i.e. inside torch.save."""
    wait_ready(process)
    wanted, seen = rng.randint(1, EPOCHS * BATCHES_PER_EPOCH // CHECKPOINT_FREQ - 1), set()
    while process.poll() is None:
        for entry in os.scandir(log_dir):
            if entry.name.startswith(".checkpoint_step_") and entry.name.endswith(".tmp"):
                seen.add(entry.name)
        if len(seen) >= wanted:
            process.send_signal(signal.SIGKILL)
            return "checkpoint write"
        time.sleep(0.0005)
    return "missed (run ended)"


def inspect(log_dir: Path) -> dict:
    """What a kill left: unreadable checkpoint files, whether metrics.json parses, temp files."""
    from phasetrain.run.checkpoints import CheckpointError, load_checkpoint_file
    from phasetrain.run.files import is_run_file_name

    unreadable, checked = [], 0
    for path in sorted(log_dir.iterdir()):
        if path.suffix == ".pt" and is_run_file_name(path.name):
            checked += 1
            try:
                load_checkpoint_file(path, mmap=True)
            except CheckpointError:
                unreadable.append(path.name)
    metrics_ok = None
    if (log_dir / "metrics.json").exists():
        try:
            json.loads((log_dir / "metrics.json").read_text())
            metrics_ok = True
        except ValueError:
            metrics_ok = False
    temps = sorted(p.name for p in log_dir.iterdir() if p.name.endswith(".tmp"))
    return {"checkpoints": checked, "unreadable": unreadable, "metrics_json_valid": metrics_ok, "temp_files": temps}


def damage_newest(log_dir: Path, how: int, rng: random.Random) -> str | None:
    """Overwrite the newest step checkpoint with damage kind `how` (mod 3); None when fewer than two exist."""
    from phasetrain.run.checkpoints import step_checkpoints

    found = step_checkpoints(log_dir)
    if len(found) < 2:  # keep at least one earlier file to fall back to
        return None
    path = found[-1][1]
    data = path.read_bytes()
    kinds = [("1 byte", b"\x00"), ("random bytes", rng.randbytes(4096)), ("cut in half", data[: len(data) // 2])]
    name, garbage = kinds[how % 3]
    path.write_bytes(garbage)
    return f"{path.name}: {name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.resume)
        return
    import torch

    sys.path.insert(0, str(ROOT / "src"))
    rng = random.Random(args.seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="phasetrain-faults-") as scratch:
        reference = Path(scratch) / "reference"
        process = launch(reference)
        wait_ready(process)
        ready_at = time.perf_counter()
        code, stderr = finish(process)
        train_seconds = time.perf_counter() - ready_at
        if code != 0:
            raise SystemExit(f"the uninterrupted reference run failed:\n{stderr[-3000:]}")
        expected = final_weights(reference)
        trials, damaged = [], 0
        for trial in range(args.kills):
            log_dir = Path(scratch) / f"trial{trial}"
            log_dir.mkdir()
            process = launch(log_dir)
            if trial % 2:
                where = kill_during_checkpoint_write(process, log_dir, rng)
            else:
                where = kill_at_random_moment(process, train_seconds, rng)
            process.wait(timeout=60)
            record = {"trial": trial, "killed_at": where, "returncode": process.returncode, **inspect(log_dir)}
            record["damaged"] = damage_newest(log_dir, damaged, rng) if trial % 3 == 2 else None
            damaged += record["damaged"] is not None
            # today's trainer resumes from step checkpoints and final_model.pt only
            has_checkpoint = any(p.name.startswith("checkpoint_step_") or p.name == "final_model.pt"
                                 for p in log_dir.iterdir())
            code, stderr = finish(launch(log_dir, resume=has_checkpoint))
            record["resumed"] = has_checkpoint
            record["resume_ok"] = code == 0
            if code != 0:
                record["error"] = stderr.strip().splitlines()[-1][:300] if stderr.strip() else f"exit {code}"
                record["identical"] = None
            else:
                actual = final_weights(log_dir)
                record["identical"] = all(torch.equal(actual[name], tensor) for name, tensor in expected.items())
            trials.append(record)
            print(json.dumps(record), flush=True)
    killed = [t for t in trials if t["returncode"] == -signal.SIGKILL]
    summary = {
        "kills": len(killed),
        "finished_before_the_kill": len(trials) - len(killed),
        "killed_during_checkpoint_write": sum(t["killed_at"] == "checkpoint write" for t in killed),
        "unreadable_files_after_kill": sum(len(t["unreadable"]) for t in trials),
        "metrics_json_invalid_after_kill": sum(t["metrics_json_valid"] is False for t in trials),
        "temp_files_left_by_kills": sum(len(t["temp_files"]) for t in trials),
        "newest_checkpoint_damaged_on_purpose": sum(t["damaged"] is not None for t in trials),
        "resumed": sum(t["resumed"] for t in trials),
        "restarted_fresh_no_checkpoint_yet": sum(not t["resumed"] for t in trials),
        "failed_resumes": sum(not t["resume_ok"] for t in trials),
        "bit_identical_finishes": sum(t["identical"] is True for t in trials),
        "different_finishes": sum(t["identical"] is False for t in trials),
    }
    document = {
        "what": "SIGKILL PhaseTransitionTrainer runs (random moment / inside a checkpoint write), damage the "
                "newest checkpoint every third trial, resume_from='latest', compare final weights bit for bit "
                "with an uninterrupted run",
        "setting": {"model": "MLP 64-512-512-10 with dropout, Adam", "epochs": EPOCHS,
                    "batches_per_epoch": BATCHES_PER_EPOCH, "checkpoint_freq": CHECKPOINT_FREQ, "device": "cpu",
                    "seed": args.seed, "torch": torch.__version__},
        "summary": summary,
        "seconds": round(time.perf_counter() - started, 1),
        "trials": trials,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
