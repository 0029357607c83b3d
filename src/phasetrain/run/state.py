"""The trainer's own progress counters, kept in one place so checkpoints and summaries agree."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


@dataclass
class RunState:
    """Where a run is. `step` counts optimizer updates; `epoch` is the 0-based epoch in progress
    (after an epoch ends it already names the next one); `batch_in_epoch` counts the batches of that
    epoch consumed so far (a resume skips them)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    epochs_run: int = 0
    best_loss: float = math.inf
    best_step: int | None = None
    stopped_early: bool = False
    stop_reason: str | None = None
    finished: bool = False
    nonfinite_skipped: int = 0
    wall_time_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> "RunState":
        return cls(**state)

    def summary_fields(self) -> dict[str, Any]:
        """The counters a summary reports (JSON-safe: no infinities)."""
        return {
            "total_training_steps": self.step,
            "epochs_run": self.epochs_run,
            "best_step": self.best_step,
            "stopped_early": self.stopped_early,
            "stop_reason": self.stop_reason,
            "finished": self.finished,
            "nonfinite_skipped": self.nonfinite_skipped,
            "wall_time_s": round(self.wall_time_s, 3),
        }
