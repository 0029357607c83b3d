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


def eos_sharpness(seed: int = 0, n: int = 3000, arrival: int = 1200,
                  oscillate: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """hessian_eig_1 of a full-batch run at the edge of stability (lr = 0.05, 2/lr = 40).

    Progressive sharpening: a slightly convex rise from 5 to 40 that arrives at 2/lr at step
    `arrival`; then (oscillate=True) sharpness hovers at 2/lr in bumps of 30..100 steps
    reaching 2..15% above and below it, as it does at the edge of stability; else it stays flat.
    Noise: 0.2% of the level per record.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(1, n + 1)
    u = np.clip(t / arrival, 0, 1)
    clean = 5.0 + 35.0 * u ** 1.3
    if oscillate:
        wave = np.zeros(n)
        at = arrival
        while at < n:
            period = int(rng.integers(30, 101))
            height = rng.uniform(0.02, 0.15) * 40.0 * rng.choice([-1, 1])
            seg = np.arange(period)
            wave[at : at + period] = (height * np.sin(np.pi * seg / period))[: max(0, n - at)]
            at += period
        clean = clean + wave
    return t, clean * (1 + rng.normal(0, 0.002, n))



def eos_sawtooth_sharpness(seed: int = 0, arrival: int = 900, periods: tuple[int, int] = (25, 31),
                           jitter: float = 0.0001, overshoot: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """hessian_eig_1 of a short full-batch run at the edge of stability, shaped as measured by
    examples/edge_of_stability.py (sharpness every 5 steps, 300 records, steps 5..1500, 2/lr = 20).

    Progressive sharpening: a concave rise from 8 that reaches 2/lr at step `arrival` and
    overshoots by `overshoot` x 2/lr over the next 40 steps; then the sharpness collapses to
    2/lr within one record and hovers there in irregular sawtooth bumps: rises of 4-10% of
    2/lr over `periods` records (drawn per bump, upper bound excluded), each followed by a
    fall within one record (self-stabilisation). Noise: `jitter` x 2/lr per record (the example's curves: 0.01% at
    lr 0.1, whose bumps take 25-30 records; 0.6% at lr 0.15, 10-14 records).
    """
    rng = np.random.default_rng(seed)
    limit = 20.0
    t = np.arange(5, 1505, 5)
    clean = 8.0 + (limit - 8.0) * (1 - (1 - np.minimum(t / arrival, 1)) ** 1.5)
    rising = (t > arrival) & (t <= arrival + 40)
    clean[rising] = limit * (1 + overshoot * (t[rising] - arrival) / 40)
    at = arrival + 40
    while at < t[-1]:
        period = int(rng.integers(*periods)) * 5
        height = rng.uniform(0.04, 0.10) * limit
        bump = (t > at) & (t <= at + period)
        clean[bump] = limit + height * ((t[bump] - at) / period - 0.5)
        at += period
    return t, clean + rng.normal(0, jitter * limit, t.size)


def spiking_loss(seed: int = 0, start: int = 320, stop: int | None = None, heights: tuple[float, float] = (0.03, 0.07),
                 noise: float = 0.001) -> tuple[np.ndarray, np.ndarray]:
    """train_loss of a full-batch run whose short spikes keep coming, shaped as measured by
    examples/edge_of_stability.py at lr 0.15 (300 records, steps 5..1500).

    A steep early decay from 0.4 that flattens towards 0.1; from step `start` (to step `stop`,
    None: the end) every 40-60 steps a spike of 1-2 records, `heights` (fractions of the level)
    above the trend, and after it a dip of 2-3 records 1-2% below it. Multiplicative noise:
    `noise` per record.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(5, 1505, 5)
    y = 0.1 + 0.3 * (t / 5) ** -0.5
    at = start
    while at < (t[-1] if stop is None else stop):
        i = int(np.searchsorted(t, at))
        width = int(rng.integers(1, 3))
        y[i : i + width] *= 1 + rng.uniform(*heights)
        y[i + width : i + width + int(rng.integers(2, 4))] *= 1 - rng.uniform(0.01, 0.02)
        at += 5 * int(rng.integers(8, 13))
    return t, y * np.exp(rng.normal(0, noise, t.size))
