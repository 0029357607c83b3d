"""Scale: gradient accumulation, mixed precision, and DDP on CPU with gloo."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn, optim
from torch.utils.data import DataLoader

from phasetrain import PhaseTransitionTrainer
from phasetrain.run.checkpoints import load_checkpoint_file
from tests.conftest import make_mlp
from tests.loop import ddp_worker

ROOT = Path(__file__).resolve().parents[2]


def train(tmp_path, batches, **kwargs):
    model = make_mlp()
    trainer = PhaseTransitionTrainer(model, optim.SGD(model.parameters(), lr=0.3), nn.CrossEntropyLoss(),
                                     log_dir=tmp_path, progress_bar=False, checkpoint_freq=None, **kwargs)
    trainer.train(batches, num_epochs=2)
    return trainer


def test_accumulating_k_batches_equals_one_batch_k_times_larger(tmp_path):
    generator = torch.Generator().manual_seed(0)
    small = [(torch.randn(8, 8, generator=generator), torch.randint(0, 3, (8,), generator=generator))
             for _ in range(12)]
    large = [(torch.cat([x for x, _ in small[i:i + 4]]), torch.cat([y for _, y in small[i:i + 4]]))
             for i in range(0, 12, 4)]
    accumulated = train(tmp_path / "a", small, accumulate_grad_batches=4, log_freq=1)
    reference = train(tmp_path / "b", large, log_freq=1)
    assert accumulated.state.step == reference.state.step == 6
    for a, b in zip(accumulated.model.parameters(), reference.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for name in ("train_loss", "train_acc", "grad_norm"):
        assert accumulated.history.steps(name).tolist() == reference.history.steps(name).tolist()
        torch.testing.assert_close(torch.tensor(accumulated.history.values(name)),
                                   torch.tensor(reference.history.values(name)), rtol=1e-5, atol=1e-6)


def test_accumulation_steps_the_epochs_trailing_partial_group(tmp_path):
    batches = [(torch.randn(4, 8), torch.randint(0, 3, (4,))) for _ in range(5)]
    trainer = train(tmp_path, batches, accumulate_grad_batches=2, log_freq=1)
    assert trainer.state.step == 6  # 3 updates an epoch: 2 + 2 + 1 batches


def test_bf16_autocast_runs_the_forward_in_bfloat16_and_keeps_float32_weights(tmp_path):
    dtypes = []
    model = make_mlp()
    model[0].register_forward_hook(lambda module, args, output: dtypes.append(output.dtype))
    trainer = PhaseTransitionTrainer(model, optim.SGD(model.parameters(), lr=0.3), nn.CrossEntropyLoss(), device="cpu",
                                     log_dir=tmp_path, progress_bar=False, precision="bf16", log_freq=2)
    batches = [(torch.randn(16, 8), torch.randint(0, 3, (16,))) for _ in range(4)]
    trainer.train(batches, batches[:1], num_epochs=2)
    assert set(dtypes) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert "val_loss" in trainer.history and all(v == v for v in trainer.history.values("train_loss"))


def test_fp16_logs_the_unscaled_gradient_norm(tmp_path):
    batches = [(torch.randn(16, 8), torch.randint(0, 3, (16,))) for _ in range(4)]
    fp16 = train(tmp_path / "a", batches, precision="fp16", log_freq=1)
    fp32 = train(tmp_path / "b", batches, log_freq=1)
    assert fp16._update.scaler is not None and fp16._update.scaler.get_scale() > 1000  # loss really was scaled
    first16, first32 = fp16.history.values("grad_norm")[0], fp32.history.values("grad_norm")[0]
    assert first16 == pytest.approx(first32, rel=2e-2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_matches_single_process_over_the_same_global_batches(tmp_path):
    port = free_port()
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([sys.executable, "-m", "tests.loop.ddp_worker", str(rank), "2", str(port),
                                 str(tmp_path)],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for rank in (0, 1)]
    for worker in workers:
        _, err = worker.communicate(timeout=180)
        assert worker.returncode == 0, err

    # single process: DistributedSampler(shuffle=False) gives rank r the indices r, r+2, ...; each
    # pair of rank batches of 8 is therefore global batch i of 16 consecutive samples.
    net = ddp_worker.model()
    reference = PhaseTransitionTrainer(net, optim.SGD(net.parameters(), lr=0.5), nn.CrossEntropyLoss(), device="cpu",
                                       log_dir=tmp_path / "single", log_freq=2, checkpoint_freq=4, progress_bar=False)
    reference.train(DataLoader(ddp_worker.dataset(64, 1), batch_size=16),
                    DataLoader(ddp_worker.dataset(32, 2), batch_size=16), num_epochs=3)

    assert not (tmp_path / "rank1").exists()  # rank 1 writes nothing
    final = load_checkpoint_file(tmp_path / "rank0" / "final_model.pt")
    assert final["step"] == reference.state.step == 12
    for name, tensor in reference.module.state_dict().items():
        torch.testing.assert_close(final["model"][name], tensor, rtol=1e-5, atol=1e-6)
    ddp_metrics = json.loads((tmp_path / "rank0" / "metrics.json").read_text())["metrics"]
    for name in ("train_loss", "train_acc", "grad_norm", "val_loss", "val_acc"):
        single = reference.history
        assert ddp_metrics[name]["steps"] == single.steps(name).tolist(), name
        torch.testing.assert_close(torch.tensor(ddp_metrics[name]["values"], dtype=torch.float64),
                                   torch.tensor(single.values(name)), rtol=1e-5, atol=1e-6)
    rank0, rank1 = (json.loads((tmp_path / f"history{rank}.json").read_text()) for rank in (0, 1))
    assert rank0 == rank1 and "hessian_eig_1" in rank0 and "weight_norm" in rank0  # every rank the same
    assert rank0["hessian_eig_1"]["steps"] == [4, 8, 12]
    assert sorted(p.name for p in (tmp_path / "rank0").glob("checkpoint_step_*.pt")) == [
        "checkpoint_step_12.pt", "checkpoint_step_4.pt", "checkpoint_step_8.pt"]
