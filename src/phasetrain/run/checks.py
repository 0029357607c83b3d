"""The checks every argument goes through before anything is built, each naming the argument, the
value and what is allowed: the bottom of `phasetrain.run`, imported by its settings, its streams
and every front end."""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def check_int(name: str, value: Any, minimum: int = 1, allow_none: bool = False) -> None:
    """`value` must be an int >= minimum (bools are not ints here), or None when allowed."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        allowed = f"an int >= {minimum}" + (" or None" if allow_none else "")
        raise TypeError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        allowed = f"an int >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def check_float(name: str, value: Any, minimum: float = 0.0, strict: bool = False, allow_none: bool = False) -> None:
    """`value` must be a finite real number >= minimum (> minimum when strict), or None when allowed."""
    if value is None and allow_none:
        return
    relation = ">" if strict else ">="
    allowed = f"a finite number {relation} {minimum}" + (" or None" if allow_none else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def check_metric_names(name: str, value: Any) -> None:
    """`value` must be a sequence of metric names (a bare string is refused: it would be read letter by letter)."""
    if isinstance(value, str) or not all(isinstance(m, str) for m in value):
        raise TypeError(f"{name} must be a sequence of metric names, got {value!r}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """`value` must be one of `choices`."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")


def check_fraction_of_time(name: str, value: Any) -> None:
    """A share of training wall time: a number in (0, 1), or None."""
    check_float(name, value, strict=True, allow_none=True)
    if value is not None and value >= 1:
        raise ValueError(f"{name} must be a fraction of training wall time in (0, 1) or None, got {value!r}")
