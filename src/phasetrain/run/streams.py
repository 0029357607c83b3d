"""Optional metric sinks the trainer fans each logged record out to: JSON lines, CSV, TensorBoard.

A sink has three methods: `log(step, metrics)` for one record (1-based global step, name -> float),
`flush()` to push buffered records to disk, and `close()`. `make_loggers` builds sinks from names.
`MetricHistory` / `metrics.json` stay the one store of a run; sinks are extra views of the same
numbers for other tools (`tail -f`, pandas, TensorBoard).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import IO, Iterable, Mapping, Protocol, runtime_checkable

from phasetrain.run.files import atomic_write
from phasetrain.run.config import check_int
from phasetrain.run.history import MetricHistory

DEFAULT_FLUSH_EVERY = 100

_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


@runtime_checkable
class MetricLogger(Protocol):
    """What the trainer calls on every metric sink."""

    def log(self, step: int, metrics: Mapping[str, float | None]) -> None:
        """Record `metrics` (name -> value) at 1-based global `step`; None values are skipped,
        as `MetricHistory.log` skips them."""

    def flush(self) -> None:
        """Push buffered records to their destination."""

    def close(self) -> None:
        """Flush and release the destination; later `log` calls are errors."""


class _FileLogger:
    """Shared plumbing of the text-file sinks: append-mode file, flush every `flush_every` records."""

    def __init__(self, path: str | os.PathLike, flush_every: int) -> None:
        check_int("flush_every", flush_every)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._flush_every = flush_every
        self._pending = 0
        self._file: IO[str] = open(self.path, "a", encoding="utf-8", newline="")

    def rewind(self, history: MetricHistory) -> None:
        """Replace the file's contents with `history`'s records, atomically, and keep appending.

        The trainer calls this when it starts (empty history: a fresh stream) and when it resumes
        (the checkpoint's history: records logged after the checkpoint are forgotten).
        """
        self._file.close()

        def write(f: IO[bytes]) -> None:
            text = io.TextIOWrapper(f, encoding="utf-8", newline="")
            self._write_header(text)
            for step, record in history.records():
                self._write_record(text, step, record)
            text.flush()
            text.detach()

        atomic_write(self.path, write)
        self._file = open(self.path, "a", encoding="utf-8", newline="")
        self._pending = 0

    def _write_header(self, file: IO[str]) -> None:
        """Written at the top of a new file (nothing by default)."""

    def _write_record(self, file: IO[str], step: int, metrics: Mapping[str, float | None]) -> None:
        raise NotImplementedError

    def log(self, step: int, metrics: Mapping[str, float | None]) -> None:
        """Append the record of `step`."""
        self._write_record(self._file, int(step), metrics)
        self._wrote_record()

    def _wrote_record(self) -> None:
        self._pending += 1
        if self._pending >= self._flush_every:
            self.flush()

    def flush(self) -> None:
        """Push buffered lines to the OS so readers of the file see every record so far."""
        self._file.flush()
        self._pending = 0

    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        if not self._file.closed:
            self._file.flush()
            self._file.close()

    def __enter__(self) -> "_FileLogger":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class JsonlLogger(_FileLogger):
    """Append one JSON object per record, `{"step": s, "<metric>": value, ...}`, to `path`.

    Non-finite values (NaN, Inf) are written as null so every line is strict JSON. Costs a few
    microseconds per record; the file is flushed every `flush_every` records and on `close`.
    """

    def __init__(self, path: str | os.PathLike, flush_every: int = DEFAULT_FLUSH_EVERY) -> None:
        super().__init__(path, flush_every)

    def _write_record(self, file: IO[str], step: int, metrics: Mapping[str, float | None]) -> None:
        record: dict[str, float | int | None] = {"step": step}
        for name, value in metrics.items():
            if value is not None:
                value = float(value)
                record[name] = value if math.isfinite(value) else None
        file.write(_ENCODER.encode(record) + "\n")


class CSVLogger(_FileLogger):
    """Append records to a long-format CSV, one row per value: `step,metric,value`.

    Long format lets new metric names appear at any step (a curvature probe every 50 steps, a user
    monitor added on resume). Non-finite values are written as `nan`, `inf`, `-inf`, which
    `float()` and pandas read back. The header is written when the file is new or empty.
    """

    HEADER = ("step", "metric", "value")

    def __init__(self, path: str | os.PathLike, flush_every: int = DEFAULT_FLUSH_EVERY) -> None:
        super().__init__(path, flush_every)
        if self._file.tell() == 0:
            self._write_header(self._file)

    def _write_header(self, file: IO[str]) -> None:
        csv.writer(file, lineterminator="\n").writerow(self.HEADER)

    def _write_record(self, file: IO[str], step: int, metrics: Mapping[str, float | None]) -> None:
        csv.writer(file, lineterminator="\n").writerows(
            (step, name, repr(float(value))) for name, value in metrics.items() if value is not None
        )


class TensorBoardLogger:
    """Write each metric as a TensorBoard scalar (tag = metric name, global step = step).

    Needs the `tensorboard` package (`pip install phasetrain[tensorboard]`); the import happens
    here, not when phasetrain is imported.
    """

    def __init__(self, log_dir: str | os.PathLike) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ImportError(
                "TensorBoardLogger needs the tensorboard package: pip install 'phasetrain[tensorboard]'"
            ) from error
        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def log(self, step: int, metrics: Mapping[str, float | None]) -> None:
        """Add one scalar per metric at `step`."""
        for name, value in metrics.items():
            if value is not None:
                self._writer.add_scalar(name, float(value), global_step=int(step))

    def flush(self) -> None:
        """Write pending events to the event file."""
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()

    def __enter__(self) -> "TensorBoardLogger":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


LOGGER_FILES = {
    "jsonl": ("metrics.jsonl", JsonlLogger),
    "csv": ("metrics.csv", CSVLogger),
    "tensorboard": ("tensorboard", TensorBoardLogger),
}


def make_loggers(
    spec: str | MetricLogger | Iterable[str | MetricLogger] | None, log_dir: str | os.PathLike
) -> list[MetricLogger]:
    """Build the sinks named in `spec` inside `log_dir`.

    `spec` is None (no sinks), one name, or a list of names and ready-made sink objects (passed
    through). Names: "jsonl" -> `log_dir/metrics.jsonl`, "csv" -> `log_dir/metrics.csv`,
    "tensorboard" -> event files under `log_dir/tensorboard/`. Each name may appear once.
    """
    if spec is None:
        return []
    items = [spec] if isinstance(spec, (str, MetricLogger)) else spec
    try:
        items = list(items)
    except TypeError:
        raise TypeError(
            f"loggers must be None, a name, a logger or a list of them, got {type(spec).__name__}"
        ) from None
    allowed = ", ".join(repr(name) for name in LOGGER_FILES)
    names = [item.strip().lower() for item in items if isinstance(item, str)]
    for item in items:
        if not isinstance(item, (str, MetricLogger)):
            raise TypeError(f"loggers entries must be names or logger objects, got {item!r}")
        if isinstance(item, str) and item.strip().lower() not in LOGGER_FILES:
            raise ValueError(f"loggers got unknown name {item!r}; allowed: {allowed}")
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValueError(f"loggers names {duplicated} more than once; each sink may appear once")
    sinks: list[MetricLogger] = []
    for item in items:
        if isinstance(item, str):
            filename, factory = LOGGER_FILES[item.strip().lower()]
            item = factory(Path(log_dir) / filename)
        sinks.append(item)
    return sinks


def close_loggers(sinks: Iterable[MetricLogger]) -> None:
    """Close every sink (flushing it), even when one of them fails; then raise the first failure.

    Args:
        sinks: the run's metric sinks (`make_loggers`' result, user sinks included).

    Call it once when the run ends, normally or by an exception, so no stream file stays open.
    """
    first: BaseException | None = None
    for sink in sinks:
        try:
            sink.close()
        except Exception as error:  # noqa: BLE001 - keep closing the others; the first failure is raised below
            first = first or error
    if first is not None:
        raise first
