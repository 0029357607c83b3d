"""The training summary: final and best figures, counters, and detected transitions of a run.

Computed from the metric store and the run's meta data only, so `trainer.get_training_summary()`
and `phasetrain summary RUN_DIR` give the same answer.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from phasetrain.run.history import MetricHistory

# Metrics whose transitions the summary reports and the trainer watches online, when recorded.
KEY_METRICS = ("val_acc", "val_loss", "train_acc", "train_loss", "hessian_eig_1", "hessian_diag_mean", "hessian_trace")


def transitions_by_metric(history: MetricHistory, metrics: tuple[str, ...] = KEY_METRICS,
                          window_size: int | None = None,
                          kinds: Sequence[str] = ("level",)) -> dict[str, list[dict[str, Any]]]:
    """{metric: [transition dicts]} for each of `metrics` present in `history`; `kinds`: what the
    detector reports ("level", "slope", "regime")."""
    from phasetrain.detect import detect_in_history

    return {name: [t.to_dict() for t in detect_in_history(history, name, window_size, kinds=tuple(kinds))]
            for name in metrics if name in history}


def training_summary(history: MetricHistory, meta: Mapping[str, Any], metrics: Sequence[str] = KEY_METRICS,
                     window_size: float | None = None, kinds: Sequence[str] = ("level",)) -> dict[str, Any]:
    """Summary dict: the keys of the original specification (`final_train_acc`, `phase_transitions`,
    `total_training_steps`) plus how the run ended (`status`), final/best losses and accuracies, best
    step, epochs run, early stop, skipped non-finite updates, wall time, and what happened in it,
    named (`phenomena`; `story`: the same in a few lines of words).

    metrics: the curves whose transitions `phase_transitions` holds (those recorded); window_size:
    the detector's window in steps for them and for the phenomena (None: automatic); kinds: what
    `phase_transitions` reports ("level": abrupt changes, the original specification's; "slope",
    "regime")."""
    return {
        "status": run_status(meta, _last_step(history)),
        "final_train_loss": _last(history, "train_loss"),
        "final_train_acc": _last(history, "train_acc"),
        "final_val_loss": _last(history, "val_loss"),
        "final_val_acc": _last(history, "val_acc"),
        "best_val_loss": _extreme(history, "val_loss", np.nanmin),
        "best_val_acc": _extreme(history, "val_acc", np.nanmax),
        "best_step": meta.get("best_step"),
        "total_training_steps": meta.get("total_training_steps", _last_step(history)),
        "epochs_run": meta.get("epochs_run"),
        "stopped_early": meta.get("stopped_early", False),
        "stop_reason": meta.get("stop_reason"),
        "nonfinite_skipped": meta.get("nonfinite_skipped", 0),
        "wall_time_s": meta.get("wall_time_s"),
        "phase_transitions": transitions_by_metric(history, tuple(metrics), window_size, kinds),
        **phenomena_and_story(history, window_size),
    }


def phenomena_and_story(history: MetricHistory, window_size: float | None = None) -> dict[str, Any]:
    """{"phenomena": [what happened, named, as dicts], "story": the same in a few lines of text}."""
    from phasetrain.detect import find_phenomena, story

    found = find_phenomena(history, window_size)
    return {"phenomena": [p.to_dict() for p in found], "story": story(found)}


def run_status(meta: Mapping[str, Any], last_step: int) -> str:
    """How a run ended, in words: "finished", "finished (early stopping)", "interrupted at step s",
    "stopped at step s: <reason>", or "running or killed at step s" (no end was written); "unknown"
    for runs from other tools, whose files do not say."""
    if "finished" not in meta:
        return "unknown"
    step = meta.get("total_training_steps", last_step)
    reason = meta.get("stop_reason")
    if reason == "interrupted":
        return f"interrupted at step {step}"
    if reason and not meta.get("stopped_early"):  # a non-finite loss, an exception, a callback's stop
        return f"stopped at step {step}: {reason}"
    if meta["finished"]:
        return "finished (early stopping)" if meta.get("stopped_early") else "finished"
    return f"running or killed at step {step}"


def _last(history: MetricHistory, name: str) -> float | None:
    value = history.last(name)
    return None if value is None or not math.isfinite(value) else value


def _extreme(history: MetricHistory, name: str, reduce: Any) -> float | None:
    if name not in history:
        return None
    values = history.values(name)
    finite = values[np.isfinite(values)]
    return float(reduce(finite)) if finite.size else None


def _last_step(history: MetricHistory) -> int:
    return max((history.last_step(name) or 0 for name in history.names()), default=0)
