"""Basic usage of PhaseTransitionTrainer: the Quick Start of the original specification on a task made in the script.

A two-layer MLP learns a noisy 4-class problem (Gaussian clusters in 20 dimensions). The trainer
records losses, accuracies, gradient norm, weight norm and Hessian diagonal statistics, saves
checkpoints, and reports where the curves change abruptly.

usage: python examples/training_wrapper_demo.py [--log-dir runs/my_experiment] [--epochs 30] [--small]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn as nn
import torch.optim as optim
from torch.utils.data import DataLoader, TensorDataset

from phasetrain import PhaseTransitionTrainer


def make_data(n: int, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """Four Gaussian clusters in 20-d with 10% label noise; 80/20 train/validation split."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 20, generator=generator) * 1.5
    labels = torch.randint(0, 4, (n,), generator=generator)
    inputs = centres[labels] + torch.randn(n, 20, generator=generator) * 2.0
    noisy = torch.rand(n, generator=generator) < 0.1
    labels = torch.where(noisy, torch.randint(0, 4, (n,), generator=generator), labels)
    split = int(0.8 * n)
    return TensorDataset(inputs[:split], labels[:split]), TensorDataset(inputs[split:], labels[split:])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-dir", default="runs/my_experiment")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--small", action="store_true", help="a few seconds: 600 samples, 4 epochs")
    args = parser.parse_args(argv)
    if args.small:
        args.epochs, args.samples = 4, 600
    torch.manual_seed(0)

    train_set, val_set = make_data(args.samples)
    train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
    val_loader = DataLoader(val_set, batch_size=256)
    model = nn.Sequential(nn.Linear(20, 128), nn.ReLU(), nn.Linear(128, 4))
    optimizer = optim.Adam(model.parameters(), lr=0.001)
    loss_fn = nn.CrossEntropyLoss()

    trainer = PhaseTransitionTrainer(
        model=model,
        optimizer=optimizer,
        loss_fn=loss_fn,
        track_gradients=True,
        track_hessian=True,
        hessian_method="diagonal",
        hessian_freq=50,
        log_dir=args.log_dir,
        checkpoint_freq=100,
        log_freq=10,
        overwrite=True,  # running the demo again replaces its previous run in the same folder
    )
    results = trainer.train(train_loader=train_loader, val_loader=val_loader, num_epochs=args.epochs)

    transitions = trainer.detect_phase_transitions()
    print(f"Phase transitions detected at steps: {transitions}")
    summary = trainer.get_training_summary()
    print(f"Final accuracy: {summary['final_train_acc']:.3f}")
    print(f"Phase transitions: { {m: [t['step'] for t in ts] for m, ts in summary['phase_transitions'].items()} }")
    print(f"Total steps: {summary['total_training_steps']}")
    print(f"Run folder: {args.log_dir} (plot it with: phasetrain report {args.log_dir})")
    return results


if __name__ == "__main__":
    main()
