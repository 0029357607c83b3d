"""The detector interface: what any transition detector, offline or online, provides.

A new detector is any object with these methods (no base class needed); the protocols are
`runtime_checkable`, so `isinstance(obj, Detector)` checks the method names.
"""
from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

from phasetrain.detect.transition import Transition


@runtime_checkable
class Detector(Protocol):
    """Finds transitions in a whole curve.

    detect(values, steps=None): values shape (n,), in the metric's units (NaN/inf ignored);
    steps shape (n,), strictly increasing global steps (None: 1..n). Returns the transitions
    found, sorted by step, each with `kind` set ("level", "slope", "regime" or a new one).
    """

    def detect(self, values: Any, steps: Any = None) -> list[Transition]: ...


@runtime_checkable
class StreamDetector(Protocol):
    """Finds transitions while a curve is recorded, one record at a time.

    update(step, value): one record (steps strictly increasing); returns the transitions
    this record confirms (usually []). state_dict(): everything needed to resume, made only
    of dicts with str keys, lists, ints, floats, strings, bools and None, so a checkpoint
    holding it loads with `torch.load(weights_only=True)` and with `json.loads`.
    load_state_dict(state): resume from such a state (a detector built with the same settings).
    """

    def update(self, step: float, value: float) -> list[Transition]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def is_plain(state: object) -> bool:
    """True when `state` is made only of str-keyed dicts, lists, bools, ints, finite floats,
    strings and None (what `StreamDetector.state_dict` must return)."""
    if isinstance(state, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in state.items())
    if isinstance(state, list):
        return all(is_plain(v) for v in state)
    if isinstance(state, float):
        return math.isfinite(state)
    return state is None or isinstance(state, (bool, int, str))
