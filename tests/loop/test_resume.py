"""Exact resume: a run killed with SIGKILL and resumed ends bit-identical to one never interrupted."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from phasetrain.run.checkpoints import load_checkpoint_file

WORKER = str(Path(__file__).with_name("resume_worker.py"))
ROOT = str(Path(__file__).resolve().parents[2])


def run_worker(log_dir: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, WORKER, str(log_dir), *flags], capture_output=True, text=True,
                          cwd=ROOT, env={"PYTHONPATH": ROOT, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
                          timeout=120)


def stream_values(log_dir: Path) -> list[tuple]:
    """Every (step, metric, value) in metrics.jsonl, sorted (line grouping may differ)."""
    triples = []
    for line in (log_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        step = record.pop("step")
        triples += [(step, name, value) for name, value in record.items()]
    return sorted(triples, key=lambda t: (t[0], t[1]))


def metrics_without_clock(log_dir: Path) -> dict:
    document = json.loads((log_dir / "metrics.json").read_text())
    for key in ("wall_time_s", "written_at", "log_dir", "run_id"):
        document["meta"].pop(key)
    return document


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    log_dir = tmp_path_factory.mktemp("reference")
    result = run_worker(log_dir)
    assert result.returncode == 0, result.stderr
    return log_dir


# 10 steps per epoch; 4 epochs. Kill points: mid-epoch between checkpoints, right at a checkpoint,
# at an epoch boundary, late in the run.
@pytest.mark.parametrize("kill_at", [6, 12, 21, 33])
def test_killed_and_resumed_run_matches_uninterrupted(tmp_path, uninterrupted, kill_at):
    killed = run_worker(tmp_path, "--kill-at-step", str(kill_at))
    assert killed.returncode == -signal.SIGKILL
    json.loads((tmp_path / "metrics.json").read_text())  # the last written metrics file is whole
    resumed = run_worker(tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    expected = load_checkpoint_file(uninterrupted / "final_model.pt")
    actual = load_checkpoint_file(tmp_path / "final_model.pt")
    for name, tensor in expected["model"].items():
        assert torch.equal(actual["model"][name], tensor), name
    assert actual["step"] == expected["step"] == 40
    assert metrics_without_clock(tmp_path) == metrics_without_clock(uninterrupted)
    assert stream_values(tmp_path) == stream_values(uninterrupted)  # no record from before the kill twice


def test_killed_at_a_random_moment_then_resumed_matches_uninterrupted(tmp_path):
    """A SIGKILL at a random moment of a longer run (possibly inside a checkpoint or metrics write)."""
    import random
    import time

    reference = tmp_path / "reference"
    assert run_worker(reference, "--epochs", "12").returncode == 0
    rng = random.Random(7)
    for attempt in range(2):
        log_dir = tmp_path / f"killed{attempt}"
        worker = subprocess.Popen([sys.executable, WORKER, str(log_dir), "--epochs", "12"], cwd=ROOT,
                                  env={"PYTHONPATH": ROOT, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
        trigger = log_dir / f"checkpoint_step_{4 * rng.randint(2, 20)}.pt"  # a random point in steps 8-80 of 120
        deadline = time.monotonic() + 60
        while not trigger.exists() and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.02))  # anywhere in the next few steps, writes included
        worker.kill()
        assert worker.wait() == -signal.SIGKILL  # it was killed mid-run, not finished
        resumed = run_worker(log_dir, "--epochs", "12", "--resume")
        assert resumed.returncode == 0, resumed.stderr
        expected = load_checkpoint_file(reference / "final_model.pt")
        actual = load_checkpoint_file(log_dir / "final_model.pt")
        for name, tensor in expected["model"].items():
            assert torch.equal(actual["model"][name], tensor), (attempt, name)
        assert metrics_without_clock(log_dir) == metrics_without_clock(reference)

