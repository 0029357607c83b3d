"""The one metric store of a run: metric name -> (global steps, values), columnar.

Every number a run logs (train_loss, val_acc, grad_norm, lr, hessian_*, ...) lives here, keyed by
metric name and 1-based global optimizer step. `metrics.json` is its serialisation (see
`save_metrics` / `load_metrics`); the detector, the report and the CLI all read from it.
Columns are `array.array` buffers (8 bytes per step and per value), so 10^6 records of a metric
cost ~16 MB rather than the ~100 MB of Python float/int objects in lists.
"""
from __future__ import annotations

import json
import math
import os
from array import array
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from phasetrain.run.files import atomic_write

METRICS_FORMAT = "phasetrain-metrics"
METRICS_VERSION = 1


class MetricHistory:
    """Columnar store of scalar metrics keyed by name and global step."""

    def __init__(self) -> None:
        self._steps: dict[str, array] = {}
        self._values: dict[str, array] = {}

    def log(self, step: int, metrics: Mapping[str, float | None]) -> None:
        """Record `metrics` (name -> value) at global `step`. `None` values are skipped;
        NaN/Inf are kept (they are facts about the run) and serialised as JSON null.

        Each metric's steps stay strictly increasing (the detector and every plot rely on it): a
        second value at a metric's last step replaces the first (e.g. the validation of an epoch
        in which every update was skipped); a step before the last one is refused.
        """
        step = int(step)
        for name, value in metrics.items():
            if value is None:
                continue
            steps = self._steps.get(name)
            if steps is None:
                steps = self._steps[name] = array("q")
                self._values[name] = array("d")
            elif steps[-1] == step:
                self._values[name][-1] = float(value)
                continue
            elif steps[-1] > step:
                raise ValueError(f"metric {name!r} is already recorded up to step {steps[-1]}; got step {step}")
            steps.append(step)
            self._values[name].append(float(value))

    def names(self) -> list[str]:
        """Names of the recorded metrics, in the order they were first logged."""
        return list(self._steps)

    def __contains__(self, name: object) -> bool:
        return name in self._steps

    def __len__(self) -> int:
        return len(self._steps)

    def steps(self, name: str) -> np.ndarray:
        """Global steps (int64, shape (n,)) at which `name` was recorded."""
        return np.frombuffer(self._column(self._steps, name), dtype=np.int64).copy()

    def values(self, name: str) -> np.ndarray:
        """Recorded values of `name` (float64, shape (n,)); NaN where the run logged a non-finite."""
        return np.frombuffer(self._column(self._values, name), dtype=np.float64).copy()

    def last(self, name: str, default: float | None = None) -> float | None:
        """The most recent value of `name`, or `default` when it was never recorded."""
        column = self._values.get(name)
        return column[-1] if column else default

    def last_step(self, name: str) -> int | None:
        """The step of the most recent record of `name`, or None."""
        column = self._steps.get(name)
        return column[-1] if column else None

    def records(self) -> Iterator[tuple[int, dict[str, float]]]:
        """(step, {name: value}) for every step with a record, in step order; metrics within a
        step in the order they were first logged."""
        names = self.names()
        if not names:
            return
        steps = np.concatenate([self.steps(name) for name in names])
        values = np.concatenate([self.values(name) for name in names])
        which = np.concatenate([np.full(len(self._steps[name]), i) for i, name in enumerate(names)])
        order = np.lexsort((which, steps))
        steps, values, which = steps[order].tolist(), values[order].tolist(), which[order].tolist()
        start = 0
        for end in range(1, len(steps) + 1):
            if end == len(steps) or steps[end] != steps[start]:
                yield steps[start], {names[which[i]]: values[i] for i in range(start, end)}
                start = end

    def _column(self, table: dict[str, array], name: str) -> array:
        if name not in table:
            raise KeyError(unknown_metric_message(name, self.names()))
        return table[name]

    def to_dict(self) -> dict[str, dict[str, list]]:
        """Plain-JSON view: {name: {"steps": [...], "values": [... null for NaN/Inf]}}."""
        return {
            name: {
                "steps": self._steps[name].tolist(),
                "values": [v if math.isfinite(v) else None for v in self._values[name].tolist()],
            }
            for name in self._steps
        }

    @classmethod
    def from_dict(cls, metrics: Mapping[str, Mapping[str, Iterable]]) -> "MetricHistory":
        """Inverse of `to_dict` (null becomes NaN)."""
        history = cls()
        for name, column in metrics.items():
            steps = [int(s) for s in column["steps"]]
            values = [math.nan if v is None else float(v) for v in column["values"]]
            if len(steps) != len(values):
                raise ValueError(
                    f"metric {name!r} has {len(steps)} steps but {len(values)} values"
                )
            history._steps[name] = array("q", steps)
            history._values[name] = array("d", values)
        return history

    def state_dict(self) -> dict[str, dict[str, np.ndarray]]:
        """Arrays for a checkpoint: {name: {"steps": int64 array, "values": float64 array}}."""
        return {name: {"steps": self.steps(name), "values": self.values(name)} for name in self._steps}

    def load_state_dict(self, state: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the contents with `state` (as made by `state_dict`; arrays, or tensors on any
        device, e.g. a checkpoint loaded onto a GPU)."""
        self._steps, self._values = {}, {}
        for name, column in state.items():
            self._steps[name] = array("q", _host_array(column["steps"], np.int64).tobytes())
            self._values[name] = array("d", _host_array(column["values"], np.float64).tobytes())


def _host_array(column: Any, dtype: type) -> np.ndarray:
    """A numpy array of `column`, moving a device tensor to the host first (no torch import)."""
    if hasattr(column, "cpu"):
        column = column.cpu()
    return np.asarray(column, dtype=dtype)


def unknown_metric_message(name: object, known: Iterable[str]) -> str:
    """The error text for a metric that was not recorded, listing those that were."""
    known = sorted(known)
    listed = ", ".join(known) if known else "none yet"
    return f"metric {name!r} was not recorded; recorded metrics: {listed}"


def save_metrics(path: str | os.PathLike, history: MetricHistory, meta: Mapping[str, Any] | None = None) -> None:
    """Write `history` (and run `meta`) to `path` as strict JSON, atomically.

    Columns are encoded one at a time straight into the file, so writing 10^6 records needs
    memory for one column's text, not for the whole document as Python objects.
    """
    header = {
        "format": METRICS_FORMAT,
        "version": METRICS_VERSION,
        "step": "global optimizer step, 1-based: step s is the s-th parameter update",
        "meta": dict(meta or {}),
    }

    def write(f: Any) -> None:
        f.write(json.dumps(header, allow_nan=False)[:-1].encode() + b', "metrics": {')
        for index, name in enumerate(history.names()):
            f.write(b"," if index else b"")
            f.write(f'{json.dumps(name)}: {{"steps": '.encode())
            f.write(json.dumps(history.steps(name).tolist()).encode())
            f.write(b', "values": ')
            f.write(_json_floats(history.values(name)).encode())
            f.write(b"}")
        f.write(b"}}")

    atomic_write(path, write)


def _json_floats(values: np.ndarray) -> str:
    """A JSON array of floats with null for NaN and +-Inf (numbers never contain those words)."""
    text = json.dumps(values.tolist())
    if np.isfinite(values).all():
        return text
    return text.replace("-Infinity", "null").replace("Infinity", "null").replace("NaN", "null")


def load_metrics(path: str | os.PathLike) -> tuple[MetricHistory, dict[str, Any]]:
    """Read a `metrics.json` (or the run folder holding one) into (history, meta).

    Raises FileNotFoundError for a missing file and ValueError for one that is not a
    phasetrain metrics file, both naming the path.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics file at {str(path)!r}")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{str(path)!r} is not valid JSON: {error}") from None
    if not isinstance(document, dict) or document.get("format") != METRICS_FORMAT:
        raise ValueError(f"{str(path)!r} is not a phasetrain metrics file (no \"format\": \"{METRICS_FORMAT}\")")
    try:
        history = MetricHistory.from_dict(document["metrics"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{str(path)!r} has a malformed \"metrics\" section: {error}") from None
    return history, dict(document.get("meta", {}))
