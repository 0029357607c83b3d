"""Worker for the two-process DDP test (gloo on CPU): each rank trains on its shard, then rank 0
saves what the test compares (and each rank its history). Spawned by tests/test_scale.py."""
from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist
from torch import nn, optim
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset


def dataset(n: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, 6, generator=generator)
    return TensorDataset(inputs, (inputs[:, 0] + inputs[:, 1] > 0).long())


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2))


def run(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from phasetrain import PhaseTransitionTrainer

        train_set, val_set = dataset(64, 1), dataset(32, 2)
        train = DataLoader(train_set, batch_size=8, sampler=DistributedSampler(train_set, shuffle=False))
        val = DataLoader(val_set, batch_size=8, sampler=DistributedSampler(val_set, shuffle=False))
        net = model()
        trainer = PhaseTransitionTrainer(net, optim.SGD(net.parameters(), lr=0.5), nn.CrossEntropyLoss(),
                                         log_dir=os.path.join(out_dir, f"rank{rank}"), log_freq=2, checkpoint_freq=4,
                                         progress_bar=False, device="cpu", track_hessian=True,
                                         hessian_method="eigenvalues", hessian_k=1, hessian_freq=4)
        trainer.train(train, val, num_epochs=3)
        with open(os.path.join(out_dir, f"history{rank}.json"), "w") as f:  # what code on every rank sees
            json.dump(trainer.history.to_dict(), f)
        assert isinstance(trainer.model, nn.parallel.DistributedDataParallel)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    run(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    # leave without the interpreter's C++ teardown, which can abort while gloo's threads wind down
    # ("terminate called without an active exception"); everything is written and closed by now
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
