"""What happened in a run, in researchers' words, from the transitions of its curves.

`find_phenomena(curves)` reads a run's curves (a mapping name -> (steps, values), or any
history with `names()`, `steps(name)`, `values(name)`) and names what it finds:

- memorisation: train_acc jumps up (the largest rise of train_acc);
- grokking: val_acc jumps up long after memorisation (at least 2x its step; the delay
  ratio t_grok / t_mem is reported); a val_acc jump sooner is plain generalisation;
- plateau exit: train_loss drops abruptly once; saddle-to-saddle: it does so 2+ times
  (drops while the sharpness oscillates at the edge of stability are neither);
- edge of stability: `hessian_eos_ratio` first reaching 1 where recorded, else
  `hessian_eig_1` levelling off (a slope change down after a rise) or starting to oscillate;
- oscillation regime: a sustained oscillation (EoS bumps, loss spikes that keep coming);
- loss spike / catapult: an early train_loss spike (at least 2x its running level, in the
  first 30% of the run); a catapult when hessian_eig_1 falls by 20% or more across it
  (Lewkowycz et al. 2020: the loss spikes and the curvature drops to a flatter region).

Each `Phenomenon` has its step, the curves it rests on and a confidence in [0, 1);
`story(phenomena)` renders them as a few lines of text.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from phasetrain.detect.candidates import MIN_CURVE_POINTS
from phasetrain.detect.offline import detect_transitions
from phasetrain.detect.prepare import check_steps_values
from phasetrain.detect.robust import median7
from phasetrain.detect.transition import Transition

MEMORISED = 0.99  # train_acc at which a run counts as having memorised its training set
GROKKING_DELAY = 2.0  # val_acc must jump at least 2x later than train_acc to be grokking
SPIKE_FACTOR = 2.0  # a loss spike at least doubles the loss over its running level
EARLY_FRACTION = 0.3  # catapults happen early: in the first 30% of the run
CATAPULT_DROP = 0.2  # sharpness falls by at least 20% across a catapult
SPIKE_BASELINE = 31  # records in the running median a spike is measured against
CONFIDENCE_SCALE = 8.0  # a score of 8 (the detector's threshold) gives confidence 0.5
ALL_KINDS = ("level", "slope", "regime")


@dataclass(frozen=True)
class Phenomenon:
    """One named event of a run.

    name: "memorisation", "grokking", "generalisation", "plateau_exit", "saddle_to_saddle",
        "edge_of_stability", "oscillation_regime", "loss_spike" or "catapult".
    step: the global step at which it happens (for a regime: where it starts).
    evidence: the curves it was read from, e.g. ("train_acc", "val_acc").
    confidence: in [0, 1): score / (score + 8) of the transition it rests on (0.5 at the
        detector's threshold); for curves read directly (hessian_eos_ratio, spikes), the
        fraction of the evidence that agrees.
    description: one line in words, with the levels involved.
    value: the phenomenon's number where it has one (grokking: delay ratio t_grok / t_mem;
        catapult: sharpness after / before; loss spike: peak / running level), else None.
    """

    name: str
    step: int | float
    evidence: tuple[str, ...]
    confidence: float
    description: str
    value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view (evidence as a list)."""
        out = asdict(self)
        out["evidence"] = list(self.evidence)
        return out


def read_curves(curves: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (steps, values) as float arrays, from a mapping of (steps, values) pairs or a
    history with names()/steps(name)/values(name)."""
    if isinstance(curves, Mapping):
        pairs = {name: curves[name] for name in curves}
    elif all(hasattr(curves, m) for m in ("names", "steps", "values")):
        pairs = {name: (curves.steps(name), curves.values(name)) for name in curves.names()}
    else:
        raise TypeError(f"curves must be a mapping name -> (steps, values) or a history, got {type(curves).__name__}")
    out = {}
    for name, pair in pairs.items():
        steps, values = pair
        t, y = check_steps_values(values, steps)
        keep = np.isfinite(y)
        if np.count_nonzero(keep) >= MIN_CURVE_POINTS:
            out[str(name)] = (t[keep], y[keep])
    return out


def confidence(score: float) -> float:
    """score / (score + 8): 0.5 at the detector's threshold, towards 1 for surer changes."""
    return float(score / (score + CONFIDENCE_SCALE)) if score > 0 else 0.0


def as_step(step: float) -> int | float:
    """A step as an int when it is whole, else a float."""
    return int(step) if float(step).is_integer() else float(step)


def find_phenomena(curves: Any, window_size: float | None = None) -> list[Phenomenon]:
    """The named phenomena of a run, sorted by step.

    curves: mapping name -> (steps, values) (shape (n,) each; NaN ignored) or a history
    (see `read_curves`); the names read are train_acc, val_acc, train_loss, hessian_eig_1
    and hessian_eos_ratio (any may be missing). window_size: the detector's window in
    steps (None: 1% of each curve's span).
    """
    data = read_curves(curves)
    found: list[Phenomenon] = []

    def changes(name: str, kinds: tuple[str, ...] = ALL_KINDS) -> list[Transition]:
        if name not in data:
            return []
        t, y = data[name]
        return detect_transitions(y, t, window_size, kinds=kinds)

    # accuracies jump: their noisy climb before a jump is no oscillation regime to absorb it
    found += accuracy_phenomena(changes("train_acc", ("level",)), changes("val_acc", ("level",)),
                                data.get("train_acc"))
    loss = changes("train_loss")
    sharp = changes("hessian_eig_1")
    found += loss_phenomena(loss, [tr for tr in sharp if tr.kind == "regime"])
    found += stability_phenomena(data, sharp)
    if "train_loss" in data:
        found += spike_phenomena(data, loss)
    return sorted(found, key=lambda p: (p.step, p.name))


def accuracy_phenomena(train: list[Transition], val: list[Transition],
                       train_curve: tuple[np.ndarray, np.ndarray] | None = None) -> list[Phenomenon]:
    """Memorisation (train_acc's largest rise) and grokking or generalisation (val_acc's).

    train, val: the transitions (all kinds) of train_acc and val_acc ([] when not recorded).
    train_curve: train_acc's (steps, values): a rise to MEMORISED within the first records, too
    early for the detector to test, is memorisation at the step it first reaches MEMORISED.
    """
    out = []
    rises = [tr for tr in train if tr.kind == "level" and tr.direction == "up"]
    mem = max(rises, key=lambda tr: tr.magnitude, default=None)
    if mem is not None:
        out.append(Phenomenon(
            "memorisation", mem.step, ("train_acc",), confidence(mem.score),
            f"train_acc jumps {mem.level_before:.3g} -> {mem.level_after:.3g}",
        ))
    elif train_curve is not None:
        mem = early_memorisation(*train_curve)
        if mem is not None:
            out.append(Phenomenon("memorisation", mem.step, ("train_acc",), confidence(mem.score),
                                  f"train_acc reaches {MEMORISED:.0%} from {mem.level_before:.3g} at the first record"))
    gains = [tr for tr in val if tr.kind == "level" and tr.direction == "up"]
    grok = max(gains, key=lambda tr: tr.magnitude, default=None)
    if grok is None:
        return out
    if mem is not None and mem.step > 0 and grok.step >= GROKKING_DELAY * mem.step:
        ratio = grok.step / mem.step
        out.append(Phenomenon(
            "grokking", grok.step, ("train_acc", "val_acc"), min(confidence(grok.score), confidence(mem.score)),
            f"val_acc jumps {grok.level_before:.3g} -> {grok.level_after:.3g}, {ratio:.1f}x later than train_acc",
            value=float(ratio),
        ))
    else:
        out.append(Phenomenon(
            "generalisation", grok.step, ("val_acc",), confidence(grok.score),
            f"val_acc jumps {grok.level_before:.3g} -> {grok.level_after:.3g}",
        ))
    return out


def early_memorisation(steps: np.ndarray, values: np.ndarray) -> Transition | None:
    """train_acc rising from below 50% at its first record to MEMORISED and staying there (at
    least 90% of the later records): the rise as a Transition at its first step at MEMORISED, with
    a score of 8 x the share of later records at MEMORISED (confidence about 0.5), else None."""
    above = np.flatnonzero(values >= MEMORISED)
    if values.size < MIN_CURVE_POINTS or values[0] >= 0.5 or above.size == 0:
        return None
    first = int(above[0])
    held = float(np.mean(values[first:] >= MEMORISED))
    if held < 0.9:
        return None
    step = as_step(steps[first])
    return Transition(step, as_step(steps[0]), step, float(values[0]), float(values[first]),
                      float(values[first] - values[0]), float((values[first] - values[0]) / values[first]), "up",
                      CONFIDENCE_SCALE * held)


def loss_phenomena(loss: list[Transition], unstable: list[Transition] = ()) -> list[Phenomenon]:
    """Plateau exits (one abrupt drop of train_loss) or saddle-to-saddle drops (several),
    and a train_loss oscillation regime. loss: the transitions (all kinds) of train_loss;
    unstable: the oscillation regimes of the sharpness (hessian_eig_1). A drop inside one is
    the loss coming down from its spikes at the edge of stability, not the exit from a
    plateau, and is not named."""
    drops = [tr for tr in loss if tr.kind == "level" and tr.direction == "down"
             and not any(r.start_step <= tr.step <= r.end_step for r in unstable)]
    name = "saddle_to_saddle" if len(drops) >= 2 else "plateau_exit"
    out = [
        Phenomenon(name, tr.step, ("train_loss",), confidence(tr.score),
                   f"train_loss drops {tr.level_before:.3g} -> {tr.level_after:.3g} after a plateau")
        for tr in drops
    ]
    out += [regime_phenomenon(tr, "train_loss") for tr in loss if tr.kind == "regime"]
    return out


def regime_phenomenon(tr: Transition, name: str) -> Phenomenon:
    """The oscillation regime `tr` (kind "regime") of the curve `name` as a phenomenon."""
    until = "to the end of the run" if tr.ongoing else f"until step {tr.end_step}"
    return Phenomenon(
        "oscillation_regime", tr.step, (name,), confidence(tr.score),
        f"{name} oscillates about {tr.level_after:.3g} {until}",
    )


def stability_phenomena(data: dict[str, tuple[np.ndarray, np.ndarray]], sharp: list[Transition]) -> list[Phenomenon]:
    """Edge-of-stability arrival (hessian_eos_ratio reaching 1, else hessian_eig_1 levelling
    off or starting to oscillate) and a hessian_eig_1 oscillation regime. data: the curves
    (see `read_curves`); sharp: the transitions (all kinds) of hessian_eig_1."""
    out = []
    if "hessian_eos_ratio" in data:
        t, ratio = data["hessian_eos_ratio"]
        above = np.flatnonzero(median7(ratio) >= 1.0)
        if above.size:
            at = int(above[0])
            agree = float(np.mean(ratio[at:] >= 0.9))  # stays at the edge once there
            out.append(Phenomenon(
                "edge_of_stability", as_step(t[at]), ("hessian_eos_ratio",), min(agree, 0.99),
                f"sharpness reaches 2/lr (hessian_eos_ratio {ratio[at]:.3g})",
            ))
    else:
        arrivals = [tr for tr in sharp if (tr.kind == "slope" and tr.direction == "down" and tr.level_before > 0)
                    or tr.kind == "regime"]
        if arrivals:
            tr = arrivals[0]
            how = "stops rising" if tr.kind == "slope" else "starts to oscillate"
            out.append(Phenomenon(
                "edge_of_stability", tr.step, ("hessian_eig_1",), confidence(tr.score),
                f"sharpness {how} (hessian_eig_1, {tr.kind} change)",
            ))
    out += [regime_phenomenon(tr, "hessian_eig_1") for tr in sharp if tr.kind == "regime"]
    return out


def spike_phenomena(data: dict[str, tuple[np.ndarray, np.ndarray]], loss: list[Transition]) -> list[Phenomenon]:
    """The largest early train_loss spike (at least SPIKE_FACTOR x its running median), as a
    catapult when hessian_eig_1 falls by CATAPULT_DROP or more across it. None inside a
    train_loss regime (those spikes are the regime). data: the curves (see `read_curves`);
    loss: the transitions (all kinds) of train_loss."""
    t, y = data["train_loss"]
    early = t <= t[0] + EARLY_FRACTION * (t[-1] - t[0])
    if np.count_nonzero(early) < SPIKE_BASELINE + 2 or y.min() <= 0:
        return []
    log_y = np.log(y[early])
    half = SPIKE_BASELINE // 2
    padded = np.pad(log_y, half, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, SPIKE_BASELINE)
    baseline = np.median(windows, axis=1)
    excess = log_y - baseline
    peak = int(np.argmax(excess))
    if excess[peak] < math.log(SPIKE_FACTOR):
        return []
    step = float(t[peak])
    if any(tr.kind == "regime" and tr.start_step <= step <= tr.end_step for tr in loss):
        return []
    factor = float(math.exp(excess[peak]))
    spread = float(np.median(np.abs(np.diff(log_y)))) or 1e-12
    sure = 1.0 - math.exp(-float(excess[peak]) / spread / CONFIDENCE_SCALE)
    if "hessian_eig_1" in data:
        ts, sharp = data["hessian_eig_1"]
        width = SPIKE_BASELINE * float(np.median(np.diff(t)))
        before = sharp[(ts >= step - 2 * width) & (ts < step)]
        after = sharp[(ts > step + width) & (ts <= step + 3 * width)]
        if before.size and after.size and np.median(after) <= (1 - CATAPULT_DROP) * np.median(before):
            ratio = float(np.median(after) / np.median(before))
            return [Phenomenon(
                "catapult", as_step(step), ("train_loss", "hessian_eig_1"), min(sure, 0.99),
                f"train_loss spikes {factor:.3g}x and sharpness falls to {ratio:.2f}x of its level",
                value=ratio,
            )]
    return [Phenomenon(
        "loss_spike", as_step(step), ("train_loss",), min(sure, 0.99),
        f"train_loss spikes {factor:.3g}x above its running level", value=factor,
    )]


def story(phenomena: list[Phenomenon]) -> str:
    """The story of a run: one line per phenomenon, in step order ("" when there are none).

    phenomena: as returned by `find_phenomena`.
    """
    lines = []
    for p in sorted(phenomena, key=lambda p: p.step):
        step = f"{p.step:,}" if isinstance(p.step, int) else f"{p.step:,.6g}"
        lines.append(f"step {step}: {p.name.replace('_', ' ')}: {p.description} "
                     f"[{', '.join(p.evidence)}; confidence {p.confidence:.2f}]")
    return "\n".join(lines)


def story_of_run(curves: Any, window_size: float | None = None) -> str:
    """`story(find_phenomena(curves, window_size))`: the story of a run from its curves."""
    return story(find_phenomena(curves, window_size))
