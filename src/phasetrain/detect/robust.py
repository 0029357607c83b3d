"""Robust building blocks: a spike-removing median filter and a local noise scale."""
from __future__ import annotations

import numpy as np

MAD_TO_SIGMA = 1.4826  # sigma = 1.4826 * MAD for Gaussian noise
MEAN_ABS_TO_SIGMA = 1.2533  # sigma = sqrt(pi/2) * E|x| for Gaussian noise
NOISE_BLOCK = 64  # points per block of the local noise estimate
QUANTUM_SAMPLE = 20_000  # values inspected to find the grid step of quantised values


# An optimal sorting network for 7 values (16 compare-exchanges); after it, lane 3 is the median.
SORT7 = ((0, 6), (2, 3), (4, 5), (0, 2), (1, 4), (3, 6), (0, 1), (2, 5), (3, 4), (1, 2), (4, 6),
         (2, 3), (4, 5), (1, 2), (3, 4), (5, 6))


def median7(y: np.ndarray) -> np.ndarray:
    """Running median over 7 points (reflected at the ends), shape (n,).

    Removes spikes of up to 3 consecutive points and keeps steps sharp. Computed with a
    vectorised sorting network (no per-window sort), O(n). Curves shorter than 7 points are
    returned unchanged.
    """
    if y.size < 7:
        return y.copy()
    padded = np.pad(y, 3, mode="reflect")
    lanes = [padded[i : i + y.size] for i in range(7)]
    for a, b in SORT7:
        lanes[a], lanes[b] = np.minimum(lanes[a], lanes[b]), np.maximum(lanes[a], lanes[b])
    return lanes[3]


def noise_variance(t: np.ndarray, y: np.ndarray, offset: int = 0) -> np.ndarray:
    """Per-point variance of the noise around the local trend, shape (n,).

    Uses the residual of each point from the straight line through its two neighbours
    (exact for linear trends, any step spacing), scaled to the noise sigma, then a robust
    scale (MAD) per block of NOISE_BLOCK points, smoothed by a median over neighbouring
    blocks so one transition cannot inflate its block. Heteroscedastic noise (noise that
    shrinks as the loss does) gets its own level per block. `offset` is the index of y[0] in
    the whole curve: blocks are aligned to it, so a window of a longer curve gets the same
    blocks as the curve (a partial block at either end uses its NOISE_BLOCK nearest residuals).
    """
    n = y.size
    if n < 3:
        return np.zeros(n)
    dt_left, dt_right = t[1:-1] - t[:-2], t[2:] - t[1:-1]
    w_left = dt_right / (dt_left + dt_right)
    w_right = 1.0 - w_left
    residual = np.abs(y[1:-1] - (w_left * y[:-2] + w_right * y[2:])) / np.sqrt(1.0 + w_left**2 + w_right**2)
    size = NOISE_BLOCK
    head = min((-offset) % size, residual.size)
    full = (residual.size - head) // size
    tail = residual.size - head - full * size
    chunks = [residual[:size]] if head else []
    sigma = [block_sigma(residual[head : head + full * size].reshape(full, size))]
    if tail:
        sigma.append(block_sigma(residual[-size:][None, :]))
    if head:
        sigma.insert(0, block_sigma(chunks[0][None, :]))
    sigma = np.concatenate(sigma)
    if sigma.size >= 3:
        padded = np.pad(sigma, 1, mode="edge")
        sigma = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)
    r = np.clip(np.arange(n) - 1, 0, residual.size - 1)
    block = np.where(r < head, 0, (r - head) // size + (1 if head else 0))
    return sigma[np.minimum(block, sigma.size - 1)] ** 2


def block_sigma(chunks: np.ndarray) -> np.ndarray:
    """Robust sigma of each row of absolute residuals, shape (blocks,)."""
    sigma = MAD_TO_SIGMA * np.median(chunks, axis=1)
    fallback = MEAN_ABS_TO_SIGMA * chunks.mean(axis=1)  # quantised values can have MAD = 0
    return np.where(sigma > 0, sigma, fallback)


# A grid is read from at least this many distinct values: one more than the 5 grid steps a change of
# quantised values must span (candidates.MIN_QUANTA), so a two-level step is never its own grid.
GRID_LEVELS = 6


def quantum(values: np.ndarray) -> float:
    """The grid step of values that take few distinct levels, else 0.

    Accuracy on a finite validation set moves in steps of 1/size, and rounded logs in steps
    of the last digit; such a curve is flat to the last digit for long stretches, where
    the residual noise is exactly 0. Decided on an evenly strided sample of at most
    QUANTUM_SAMPLE values: quantised when at most half of them are distinct, and at least
    GRID_LEVELS are (a clean staircase of a few levels is a curve with changes, not a grid).
    """
    sample = values[:: max(1, values.size // QUANTUM_SAMPLE)]
    levels = np.unique(sample)
    if levels.size < GRID_LEVELS or levels.size > sample.size // 2:
        return 0.0
    gaps = np.diff(levels)
    gaps = gaps[gaps > 1e-9 * (levels[-1] - levels[0])]
    return float(gaps.min()) if gaps.size else 0.0


def noise_floor(y: np.ndarray, log: bool, grid: float, value_range: float) -> np.ndarray:
    """Least noise variance per point, shape (n,) or scalar: the rounding noise of a grid of
    step `grid` (variance grid^2 / 12, mapped to log units when `log`), and 1e-9 of the range."""
    floor = (1e-9 * value_range) ** 2
    if grid <= 0:
        return np.full(y.shape, floor)
    rounding = grid * grid / 12.0
    return np.maximum(rounding / np.exp(2 * y) if log else np.full(y.shape, rounding), floor)


# An accuracy (quantised values within [0, 1]) is measured against at least this range, so a
# change must move it by min_relative_magnitude * 0.2 = 1 percentage point by default: 1 -> 12
# correct of 8,939 validation examples (0.01% -> 0.13%) is not a transition, however clean.
ACCURACY_RANGE_FLOOR = 0.2


def range_floor(low: float, high: float, log: bool, grid: float) -> float:
    """The least range a curve's changes are measured against: ACCURACY_RANGE_FLOOR for
    accuracy-like curves (linear scale, grid step `grid` > 0, all values in [low, high]
    within [0, 1]), else 0."""
    return ACCURACY_RANGE_FLOOR if not log and grid > 0 and low >= 0 and high <= 1 else 0.0
