"""Grokking on modular addition, recorded and found by phasetrain.

A small network learns (a + b) mod p from a fraction of all p*p pairs. It memorises the training
pairs within about a hundred steps (train accuracy 1.0, validation accuracy near 0) and, under
weight decay, generalises only about ten times later, abruptly: validation accuracy jumps from
near 0 to near 1. This delayed jump is "grokking" (Power et al. 2022, "Grokking: Generalization
Beyond Overfitting on Small Algorithmic Datasets"). The setting follows Nanda et al. 2023
("Progress measures for grokking via mechanistic interpretability": AdamW, weight decay 1.0,
full batch, 30% of the pairs) and Gromov 2023 ("Grokking modular arithmetic": a one-hidden-layer
MLP over embeddings of a and b), made small enough for a laptop CPU: the learning rate is 1e-2
(not 1e-3), so that it groks within about 1,000 steps instead of 10,000.

The run goes through PhaseTransitionTrainer with gradient-norm, weight-norm and Hessian tracking
(top eigenvalue of the training-loss Hessian); at the end the detector's transition steps are
printed next to the step where validation accuracy first crossed 50%. Draw the picture with
`phasetrain report RUN_DIR`.

usage: python examples/grokking.py [--log-dir runs/grokking] [--steps 2000] [--p 113] [--seed 0]
                                   [--train-frac 0.3] [--small] [--device cpu]
"""
from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from torch import nn

from phasetrain import PhaseTransitionTrainer
from phasetrain.monitors.hessian import HessianMonitor

STEPS_PER_EPOCH = 10  # the full batch 10 times per "epoch": validation runs every 10 steps
STORY_METRICS = ("val_acc", "val_loss", "train_loss", "train_acc", "weight_norm", "grad_norm", "hessian_eig_1")


class ModularMLP(nn.Module):
    """Embeds a and b (shared table, `dim` each), concatenates them, one ReLU hidden layer, p logits.

    Input: integer tensor of shape (n, 2); output: logits of shape (n, p).
    """

    def __init__(self, p: int, dim: int = 64, hidden: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(p, dim)
        self.hidden = nn.Linear(2 * dim, hidden)
        self.out = nn.Linear(hidden, p)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        x = self.embed(pairs).flatten(1)
        return self.out(torch.relu(self.hidden(x)))


Split = tuple[torch.Tensor, torch.Tensor]


def modular_addition_split(p: int, train_frac: float, seed: int) -> tuple[Split, Split]:
    """All p*p pairs (a, b) with label (a + b) mod p, randomly split into train and validation.

    Returns ((pairs, labels), (pairs, labels)); pairs have shape (n, 2), labels shape (n,).
    """
    pairs = torch.cartesian_prod(torch.arange(p), torch.arange(p))
    labels = pairs.sum(1) % p
    order = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
    n_train = round(train_frac * p * p)
    train, val = order[:n_train], order[n_train:]
    return (pairs[train], labels[train]), (pairs[val], labels[val])


def first_crossing(steps: list[int], values: list[float], level: float) -> int | None:
    """The first recorded step whose value is >= `level`, or None if the curve never gets there."""
    return next((s for s, v in zip(steps, values) if v >= level), None)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-dir", default="runs/grokking", help="run folder (metrics.json, final and best model)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"full-batch optimizer steps, a multiple of {STEPS_PER_EPOCH}; default 2000, --small 800")
    parser.add_argument("--p", type=int, default=None, help="the modulus (a prime); default 113, --small 59")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model init and the train/validation split")
    parser.add_argument("--train-frac", type=float, default=None,
                        help="fraction of the p*p pairs trained on; default 0.3, --small 0.5")
    parser.add_argument("--hessian-freq", type=int, default=None,
                        help="steps between top-Hessian-eigenvalue measurements (each costs about 45 "
                             "training steps); default 100, --small 50")
    parser.add_argument("--hessian-budget", type=float, default=None, metavar="FRACTION",
                        help="let curvature take at most this fraction of training wall time (e.g. 0.05): the "
                             "monitor measures once it has earned a measurement's cost, denser while the "
                             "watched metrics move, at least --hessian-freq steps apart")
    parser.add_argument("--no-curvature", action="store_true", help="no Hessian monitor (a baseline for its cost)")
    parser.add_argument("--small", action="store_true",
                        help="a reduced run for CI (p=59, 50%% of pairs, 800 steps) that still groks")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads; the matrices are small, so one thread is fastest, and on a busy "
                             "2-core machine two threads made each step 15x slower (measured)")
    parser.add_argument("--quiet", action="store_true", help="print nothing (for tests)")
    args = parser.parse_args(argv)
    defaults = {"steps": (2000, 800), "p": (113, 59), "train_frac": (0.3, 0.5), "hessian_freq": (100, 50)}
    for name, (full, small) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if args.small else full)
    if args.steps < 1 or args.steps % STEPS_PER_EPOCH:
        parser.error(f"--steps must be a positive multiple of {STEPS_PER_EPOCH}, got {args.steps}")
    if args.threads < 1:
        parser.error(f"--threads must be a positive int, got {args.threads}")
    if args.hessian_freq < 1:
        parser.error(f"--hessian-freq must be a positive int, got {args.hessian_freq}")
    if args.p < 2:
        parser.error(f"--p must be an int >= 2, got {args.p}")
    if not 0.0 < args.train_frac < 1.0:
        parser.error(f"--train-frac must lie strictly between 0 and 1, got {args.train_frac}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train, detect and print; returns the memorisation and crossing steps, the detected steps
    per metric (and the Transition records), final accuracies, wall time (s), run folder, history."""
    args = parse_args(argv)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        result = run(args)
    finally:
        torch.set_num_threads(previous_threads)
    if not args.quiet:
        print(story(result))
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The training run and its read-out (see `main`)."""
    torch.manual_seed(args.seed)
    train, val = modular_addition_split(args.p, args.train_frac, args.seed)
    model = ModularMLP(args.p)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1.0, betas=(0.9, 0.98))
    curvature = HessianMonitor(method="eigenvalues", freq=args.hessian_freq, k=1, batches=[train],
                               budget=args.hessian_budget)
    trainer = PhaseTransitionTrainer(
        model, optimizer, nn.CrossEntropyLoss(), device=args.device, log_dir=args.log_dir,
        log_freq=10, checkpoint_freq=None, monitors=[] if args.no_curvature else [curvature], progress_bar=False,
        overwrite=True,  # running the example again replaces its previous run in the same folder
    )
    if not args.quiet:
        print(f"grokking: (a + b) mod {args.p}, {len(train[1])} training pairs ({args.train_frac:.0%}), "
              f"{len(val[1])} validation pairs, {args.steps} full-batch AdamW steps (weight decay 1.0)")
    started = time.perf_counter()
    status = trainer.train([train] * STEPS_PER_EPOCH, [val], num_epochs=args.steps // STEPS_PER_EPOCH)["status"]
    wall = time.perf_counter() - started
    history = trainer.history
    val_steps, val_acc = history.steps("val_acc").tolist(), history.values("val_acc").tolist()
    memorised = first_crossing(history.steps("train_acc").tolist(), history.values("train_acc").tolist(), 0.999)
    detected = {m: trainer.find_transitions(m, window_size=None) for m in STORY_METRICS if m in history}
    return {
        "val_acc_crossing_step": first_crossing(val_steps, val_acc, 0.5),
        "train_acc_full_step": memorised,
        "val_acc_when_memorised": None if memorised is None else max(
            v for s, v in zip(val_steps, val_acc) if s <= memorised),
        "detected": {m: [t.step for t in found] for m, found in detected.items()},
        "transitions": detected,
        "final_train_acc": history.last("train_acc"),
        "final_val_acc": history.last("val_acc"),
        "wall_time_s": wall,
        "status": status,
        "log_dir": str(trainer.log_dir),
        "history": history,
    }


def story(result: dict[str, Any]) -> str:
    """The end-of-run text: what happened, and where the detector put it."""
    memorised, crossing = result["train_acc_full_step"], result["val_acc_crossing_step"]
    lines = [f"\ntrained in {result['wall_time_s']:.1f} s ({result['status']}); run folder: {result['log_dir']}"]
    if memorised is None:
        lines.append("train accuracy never reached 100%: the network did not even memorise (try more --steps)")
    else:
        lines.append(f"memorised: train accuracy 100% at step {memorised}, "
                     f"validation accuracy up to then at most {result['val_acc_when_memorised']:.1%}")
    if crossing is None:
        lines.append(f"validation accuracy never crossed 50% (final {result['final_val_acc']:.1%}): "
                     "no grokking in this run")
    else:
        later = f", {crossing / memorised:.0f}x later" if memorised else ""
        lines.append(f"grokked: validation accuracy crossed 50% at step {crossing}{later} "
                     f"(final: train {result['final_train_acc']:.1%}, validation {result['final_val_acc']:.1%})")
    lines.append("detected transitions (step: level before -> after):")
    for metric, found in result["transitions"].items():
        described = ", ".join(f"{t.step} ({t.level_before:.3g} -> {t.level_after:.3g})" for t in found) or "none"
        lines.append(f"  {metric:<14} {described}")
    found = result["detected"].get("val_acc", [])
    if crossing is not None and found:
        nearest = min(found, key=lambda step: abs(step - crossing))
        lines.append(f"the detector puts the val_acc jump at step {nearest}: "
                     f"{abs(nearest - crossing)} steps from the 50% crossing")
    lines.append(f"draw it: phasetrain report {result['log_dir']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
