"""The three integration patterns of the original specification, each on the same small task.

1. Replace an existing training loop with `trainer.train(...)`.
2. Keep your own loop and use the trainer as a monitoring wrapper (`trainer.log_step`).
3. React during training with callbacks `fn(trainer, epoch, metrics)`.

usage: python examples/integration_example.py [--log-dir runs/integration] [--epochs 10] [--small]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn as nn
import torch.optim as optim
from torch.utils.data import DataLoader, TensorDataset

from phasetrain import PhaseTransitionTrainer, accuracy


def make_loaders(n: int) -> tuple[DataLoader, DataLoader]:
    """A noisy linear 3-class problem in 10-d, 80/20 split."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(n, 10, generator=generator)
    labels = (inputs @ torch.randn(10, 3, generator=generator) + 0.5 * torch.randn(n, 3, generator=generator)).argmax(1)
    split = int(0.8 * n)
    return (DataLoader(TensorDataset(inputs[:split], labels[:split]), batch_size=32, shuffle=True),
            DataLoader(TensorDataset(inputs[split:], labels[split:]), batch_size=128))


def new_model() -> tuple[nn.Module, optim.Optimizer, nn.Module]:
    model = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 3))
    return model, optim.Adam(model.parameters(), lr=3e-3), nn.CrossEntropyLoss()


def pattern_1_replace_loop(log_dir: Path, epochs: int, train_loader, val_loader) -> dict:
    """Instead of your custom training loop."""
    model, optimizer, loss_fn = new_model()
    trainer = PhaseTransitionTrainer(model, optimizer, loss_fn, log_dir=log_dir / "pattern1", overwrite=True)
    return trainer.train(train_loader, val_loader, num_epochs=epochs)


def pattern_2_monitoring_wrapper(log_dir: Path, epochs: int, train_loader) -> PhaseTransitionTrainer:
    """Keep your existing training loop, add monitoring."""
    model, optimizer, loss_fn = new_model()
    trainer = PhaseTransitionTrainer(model, optimizer, loss_fn, track_gradients=True, log_dir=log_dir / "pattern2",
                                     overwrite=True)
    step = 0
    for epoch in range(epochs):
        for batch_idx, (data, target) in enumerate(train_loader):
            optimizer.zero_grad()
            output = model(data)
            loss = loss_fn(output, target)
            loss.backward()
            grad_norm = trainer.grad_norm()  # global L2 norm of the gradients, before optimizer.step()
            optimizer.step()
            step += 1

            # Add monitoring
            if step % trainer.log_freq == 0:
                acc = accuracy(output, target)
                trainer._log_step(step, epoch, loss.item(), acc, grad_norm)
    trainer.finish()  # metrics.json complete and valid, the run folder released (log_step streams metrics.jsonl)
    return trainer


def pattern_3_callbacks(log_dir: Path, epochs: int, train_loader, val_loader) -> list[str]:
    """Custom callback for additional monitoring."""
    messages: list[str] = []

    def training_callback(trainer, epoch, metrics):
        if metrics["train_acc"] > 0.9:
            messages.append(f"High accuracy achieved at epoch {epoch}!")
        transitions = trainer.detect_phase_transitions(metric="train_loss")
        if transitions:
            messages.append(f"Phase transition detected at step {transitions[-1]}")

    model, optimizer, loss_fn = new_model()
    trainer = PhaseTransitionTrainer(model, optimizer, loss_fn, log_dir=log_dir / "pattern3", overwrite=True)
    trainer.train(train_loader, val_loader, num_epochs=epochs, callbacks=[training_callback])
    return messages


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-dir", default="runs/integration")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--small", action="store_true", help="a few seconds: 500 samples, 3 epochs")
    args = parser.parse_args(argv)
    if args.small:
        args.epochs, args.samples = 3, 500
    torch.manual_seed(0)
    log_dir = Path(args.log_dir)
    train_loader, val_loader = make_loaders(args.samples)

    results = pattern_1_replace_loop(log_dir, args.epochs, train_loader, val_loader)
    print(f"1. trainer.train: {results['total_training_steps']} steps, final val acc {results['final_val_acc']:.3f}")
    wrapped = pattern_2_monitoring_wrapper(log_dir, args.epochs, train_loader)
    print(f"2. own loop + log_step: {len(wrapped.history.steps('train_loss'))} records in "
          f"{wrapped.log_dir / 'metrics.json'}")
    messages = pattern_3_callbacks(log_dir, args.epochs, train_loader, val_loader)
    print("3. callbacks said:", *messages[:5], sep="\n   ")
    return {"results": results, "wrapped": wrapped, "messages": messages}


if __name__ == "__main__":
    main()
