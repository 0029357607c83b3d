"""The record of one detected phase transition."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Transition:
    """One abrupt change of a training curve, in the curve's own units and global steps.

    kind: "level" (the curve moves to a new level; the fields below are as described),
        "slope" (its trend bends: a kink, see `slopes`; level_before/level_after are the
        slopes per step before and after, start_step/end_step half a window either side,
        score the slope change in standard errors), or "regime" (a sustained oscillation
        starts, see `regimes`: step = start_step = its first record, end_step its last;
        level_before the median before it, level_after the median inside it, magnitude
        the RMS deviation inside it, score the roughness in noise sigmas; for a train of
        short spikes, their median height and that height in noise sigmas).

    step: first recorded step at which the change is at least half done (for a sigmoid,
        the point of fastest change; for a step, the first record at the new level).
    start_step, end_step: last record before the change is 10% done and first record
        after it is 90% done, measured against the trends fitted on either side.
    level_before, level_after: the fitted level just before `start_step` / after `end_step`.
    magnitude: |level_after - level_before|.
    relative_magnitude: magnitude / max(|level_before|, |level_after|) (0 when both are 0).
    direction: "up" or "down".
    score: the level change in standard errors of its estimate (a z-score; the local noise
        is estimated robustly, so spikes do not inflate or deflate it). Larger is surer;
        every reported transition has a score of at least the detector's `min_score`.
    metric: the metric name, filled in by callers that know it.
    ongoing: for a regime, True when it lasts to the curve's last record (then end_step is
        that record); always False for levels and slopes.
    """

    step: int | float
    start_step: int | float
    end_step: int | float
    level_before: float
    level_after: float
    magnitude: float
    relative_magnitude: float
    direction: str
    score: float
    metric: str | None = None
    kind: str = "level"
    ongoing: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view (ints, floats, strings, None)."""
        return asdict(self)

    def with_metric(self, metric: str | None) -> Transition:
        """A copy with `metric` set."""
        return replace(self, metric=metric)
