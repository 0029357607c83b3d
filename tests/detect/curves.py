"""Synthetic training curves with known transitions, shared by the detector tests."""
from __future__ import annotations

import numpy as np


def sigmoid(t: np.ndarray, centre: float, width: float) -> np.ndarray:
    """0 -> 1 logistic whose 10%..90% rise takes `width` steps."""
    return 1.0 / (1.0 + np.exp(np.clip(-(t - centre) * (4.394 / width), -50, 50)))


def grokking_val_acc(seed: int = 0, n: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """val_acc of a grokking run: ~0.01 and noisy, then a sigmoid rise to ~1.0 at step 2000."""
    rng = np.random.default_rng(seed)
    t = np.arange(1, n + 1)
    clean = 0.01 + 0.98 * sigmoid(t, 2000, 300)
    noise = rng.normal(0, 0.004 + 0.01 * clean * (1 - clean) * 4, n)
    return t, np.clip(clean + noise, 0.0, 1.0)


def power_law_loss(t: np.ndarray, rng: np.random.Generator, noise: float = 0.05) -> np.ndarray:
    """A train_loss ~ (t/10 + 1)^-0.5 with multiplicative noise (shrinks with the loss)."""
    return 2.5 * (t / 10 + 1) ** -0.5 * np.exp(rng.normal(0, noise, t.size))
