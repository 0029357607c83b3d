"""Draw docs/images/compare.png: `phasetrain compare` on a synthetic weight-decay sweep in three formats.

Four grokking-shaped runs (validation accuracy jumps later the smaller the weight decay), written
by the libraries that really write them: two phasetrain run folders, a TensorBoard log with its
hyper-parameters, a Lightning CSVLogger folder with hparams.yaml. Then, as a reader would:

    phasetrain compare sweep/* --by weight_decay --out docs/images/compare.png

Run from the repository root: `python docs/images/make_compare.py [--out PATH]`.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from phasetrain.cli import main
from phasetrain.run.history import MetricHistory, save_metrics

SWEEP = {0.1: 2600, 0.3: 1500, 1.0: 800, 3.0: 420}
"""weight decay -> the step where validation accuracy jumps."""


def curve(jump: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps 10..4000 every 10; validation accuracy (a 40-step sigmoid at `jump`) and training loss."""
    rng = np.random.default_rng(seed)
    steps = np.arange(10, 4001, 10)
    val_acc = np.clip(0.01 + 0.97 / (1 + np.exp(-(steps - jump) / 40)) + rng.normal(0, 0.008, steps.size), 0, 1)
    return steps, val_acc, np.exp(-steps / 80) + 1e-3


def write_sweep(root: Path) -> list[Path]:
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.tensorboard import SummaryWriter

    runs = []
    for seed, (wd, jump) in enumerate(SWEEP.items()):
        steps, val_acc, loss = curve(jump, seed)
        if seed < 2:  # phasetrain run folders
            history = MetricHistory()
            for step, acc, train_loss in zip(steps.tolist(), val_acc.tolist(), loss.tolist()):
                history.log(step, {"val_acc": acc, "train_loss": train_loss})
            folder = root / f"phasetrain_wd{wd:g}"
            folder.mkdir(parents=True)
            save_metrics(folder / "metrics.json", history, {"config": {"weight_decay": wd}})
        elif seed == 2:  # TensorBoard
            folder = root / f"tensorboard_wd{wd:g}"
            with SummaryWriter(folder) as writer:
                for step, acc in zip(steps.tolist(), val_acc.tolist()):
                    writer.add_scalar("val_acc", acc, step)
                writer.add_hparams({"weight_decay": wd}, {"hparam/final_val_acc": float(val_acc[-1])})
        else:  # Lightning's CSVLogger
            logger = CSVLogger(root, name=f"lightning_wd{wd:g}")
            logger.log_hyperparams({"weight_decay": wd})
            for step, acc in zip(steps.tolist(), val_acc.tolist()):
                logger.log_metrics({"val_acc": acc}, step=step)
            logger.save()
            folder = Path(logger.log_dir)
        runs.append(folder)
    return runs


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images/compare.png"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = write_sweep(Path(tmp) / "sweep")
        raise SystemExit(main(["compare", *map(str, runs), "--metric", "val_acc", "--by", "weight_decay",
                               "--out", str(args.out)]))
