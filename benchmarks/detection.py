"""Phase-transition detection measured on synthetic training curves with known transitions.

Each curve mimics a logged training metric: a loss (positive, power-law or exponential decay,
multiplicative noise that shrinks with the loss, transitions are drops by a factor), an accuracy
(bounded in [0, 1], saturating, transitions are rises) or a generic metric (flat or linear trend,
additive noise that may shrink over the run). Curves have 0-3 transitions (sigmoids of random
width, up to 3% of the run), optional 1-3 point spikes, NaNs and irregular steps (val every
few steps). All detectors run untuned on the same curves, losses on a log scale for everyone:
phasetrain's `detect_transitions` (window_size=None, and the original specification's 50 and 100) and ruptures'
PELT, Binseg and Window (l2 cost, BIC penalty pen = 2 sigma^2 log n, sigma = MAD of first
differences / 0.6745 / sqrt 2). ruptures runs only on curves up to --ruptures-max points
(PELT to --pelt-max): beyond that it takes seconds to minutes per curve.

A detection matches a true transition (one-to-one, nearest first) when it lies within the
tolerance max(transition width (10%..90%), 1% of the run, 2 recording intervals) of its centre.

Phenomenon families (`family_suite`, --family-curves per family) score the new kinds:
kinks (a trend that bends: piecewise-linear trends and progressive sharpening levelling off;
tolerance 5% of the run), oscillating regimes (edge-of-stability bumps and loss-spike trains
after a quiet start: one true event, the regime's start, tolerance 5% of the run), changes
near the start (a jump at the 5th-20th record), short white-noise mean shifts (a segment of
100-500 points shifted by 1-3 sigma and back: two changes), cyclic series without changes
(sinusoids and triangle waves: no true event) and spike trains (a loss whose short spikes keep
coming from 30-60% of the run, as the edge-of-stability example's train_loss at lr 0.15: one
true event, the first spike, tolerance 5% of the run). phasetrain runs with levels only and
with all kinds (level, slope, regime); ruptures as above (PELT also with its continuous
piecewise-linear cost "clinear" on kinks).

Run: python benchmarks/detection.py [--small] [--curves N] [--family-curves N] [--seed S]
Writes a table to stdout and benchmarks/results/detection.json; `--tables JSON` prints the
markdown tables of a results file (as in docs/detection.md).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from phasetrain.detect import OnlineDetector, detect_transitions
from phasetrain.detect.prepare import reads_as_log

RESULTS = Path(__file__).resolve().parent / "results" / "detection.json"
ALL_KINDS = ("level", "slope", "regime")


@dataclass
class SyntheticCurve:
    """A curve with its true transition centres (steps) and widths (10%..90%, steps)."""

    kind: str
    steps: np.ndarray
    values: np.ndarray
    centres: list[float]
    widths: list[float]
    spacing: float = field(default=1.0)
    tolerance_fraction: float | None = None  # families scored within a fixed fraction of the run


def _sigmoid(t: np.ndarray, centre: float, width: float) -> np.ndarray:
    arg = np.clip(-(t - centre) * (4.394 / max(width, 1e-9)), -60, 60)
    return 1.0 / (1.0 + np.exp(arg))


def _steps(rng: np.random.Generator, n: int) -> tuple[np.ndarray, float]:
    """Regular steps every log_freq, or irregular ones (e.g. val once per uneven epoch)."""
    if rng.random() < 0.25:
        gaps = rng.integers(1, 2 * int(rng.choice([5, 20, 100])), n)
        return np.cumsum(gaps).astype(np.int64), float(np.median(gaps))
    freq = int(rng.choice([1, 1, 10, 50]))
    return np.arange(1, n + 1, dtype=np.int64) * freq, float(freq)


def _transitions(rng: np.random.Generator, t: np.ndarray, spacing: float) -> tuple[list[float], list[float]]:
    """0-3 centres, 15% of the run apart and 12% from its ends; widths 1 step .. 3% of the run."""
    span = float(t[-1] - t[0])
    count = int(rng.choice([0, 1, 1, 2, 3]))
    centres: list[float] = []
    for _ in range(200):
        if len(centres) == count:
            break
        c = t[0] + span * rng.uniform(0.12, 0.88)
        if all(abs(c - o) > 0.15 * span for o in centres):
            centres.append(float(c))
    centres.sort()
    widths = [float(math.exp(rng.uniform(math.log(spacing), math.log(0.03 * span)))) for _ in centres]
    return centres, widths


def make_curve(rng: np.random.Generator, n: int) -> SyntheticCurve:
    """One random training curve of n points (see the module docstring)."""
    t, spacing = _steps(rng, n)
    tf = t.astype(np.float64)
    span = tf[-1] - tf[0]
    centres, widths = _transitions(rng, tf, spacing)
    kind = str(rng.choice(["loss", "accuracy", "generic"]))
    u = (tf - tf[0]) / span  # 0..1 over the run
    snr = rng.uniform(4, 40)  # smallest transition / per-point noise
    if kind == "loss":
        trend = str(rng.choice(["power", "exp", "flat"]))
        decades = rng.uniform(0.3, 2.5)
        if trend == "power":
            alpha = rng.uniform(0.3, 1.0)
            t0 = span * rng.uniform(0.002, 0.05)
            log_y = -alpha * np.log1p((tf - tf[0]) / t0)
            log_y *= decades * math.log(10) / max(-log_y[-1], 1e-9)
        elif trend == "exp":
            log_y = -decades * math.log(10) * (1 - np.exp(-u / rng.uniform(0.1, 0.6)))
        else:
            log_y = np.zeros_like(u)
        drops = rng.uniform(math.log(1.5), math.log(10), len(centres))
        for c, w, d in zip(centres, widths, drops):
            log_y -= d * _sigmoid(tf, c, w)
        sigma = (drops.min() if len(drops) else rng.uniform(0.1, 1.0)) / snr
        values = np.exp(math.log(rng.uniform(0.5, 5)) + log_y + rng.normal(0, sigma, n))
    elif kind == "accuracy":
        start, top = rng.uniform(0.0, 0.3), rng.uniform(0.7, 1.0)
        pieces = len(centres) + 1  # each transition is at least 15% of the total rise
        rises = (0.15 + (1 - 0.15 * pieces) * rng.dirichlet(np.ones(pieces))) * (top - start)
        trend = str(rng.choice(["saturating", "flat"]))
        if centres:
            clean = (start + rises[-1] * (1 - np.exp(-u / rng.uniform(0.05, 0.5))) if trend == "saturating"
                     else np.full(n, start))
            clean = clean + sum(r * _sigmoid(tf, c, w) for r, c, w in zip(rises[:-1], centres, widths))
            smallest = float(rises[:-1].min())
        else:
            clean = (start + (top - start) * (1 - np.exp(-u / rng.uniform(0.05, 0.5))) if trend == "saturating"
                     else np.full(n, start))
            smallest = rng.uniform(0.05, 0.5)
        # binomial-like noise: largest at 0.5, small near 0 and 1
        sigma = smallest / snr
        noise = rng.normal(0, 1, n) * sigma * (0.3 + 2 * np.sqrt(np.clip(clean * (1 - clean), 0, None)))
        values = np.clip(clean + noise, 0.0, 1.0)
        values = np.round(values, int(rng.choice([3, 4, 6])))  # accuracy on a finite val set
    else:
        trend = str(rng.choice(["flat", "linear"]))
        level = rng.uniform(-5, 5) + (rng.uniform(-3, 3) * u if trend == "linear" else 0)
        jumps = rng.uniform(0.5, 3, len(centres)) * rng.choice([-1, 1], len(centres))
        clean = level + sum(j * _sigmoid(tf, c, w) for j, c, w in zip(jumps, centres, widths))
        sigma = (np.abs(jumps).min() if len(jumps) else rng.uniform(0.1, 1)) / snr
        shrink = np.exp(-u * rng.uniform(0, 3)) if rng.random() < 0.5 else 1.0
        values = clean + rng.normal(0, 1, n) * sigma * shrink
    spread = float(np.std(values)) or 1.0
    if rng.random() < 0.3:  # 1-3 point spikes
        for at in rng.choice(n - 3, int(rng.integers(1, 6)), replace=False):
            width = int(rng.integers(1, 4))
            if kind == "loss":
                values[at : at + width] *= rng.uniform(2, 5)
            else:
                values[at : at + width] += rng.uniform(3, 8) * spread * rng.choice([-1, 1])
        if kind == "accuracy":
            values = np.clip(values, 0, 1)
    if rng.random() < 0.1:
        values[rng.choice(n, max(1, n // 50), replace=False)] = np.nan
    return SyntheticCurve(kind, t, values, centres, widths, spacing)


def tolerance(curve: SyntheticCurve, width: float) -> float:
    span = float(curve.steps[-1] - curve.steps[0])
    if curve.tolerance_fraction is not None:
        return curve.tolerance_fraction * span
    return max(width, 0.01 * span, 2 * curve.spacing)


def match(curve: SyntheticCurve, found: list[float]) -> tuple[int, list[float]]:
    """Greedy one-to-one matching, nearest pairs first: (true positives, |errors| in steps)."""
    pairs = sorted(
        (abs(f - c), i, j)
        for i, (c, w) in enumerate(zip(curve.centres, curve.widths))
        for j, f in enumerate(found)
        if abs(f - c) <= tolerance(curve, w)
    )
    used_true, used_found, errors = set(), set(), []
    for err, i, j in pairs:
        if i not in used_true and j not in used_found:
            used_true.add(i)
            used_found.add(j)
            errors.append(err)
    return len(errors), errors


def _log_if_loss(curve: SyntheticCurve) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(curve.values)
    t, y = curve.steps[keep], curve.values[keep]
    return t, (np.log(y) if reads_as_log(y) else y)


def ruptures_detector(name: str, model: str = "l2"):
    """A ruptures search method with the BIC penalty, returning change steps."""
    import ruptures as rpt

    def run(curve: SyntheticCurve) -> list[float]:
        t, y = _log_if_loss(curve)
        sigma = np.median(np.abs(np.diff(y) - np.median(np.diff(y)))) / 0.6745 / math.sqrt(2)
        pen = 2 * max(sigma, 1e-12) ** 2 * math.log(y.size)
        signal = y.reshape(-1, 1)
        if name == "pelt":
            algo = rpt.Pelt(model=model, min_size=2, jump=1).fit(signal)
        elif name == "binseg":
            algo = rpt.Binseg(model=model, min_size=2, jump=1).fit(signal)
        else:
            algo = rpt.Window(model=model, width=max(10, 2 * (y.size // 100)), jump=1).fit(signal)
        ends = algo.predict(pen=pen)[:-1]
        return [float(t[i]) for i in ends]

    return run


def phasetrain_detector(window_size: float | None, kinds: tuple[str, ...] = ("level",)):
    def run(curve: SyntheticCurve) -> list[float]:
        return [float(tr.step) for tr in detect_transitions(curve.values, curve.steps, window_size, kinds=kinds)]

    return run


@dataclass
class Score:
    tp: int = 0
    n_true: int = 0
    n_found: int = 0
    fp_free: int = 0
    free_curves: int = 0
    errors: list = field(default_factory=list)
    rel_errors: list = field(default_factory=list)
    seconds: float = 0.0
    curves: int = 0
    unmatched: int = 0

    def add(self, curve: SyntheticCurve, found: list[float], seconds: float) -> None:
        tp, errors = match(curve, found)
        span = float(curve.steps[-1] - curve.steps[0])
        self.tp += tp
        self.n_true += len(curve.centres)
        self.n_found += len(found)
        self.errors += errors
        self.rel_errors += [e / span for e in errors]
        self.seconds += seconds
        self.curves += 1
        self.unmatched += sum(
            all(abs(f - c) > tolerance(curve, w) for c, w in zip(curve.centres, curve.widths)) for f in found
        )
        if not curve.centres:
            self.free_curves += 1
            self.fp_free += len(found)

    def summary(self) -> dict:
        precision = self.tp / self.n_found if self.n_found else 1.0
        recall = self.tp / self.n_true if self.n_true else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {
            "curves": self.curves,
            "true_transitions": self.n_true,
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "false_positives_per_free_curve": round(self.fp_free / max(self.free_curves, 1), 4),
            "false_alarms_per_curve": round(self.unmatched / max(self.curves, 1), 4),
            "median_error_steps": round(float(np.median(self.errors)), 2) if self.errors else None,
            "median_error_fraction_of_run": round(float(np.median(self.rel_errors)), 5) if self.errors else None,
            "mean_seconds_per_curve": round(self.seconds / max(self.curves, 1), 5),
        }


def kink_curve(rng: np.random.Generator, n: int) -> SyntheticCurve:
    """A trend that bends: 1-2 kinks of a piecewise-linear trend, or progressive sharpening
    (a convex rise) levelling off at 2/lr. White noise; the bend moves the curve by at least
    20% of its range over a tenth of the run."""
    t = np.arange(1, n + 1, dtype=np.int64) * int(rng.choice([1, 10]))
    tf = t.astype(np.float64)
    span = tf[-1] - tf[0]
    u = (tf - tf[0]) / span
    if rng.random() < 0.4:
        at = rng.uniform(0.3, 0.7)
        clean = 5 + 35 * np.clip(u / at, 0, 1) ** rng.uniform(1.0, 1.6)
        kinks = [at]
    else:
        kinks = sorted(rng.uniform(0.2, 0.8, int(rng.integers(1, 3))))
        if len(kinks) == 2 and kinks[1] - kinks[0] < 0.25:
            kinks = kinks[:1]
        slope = rng.uniform(-1, 1)
        clean = slope * u
        for k in kinks:
            bend = rng.uniform(2, 6) * rng.choice([-1, 1])
            clean = clean + bend * np.maximum(u - k, 0)
    value_range = float(clean.max() - clean.min())
    values = clean + rng.normal(0, value_range / rng.uniform(20, 100), n)
    return SyntheticCurve("kink", t, values, [float(tf[0] + k * span) for k in kinks], [0.0] * len(kinks),
                          float(t[1] - t[0]), tolerance_fraction=0.05)


def regime_curve(rng: np.random.Generator, n: int) -> SyntheticCurve:
    """A quiet start, then a sustained oscillation: edge-of-stability sharpness (rises, then
    bumps of 1-3% of the run about 2/lr) or a loss whose spikes (2-5x, 1-3 records) keep
    coming every 1-4% of the run. One true event: where the regime starts."""
    t = np.arange(1, n + 1, dtype=np.int64)
    tf = t.astype(np.float64)
    start = int(n * rng.uniform(0.3, 0.6))
    if rng.random() < 0.6:
        clean = 5 + 35 * np.clip(tf / start, 0, 1) ** 1.3
        at = start
        while at < n:
            period = int(n * rng.uniform(0.01, 0.033))
            height = rng.uniform(0.02, 0.15) * 40 * rng.choice([-1, 1])
            seg = np.arange(period)
            clean[at : at + period] += (height * np.sin(np.pi * seg / period))[: max(0, n - at)]
            at += period
        values = clean * (1 + rng.normal(0, 0.002, n))
    else:
        values = 2.5 * (tf / 10 + 1) ** -0.5 * np.exp(rng.normal(0, 0.03, n))
        at = start
        while at < n:
            width = int(rng.integers(1, 4))
            values[at : at + width] *= rng.uniform(2, 5)
            at += max(4, int(n * rng.uniform(0.01, 0.04)))
    return SyntheticCurve("regime", t, values, [float(start + 1)], [0.0], 1.0, tolerance_fraction=0.05)


def early_curve(rng: np.random.Generator, n: int) -> SyntheticCurve:
    """A change at the 5th-20th record (a jump or a sigmoid of up to half that many records) of
    an accuracy, a power-law loss or a flat metric; nothing else."""
    every = int(rng.choice([1, 5, 10]))
    t = np.arange(1, n + 1, dtype=np.int64) * every
    tf = t.astype(np.float64)
    record = int(rng.integers(5, 21))
    centre = float(tf[record]) - every / 2
    width = float(rng.uniform(0, record / 2)) * every
    rise = _sigmoid(tf, centre, max(width, 1e-9))
    kind = str(rng.choice(["accuracy", "loss", "generic"]))
    if kind == "accuracy":
        values = np.clip(0.1 + rng.uniform(0.3, 0.8) * rise + rng.normal(0, 0.02, n), 0, 1)
    elif kind == "loss":
        values = 2.5 * (tf / every / 10 + 1) ** -0.5 * np.exp(-rng.uniform(0.5, 2) * rise + rng.normal(0, 0.03, n))
    else:
        values = rng.uniform(-1, 1) + rng.uniform(0.5, 2) * rng.choice([-1, 1]) * rise + rng.normal(0, 0.05, n)
    return SyntheticCurve("early", t, values, [centre], [width], float(every))


def shift_curve(rng: np.random.Generator, n: int) -> SyntheticCurve:
    """White noise (sigma 1) whose mean moves by 1-3 sigma for 100-500 points and back, once
    or twice: two changes per segment."""
    t = np.arange(1, n + 1, dtype=np.int64)
    values = rng.normal(0, 1, n)
    centres: list[float] = []
    segments = int(rng.integers(1, 3))
    for i in range(segments):
        length = int(rng.integers(100, 501))
        lo = int(rng.uniform(0.1 + 0.45 * i, 0.45 + 0.45 * i - length / n) * n)
        values[lo : lo + length] += rng.uniform(1, 3) * rng.choice([-1, 1])
        centres += [float(lo + 1) - 0.5, float(lo + length + 1) - 0.5]
    return SyntheticCurve("shift", t, values, centres, [1.0] * len(centres), 1.0)


def cyclic_curve(rng: np.random.Generator, n: int) -> SyntheticCurve:
    """A sinusoid or a triangle wave (a cyclic schedule) of 5-50 cycles from the first record to
    the last, around a flat or linear trend, in white noise: no change."""
    t = np.arange(1, n + 1, dtype=np.int64)
    phase = 2 * np.pi * rng.uniform(5, 50) * t / n + rng.uniform(0, 2 * np.pi)
    wave = np.sin(phase) if rng.random() < 0.5 else 2 / np.pi * np.arcsin(np.sin(phase))
    trend = rng.uniform(-1, 1) * t / n if rng.random() < 0.5 else 0.0
    values = 3 + trend + rng.uniform(0.2, 1) * wave + rng.normal(0, rng.uniform(0.02, 0.1), n)
    return SyntheticCurve("cyclic", t, values, [], [], 1.0)


def spike_train_curve(rng: np.random.Generator, n: int) -> SyntheticCurve:
    """A loss (a power-law decay or a plateau, multiplicative noise of 0.3-2%) whose short spikes
    (1-3 records, 8-25 noise sigmas) keep coming from 30-60% of the run on: every p to 1.5 p
    records, p 1-2.5% of the run (at least 6 records); on half the curves they stop after
    20-35% of the run. Recorded every step or every 5. One true event: the first spike."""
    every = int(rng.choice([1, 5]))
    t = np.arange(1, n + 1, dtype=np.int64) * every
    sigma = rng.uniform(0.003, 0.02)
    trend = 2.5 * (np.arange(n) / 10 + 1) ** -rng.uniform(0.2, 0.5) if rng.random() < 0.5 else np.full(n, 0.4)
    values = trend * np.exp(rng.normal(0, sigma, n))
    start = int(n * rng.uniform(0.3, 0.6))
    stop = start + int(n * rng.uniform(0.2, 0.35)) if rng.random() < 0.5 else n
    pace = max(6.0, n * rng.uniform(0.01, 0.025))
    at = start
    while at < stop:
        width = int(rng.integers(1, 4))
        values[at : at + width] *= np.exp(sigma * rng.uniform(8, 25))
        at += int(rng.uniform(pace, 1.5 * pace))
    return SyntheticCurve("spike train", t, values, [float(t[start])], [0.0], float(every), tolerance_fraction=0.05)


FAMILIES = {
    "kinks": (kink_curve, [500, 2000, 5000]),
    "oscillating regimes": (regime_curve, [1500, 3000, 6000]),
    "changes near the start": (early_curve, [100, 330, 1000, 3000]),
    "short mean shifts": (shift_curve, [2000, 5000]),
    "cyclic, no change": (cyclic_curve, [1000, 2000, 5000]),
    "spike trains": (spike_train_curve, [300, 1000, 3000]),
}


def family_suite(args: argparse.Namespace) -> dict:
    """Each phenomenon family scored for every detector (see the module docstring)."""
    detectors = {
        "phasetrain levels (None)": (phasetrain_detector(None), math.inf),
        "phasetrain all kinds (None)": (phasetrain_detector(None, ALL_KINDS), math.inf),
        "ruptures PELT (BIC)": (ruptures_detector("pelt"), args.pelt_max),
        "ruptures Binseg (BIC)": (ruptures_detector("binseg"), args.ruptures_max),
        "ruptures Window (BIC)": (ruptures_detector("window"), args.ruptures_max),
        "ruptures PELT clinear (BIC)": (ruptures_detector("pelt", "clinear"), args.pelt_max),
    }
    out = {}
    for f, (family, (make, lengths)) in enumerate(FAMILIES.items()):
        rng = np.random.default_rng(args.seed + 100 + f)
        scores = {name: Score() for name in detectors}
        for i in range(args.family_curves):
            curve = make(rng, int(lengths[i % len(lengths)]))
            for name, (run, limit) in detectors.items():
                if curve.steps.size > limit or ("clinear" in name and family != "kinks"):
                    continue
                start = time.perf_counter()
                found = run(curve)
                scores[name].add(curve, found, time.perf_counter() - start)
        out[family] = {name: score.summary() for name, score in scores.items() if score.curves}
    return out


def accuracy_suite(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed)
    lengths = [200, 1000, 5000] if args.small else [200, 1000, 5000, 20_000]
    detectors = {
        "phasetrain (window=None)": (phasetrain_detector(None), math.inf),
        "phasetrain (window=50)": (phasetrain_detector(50), math.inf),
        "phasetrain (window=100)": (phasetrain_detector(100), math.inf),
        "phasetrain all kinds (None)": (phasetrain_detector(None, ALL_KINDS), math.inf),
        "ruptures PELT (BIC)": (ruptures_detector("pelt"), args.pelt_max),
        "ruptures Binseg (BIC)": (ruptures_detector("binseg"), args.ruptures_max),
        "ruptures Window (BIC)": (ruptures_detector("window"), args.ruptures_max),
    }
    overall = {name: Score() for name in detectors}
    capped = {name: Score() for name in detectors}  # only curves every detector ran on
    cap = min(limit for _, limit in detectors.values())
    for i in range(args.curves):
        curve = make_curve(rng, int(lengths[i % len(lengths)]))
        for name, (run, limit) in detectors.items():
            if curve.steps.size > limit:
                continue
            start = time.perf_counter()
            found = run(curve)
            seconds = time.perf_counter() - start
            overall[name].add(curve, found, seconds)
            if curve.steps.size <= cap:
                capped[name].add(curve, found, seconds)
    return {
        "all_curves_each_detector_ran_on": {k: v.summary() for k, v in overall.items()},
        f"curves_up_to_{cap}_points_all_detectors": {k: v.summary() for k, v in capped.items()},
        "lengths": lengths,
    }


def timed(run, repeats: int) -> tuple[float, float]:
    """(median seconds over `repeats` untraced runs, peak traced memory MiB of one more run):
    tracing every allocation slows small numpy calls, so time and memory are measured apart."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return float(np.median(times)), peak / 2**20


def runtime_suite(args: argparse.Namespace) -> list[dict]:
    rng = np.random.default_rng(args.seed + 1)
    lengths = [1_000, 10_000, 100_000] + ([] if args.small else [1_000_000, 10_000_000])
    rows = []
    for n in lengths:
        t = np.arange(1, n + 1)
        y = 2.5 * (t / 10 + 1) ** -0.5 * np.where(t > n // 2, 0.5, 1.0) * np.exp(rng.normal(0, 0.05, n))
        row = {"points": n}
        repeats = 1 if n >= 10_000_000 else 3
        windows = [("window=None", None), ("window=100", 100)] + ([("window=8", 8)] if n >= 1_000_000 else [])
        for label, window in windows:
            seconds, mib = timed(partial(detect_transitions, y, t, window), repeats)
            row[f"phasetrain {label} s"] = round(seconds, 4)
            row[f"phasetrain {label} peak MiB"] = round(mib, 1)
        seconds, mib = timed(partial(detect_transitions, y, t, None, kinds=ALL_KINDS), repeats)
        row["phasetrain all kinds s"] = round(seconds, 4)
        row["phasetrain all kinds peak MiB"] = round(mib, 1)
        if n <= args.pelt_max:
            start = time.perf_counter()
            ruptures_detector("pelt")(SyntheticCurve("loss", t, y, [], []))
            row["ruptures PELT s"] = round(time.perf_counter() - start, 4)
        if n <= args.ruptures_max:
            for name in ("binseg", "window"):
                start = time.perf_counter()
                ruptures_detector(name)(SyntheticCurve("loss", t, y, [], []))
                row[f"ruptures {name} s"] = round(time.perf_counter() - start, 4)
        rows.append(row)
        print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return rows


def online_suite(args: argparse.Namespace) -> dict:
    """Per-update cost of OnlineDetector on a long loss curve, and the records it keeps."""
    rng = np.random.default_rng(args.seed + 2)
    n = 20_000 if args.small else 100_000
    t = np.arange(1, n + 1)
    y = 2.5 * (t / 10 + 1) ** -0.5 * np.where(t > n // 2, 0.5, 1.0) * np.exp(rng.normal(0, 0.05, n))
    detector = OnlineDetector(100)
    fired = []
    start = time.perf_counter()
    for step, value in zip(t.tolist(), y.tolist()):
        fired += [(step, tr.step) for tr in detector.update(step, value)]
    seconds = time.perf_counter() - start
    kept = len(detector.state_dict()["y"])
    return {
        "records": n,
        "window_size": 100,
        "microseconds_per_update": round(1e6 * seconds / n, 2),
        "records_kept": kept,
        "fired_at_and_step": fired,
    }


def print_table(title: str, rows: dict) -> None:
    print(f"\n{title}")
    head = (f"{'detector':28s} {'curves':>6s} {'P':>6s} {'R':>6s} {'F1':>6s} {'FP/free':>8s} {'FA/curve':>8s} "
            f"{'err(steps)':>10s} {'err(run)':>9s} {'s/curve':>8s}")
    print(head)
    for name, s in rows.items():
        print(
            f"{name:28s} {s['curves']:6d} {s['precision']:6.3f} {s['recall']:6.3f} {s['f1']:6.3f} "
            f"{s['false_positives_per_free_curve']:8.3f} {s['false_alarms_per_curve']:8.3f} "
            f"{s['median_error_steps']!s:>10s} "
            f"{s['median_error_fraction_of_run']!s:>9s} {s['mean_seconds_per_curve']:8.4f}"
        )


def markdown_tables(result: dict) -> str:
    """The results of a run (the JSON document) as markdown tables, for docs/detection.md."""
    lines = []

    def table(title: str, rows: dict) -> None:
        lines.extend([f"**{title}**", "", "| detector | curves | P | R | F1 | false alarms / curve | s / curve |",
                      "|---|---:|---:|---:|---:|---:|---:|"])
        for name, r in rows.items():
            lines.append(f"| {name} | {r['curves']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} "
                         f"| {r['false_alarms_per_curve']:.3f} | {r['mean_seconds_per_curve']:.4f} |")
        lines.append("")

    for title, rows in result["accuracy"].items():
        if isinstance(rows, dict):
            table(f"Today's families: {title.replace('_', ' ')}", rows)
    for title, rows in result["families"].items():
        table(f"Family: {title}", rows)
    lines.extend(["**Runtime** (median of 3, 1 at 10^7 points; peak traced memory)", "",
                  "| points | window=None s | MiB | window=100 s | MiB | window=8 s | MiB | all kinds s | MiB |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"])
    for row in result["runtime"]:
        cells = [f"{row['points']:,}"]
        for label in ("window=None", "window=100", "window=8", "all kinds"):
            key = f"phasetrain {label}"
            cells += [str(row.get(f"{key} s", "")), str(row.get(f"{key} peak MiB", ""))]
        lines.append("| " + " | ".join(cells) + " |")
    online = result["online"]
    lines.extend(["", (f"Online: {online['microseconds_per_update']} us per update over {online['records']:,} records "
                       f"(window {online['window_size']}), {online['records_kept']:,} records kept.")])
    return "\n".join(lines)


def display_path(path: Path) -> str:
    """`path` relative to the repository when inside it (no machine's folder in the results)."""
    root = Path(__file__).resolve().parent.parent
    resolved = path.resolve()
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="fewer, shorter curves (for CI)")
    parser.add_argument("--curves", type=int, default=None, help="number of curves (default 400, 60 with --small)")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--family-curves", type=int, default=None,
                        help="curves per family (default 60, 12 with --small)")
    parser.add_argument("--ruptures-max", type=int, default=5000, help="longest curve given to Binseg and Window")
    parser.add_argument("--pelt-max", type=int, default=1000, help="longest curve given to PELT")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--tables", type=Path, metavar="JSON",
                        help="print the markdown tables of a results file and exit")
    args = parser.parse_args()
    if args.tables:
        print(markdown_tables(json.loads(args.tables.read_text())))
        return
    if args.curves is None:
        args.curves = 60 if args.small else 400
    if args.family_curves is None:
        args.family_curves = 12 if args.small else 60
    accuracy = accuracy_suite(args)
    for title, rows in accuracy.items():
        if isinstance(rows, dict):
            print_table(title.replace("_", " "), rows)
    families = family_suite(args)
    for title, rows in families.items():
        print_table(f"family: {title}", rows)
    print("\nruntime (s, median of 3 (1 at 10^7) for phasetrain; peak traced MiB; power-law loss with one drop)")
    runtime = runtime_suite(args)
    online = online_suite(args)
    print(
        f"\nonline: {online['microseconds_per_update']} us per update over {online['records']} records "
        f"(window 100), {online['records_kept']} records kept; fired (at step, transition step): "
        f"{online['fired_at_and_step']}"
    )
    result = {
        "benchmark": "detection",
        "settings": {k: display_path(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "tolerance": "max(transition width 10-90%, 1% of the run, 2 recording intervals)",
        "accuracy": accuracy,
        "families": families,
        "runtime": runtime,
        "online": online,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
