"""A small deterministic training run for the resume tests, run as a subprocess.

usage: python resume_worker.py LOG_DIR [--kill-at-step N] [--resume]
Dropout, a shuffled loader drawing from the global RNG, numpy and `random` draws in a callback,
Adam and a step scheduler: every stream a resume must restore is in use.
"""
from __future__ import annotations

import argparse
import os
import random
import signal

import numpy as np
import torch
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

from phasetrain import Callback, PhaseTransitionTrainer


class KillAt(Callback):
    """SIGKILL this process right after step `step` is logged (no clean-up can run)."""

    def __init__(self, step: int | None) -> None:
        self.step = step

    def on_log(self, trainer, step, metrics):
        if step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class DrawsFromGlobalRngs(Callback):
    """Consumes numpy and Python RNG each epoch and logs the draws, so lost RNG state shows in metrics."""

    def on_epoch_end(self, trainer, epoch, metrics):
        trainer.log_metrics(trainer.state.step, {"np_draw": float(np.random.rand()), "py_draw": random.random()})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("log_dir")
    parser.add_argument("--kill-at-step", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    data_generator = torch.Generator().manual_seed(123)
    inputs = torch.randn(200, 6, generator=data_generator)
    targets = (inputs.sum(dim=1) > 0).long()
    train = DataLoader(TensorDataset(inputs[:160], targets[:160]), batch_size=16, shuffle=True)
    val = DataLoader(TensorDataset(inputs[160:], targets[160:]), batch_size=20)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 2))
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.7)
    trainer = PhaseTransitionTrainer(model, optimizer, nn.CrossEntropyLoss(), log_dir=args.log_dir, log_freq=3,
                                     checkpoint_freq=4, scheduler=scheduler, scheduler_interval="step",
                                     early_stopping_patience=10, progress_bar=False, device="cpu")
    trainer.train(train, val, num_epochs=args.epochs, callbacks=[DrawsFromGlobalRngs(), KillAt(args.kill_at_step)],
                  resume_from="latest" if args.resume else None)


if __name__ == "__main__":
    main()
