"""Optional metric sinks the trainer fans each logged record out to: JSON lines, CSV, TensorBoard,
Weights & Biases, MLflow.

A sink has three methods: `log(step, metrics)` for one record (1-based global step, name -> float),
`flush()` to push buffered records to disk, and `close()`. `make_loggers` builds sinks from names.
`MetricHistory` / `metrics.json` stay the one store of a run; sinks are extra views of the same
numbers for other tools (`tail -f`, pandas, TensorBoard, W&B, MLflow).

Every built-in sink also has `rewind(history)`: afterwards the sink's view holds exactly
`history`'s records, so a new run in a reused folder starts empty and a resumed run shows every
step once. What that means for each destination:

- jsonl, csv: the file is rewritten with the history's records, atomically.
- tensorboard: a new event file starts with TensorBoard's restart marker (`SessionLog.START` at step
  0, torch's `SummaryWriter(purge_step=0)`), which makes TensorBoard drop every earlier event of
  the folder, then the history is written again. TensorBoard honours the marker once the folder
  holds an earlier one, which this sink writes whenever it starts; events of another program in
  the same folder are not purged.
- wandb, mlflow: a run's logged points cannot be deleted, so the next record opens a new run (same
  name and group / experiment) that first replays the history; the interrupted run keeps its
  points and is marked as failed (W&B exit code 1, MLflow status KILLED). W&B's own in-place rewind
  (`resume_from="<id>?_step=N"`) needs its
  server and is not used.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, runtime_checkable

from phasetrain.run.checks import check_int
from phasetrain.run.files import atomic_write
from phasetrain.run.history import MetricHistory

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

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
        self._file: IO[str] = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - open while logging

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
        self._file = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - open while logging
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

    def __enter__(self) -> Self:
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


_EVENT_FILE_SECOND = re.compile(r"events\.out\.tfevents\.(\d+)\.")


def _names(folder: Path) -> list[str]:
    """The names of the entries of `folder` (none when it does not exist yet)."""
    return [entry.name for entry in folder.iterdir()] if folder.is_dir() else []


class TensorBoardLogger:
    """Write each metric as a TensorBoard scalar (tag = metric name, global step = step).

    Needs the `tensorboard` package (`pip install phasetrain[tensorboard]`); the import happens
    here, not when phasetrain is imported. The event file is opened by `rewind` (with TensorBoard's
    restart marker, see the module notes) or by the first `log`.
    """

    def __init__(self, log_dir: str | os.PathLike) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ImportError(
                "TensorBoardLogger needs the tensorboard package: pip install 'phasetrain[tensorboard]'"
            ) from error
        self.log_dir = Path(log_dir)
        self._summary_writer = SummaryWriter
        self._writer: Any = None

    def rewind(self, history: MetricHistory) -> None:
        """Start a new event file that purges the folder's earlier events, then write `history`'s records.

        TensorBoard reads a folder's event files in name order, and a name starts with the second
        it was created in: a rewind in the same second as the folder's newest event file first
        waits for the next second, so the new file is read last.
        """
        self.close()
        newest = max((int(m.group(1)) for m in map(_EVENT_FILE_SECOND.match, _names(self.log_dir)) if m), default=0)
        while int(time.time()) <= newest:
            time.sleep(0.05)
        self._writer = self._summary_writer(log_dir=str(self.log_dir), purge_step=0)
        for step, record in history.records():
            self.log(step, record)
        self.flush()

    def log(self, step: int, metrics: Mapping[str, float | None]) -> None:
        """Add one scalar per metric at `step`."""
        if self._writer is None:
            self._writer = self._summary_writer(log_dir=str(self.log_dir))
        for name, value in metrics.items():
            if value is not None:
                self._writer.add_scalar(name, float(value), global_step=int(step))

    def flush(self) -> None:
        """Write pending events to the event file."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file (idempotent)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _ReplayingLogger:
    """Shared plumbing of the sinks that send records to a tracking service's runs (W&B, MLflow):
    the run is opened by the first record, `rewind` closes it and has the next one replay a history."""

    def __init__(self) -> None:
        self._replay: MetricHistory | None = None
        self._open = False

    def rewind(self, history: MetricHistory) -> None:
        """Close the current run (if one was opened); the next record opens a new run that first
        replays `history`'s records, so the new run holds every step once."""
        if self._open:
            self._end_run(interrupted=True)
            self._open = False
        self._replay = history

    def log(self, step: int, metrics: Mapping[str, float | None]) -> None:
        """Send the record of `step` (None values skipped)."""
        if not self._open:
            self._start()
        self._send(int(step), {name: float(value) for name, value in metrics.items() if value is not None})

    def _start(self) -> None:
        replay, self._replay = self._replay, None
        last = None if replay is None else max((replay.last_step(n) or 0 for n in replay.names()), default=None)
        self._begin_run(last)
        self._open = True
        for step, record in replay.records() if replay is not None else ():
            self._send(step, record)

    def close(self) -> None:
        """Finish the run (a rewound sink that got no record since still replays its history)."""
        if not self._open and self._replay is not None and self._replay.names():
            self._start()
        if self._open:
            self._end_run(interrupted=False)
            self._open = False
        self._replay = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _begin_run(self, replayed_to_step: int | None) -> None:
        raise NotImplementedError

    def _send(self, step: int, metrics: dict[str, float]) -> None:
        raise NotImplementedError

    def _end_run(self, interrupted: bool) -> None:
        raise NotImplementedError


class WandbLogger(_ReplayingLogger):
    """Send each record to a Weights & Biases run (`run.log(metrics, step=step)`).

    Needs `wandb` (`pip install phasetrain[wandb]`). log_dir: W&B's local files go to
    `log_dir/wandb/`. project, name, group: the W&B run's (defaults: W&B's own project, e.g. the
    WANDB_PROJECT variable; name and group = the log folder's name). init_kwargs: anything else
    `wandb.init` takes (entity, config, tags, mode="offline", ...). Runs are created with
    `reinit="create_new"`, so a W&B run of your own stays open beside this one. `flush` is a no-op
    (W&B sends in the background); `close` finishes the run. On `rewind`, see the module notes.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike,
        project: str | None = None,
        name: str | None = None,
        group: str | None = None,
        **init_kwargs: Any,
    ) -> None:
        super().__init__()
        try:
            import wandb
        except ImportError as error:
            raise ImportError("WandbLogger needs the wandb package: pip install 'phasetrain[wandb]'") from error
        self._wandb = wandb
        self.log_dir = Path(log_dir)
        label = self.log_dir.resolve().name
        self._init_kwargs = {"project": project, "name": name or label, "group": group or label, **init_kwargs}
        self.run: Any = None
        """The open `wandb.Run` (None before the first record and after `close`)."""

    def _begin_run(self, replayed_to_step: int | None) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.run = self._wandb.init(dir=str(self.log_dir), reinit="create_new", **self._init_kwargs)

    def _send(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def flush(self) -> None:
        """Nothing to do: W&B sends records in the background."""

    def _end_run(self, interrupted: bool) -> None:
        self.run.finish(exit_code=1 if interrupted else 0)
        self.run = None


_MLFLOW_BATCH = 1000  # MLflow's limit of metrics per log_batch call


class MlflowLogger(_ReplayingLogger):
    """Send each record to an MLflow run (`MlflowClient.log_batch`, metric key = metric name).

    Needs `mlflow` or `mlflow-skinny` (`pip install phasetrain[mlflow]`). log_dir: recorded as the
    run's tag `phasetrain.log_dir`. tracking_uri: MLflow's tracking URI (None: MLflow's own
    resolution, e.g. the MLFLOW_TRACKING_URI variable). experiment: the experiment's name (created
    when missing). run_name: default the log folder's name. flush_every: records buffered before
    one `log_batch`. A rewound run's replacement carries the tag `phasetrain.replayed_to_step`.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike,
        tracking_uri: str | None = None,
        experiment: str = "phasetrain",
        run_name: str | None = None,
        flush_every: int = DEFAULT_FLUSH_EVERY,
    ) -> None:
        super().__init__()
        check_int("flush_every", flush_every)
        try:
            from mlflow.entities import Metric
            from mlflow.tracking import MlflowClient
        except ImportError as error:
            raise ImportError("MlflowLogger needs mlflow: pip install 'phasetrain[mlflow]'") from error
        self._metric = Metric
        self.client = MlflowClient(tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
        self.log_dir = Path(log_dir)
        self.run_name = run_name or self.log_dir.resolve().name
        self.run_id: str | None = None
        """The id of the open MLflow run (None before the first record and after `close`)."""
        self._flush_every = flush_every
        self._pending: list[Any] = []
        self._records = 0

    def _begin_run(self, replayed_to_step: int | None) -> None:
        tags = {"phasetrain.log_dir": str(self.log_dir)}
        if replayed_to_step is not None:
            tags["phasetrain.replayed_to_step"] = str(replayed_to_step)
        self.run_id = self.client.create_run(self.experiment_id, run_name=self.run_name, tags=tags).info.run_id

    def _send(self, step: int, metrics: dict[str, float]) -> None:
        stamp = int(time.time() * 1000)
        self._pending.extend(self._metric(name, value, stamp, step) for name, value in metrics.items())
        self._records += 1
        if self._records >= self._flush_every:
            self.flush()

    def flush(self) -> None:
        """Send the buffered metrics (in batches of at most 1,000)."""
        for start in range(0, len(self._pending), _MLFLOW_BATCH):
            self.client.log_batch(self.run_id, metrics=self._pending[start:start + _MLFLOW_BATCH])
        self._pending, self._records = [], 0

    def _end_run(self, interrupted: bool) -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status="KILLED" if interrupted else "FINISHED")
        self.run_id = None


LOGGER_FILES = {
    "jsonl": ("metrics.jsonl", JsonlLogger),
    "csv": ("metrics.csv", CSVLogger),
    "tensorboard": ("tensorboard", TensorBoardLogger),
    "wandb": (".", WandbLogger),
    "mlflow": (".", MlflowLogger),
}
"""Sink name -> (path inside the run folder handed to the sink, the sink's class)."""


def make_loggers(
    spec: str | MetricLogger | Iterable[str | MetricLogger] | None, log_dir: str | os.PathLike
) -> list[MetricLogger]:
    """Build the sinks named in `spec` inside `log_dir`.

    `spec` is None (no sinks), one name, or a list of names and ready-made sink objects (passed
    through). Names: "jsonl" -> `log_dir/metrics.jsonl`, "csv" -> `log_dir/metrics.csv`,
    "tensorboard" -> event files under `log_dir/tensorboard/`, "wandb" -> a W&B run named after
    `log_dir` (local files in `log_dir/wandb/`; project from WANDB_PROJECT, offline with
    WANDB_MODE=offline), "mlflow" -> an MLflow run in the experiment "phasetrain" of the tracking
    URI in MLFLOW_TRACKING_URI. Each name may appear once; build `WandbLogger` / `MlflowLogger`
    yourself for other settings.
    """
    items = check_logger_spec(spec)
    sinks: list[MetricLogger] = []
    for item in items:
        if isinstance(item, str):
            filename, factory = LOGGER_FILES[item.strip().lower()]
            item = factory(Path(log_dir) / filename)
        sinks.append(item)
    return sinks


def check_logger_spec(spec: str | MetricLogger | Iterable[str | MetricLogger] | None) -> list[str | MetricLogger]:
    """The entries of a `loggers` setting, checked (known names, each once; objects with
    log/flush/close) without building anything."""
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
    return items


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
