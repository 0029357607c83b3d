"""`TimeBudget`: the steps at which a monitor with a time budget measures.

Under a budget `fraction` (e.g. 0.05) a monitor's measurements may take at most that fraction of
the run's training time: the wall seconds between the steps it is asked about, less its own
measurements. So the overhead it adds to a run (time with it / time without - 1) is the fraction.
It is asked at every step (`due`) and told what each measurement cost (`book`):
- it spends only what it has earned: a measurement is due when the seconds already spent plus the
  expected cost of one more are within `fraction` x the training seconds so far. The expected cost
  is the last measurement's; before the first, `first_cost_steps` times the mean step so far (a
  step being the wall time between two questions), so on a run of N steps the first measurement
  comes at about step first_cost_steps / fraction, and a run shorter than that gets none;
- after the first, while the run's watched metrics move (the recorder says so before every
  question, `note_movement`) it may spend all it has earned; on a plateau only `PLATEAU_SHARE` of
  it. The rest stays in reserve for the next change: dense while the metrics move, sparse while
  they stand still;
- never sooner than `min_interval` steps after the last measurement.
The clock is injectable (`clock`, seconds), so a schedule can be tested without timing anything.
"""
from __future__ import annotations

import time
from typing import Any, Callable

# On a plateau the monitor spends at most this share of the budget it has earned; the rest waits
# for the watched metrics to move.
PLATEAU_SHARE = 0.5


class TimeBudget:
    """When to measure under a budget of `fraction` of training wall time (module notes).

    `min_interval`: the fewest steps between two measurements; `first_cost_steps`: the expected
    cost of the first measurement in training steps; `clock`: wall seconds (`time.perf_counter`).
    """

    def __init__(self, fraction: float, min_interval: int, first_cost_steps: float,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.fraction, self.min_interval, self.first_cost_steps = fraction, min_interval, first_cost_steps
        self.clock = clock
        self.moving = False  # whether the run's watched metrics move now (`note_movement`)
        self.spent_s = 0.0  # wall seconds measuring
        self.trained_s = 0.0  # wall seconds between questions, less the measurements
        self.last_cost_s: float | None = None  # wall seconds of the last measurement
        self.last_step: int | None = None  # the step of the last measurement
        self.first_step: int | None = None  # the first step asked about
        self._mark: float | None = None  # the clock at the last question (moved past measurements)

    def note_movement(self, moving: bool) -> None:
        """Whether the run's watched metrics move now (the recorder's `TransitionWatcher.moving`)."""
        self.moving = moving

    def due(self, step: int) -> bool:
        """Whether to measure at `step`; books the training time since the last question."""
        now = self.clock()
        if self._mark is not None:
            self.trained_s += max(now - self._mark, 0.0)
        self._mark = now
        if self.first_step is None:
            self.first_step = step
        if self.last_step is not None and step - self.last_step < self.min_interval:
            return False
        cost = self.expected_cost_s(step)
        if cost is None:
            return False
        share = 1.0 if self.moving or self.last_step is None else PLATEAU_SHARE
        return affordable(self.spent_s, cost, self.fraction * self.trained_s, share)

    def expected_cost_s(self, step: int) -> float | None:
        """Wall seconds the next measurement is expected to take: the last one's, or before any,
        `first_cost_steps` mean steps (None while no step has been timed)."""
        if self.last_cost_s is not None:
            return self.last_cost_s
        steps = step - self.first_step if self.first_step is not None else 0
        return self.first_cost_steps * self.trained_s / steps if steps > 0 else None

    def book(self, step: int, seconds: float) -> None:
        """A measurement at `step` took `seconds` of wall time: spent, and not training time."""
        self.spent_s += seconds
        self.last_cost_s, self.last_step = seconds, step
        if self._mark is not None:
            self._mark += seconds

    def overhead(self) -> float:
        """Seconds spent measuring per second of training so far (what the budget bounds)."""
        return self.spent_s / self.trained_s if self.trained_s > 0 else 0.0

    def state_dict(self) -> dict[str, Any]:
        """The accounts: a resumed run goes on from the balance it had."""
        return {"spent_s": self.spent_s, "trained_s": self.trained_s, "last_cost_s": self.last_cost_s,
                "last_step": self.last_step, "first_step": self.first_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.spent_s, self.trained_s, self.last_cost_s = state["spent_s"], state["trained_s"], state["last_cost_s"]
        self.last_step, self.first_step = state["last_step"], state["first_step"]
        self._mark = None  # the clock restarts at the first question after the resume


def affordable(spent_s: float, cost_s: float, earned_s: float, share: float) -> bool:
    """Whether a measurement of `cost_s` keeps the seconds spent within `share` of those earned."""
    return spent_s + cost_s <= share * earned_s
