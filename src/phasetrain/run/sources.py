"""Read the runs researchers already have: phasetrain, TensorBoard, CSV, Lightning, Hugging Face, JSONL.

`load_run(path)` recognises the format from what lies at `path` (`detect_format`) and returns
`(MetricHistory, meta)`, so the detector, the report, `phasetrain detect|report|summary|compare`
work on any of them. Metric names are kept as the source spells them (`train/loss`,
`eval_accuracy`); steps are the source's own step numbers (the 1-based global step for phasetrain;
the logging library's `global_step` for TensorBoard, Lightning and Hugging Face). Rows without a
usable step and non-numeric cells are skipped and counted in `meta["skipped"]`; when a step is
logged more than once, the last value wins (a resumed run that logged the same steps again).

A Lightning CSVLogger version folder is recognised by its `hparams.yaml` or, as Lightning writes that
file only for a module that calls `save_hyperparameters()`, by the name CSVLogger gives the folder,
`version_<n>`: such a folder is read as Lightning, not as a plain CSV, with or without hyper-parameters.

`meta` holds `"format"` (a key of `FORMATS`), `"source"` (the file or folder read), `"config"`
(hyper-parameters where the format stores them, else absent) and `"skipped"` (counts of rows
without a step and of non-numeric values); Hugging Face runs add `"state_file"` (the
trainer_state.json read) and `"train_summary"` (its closing runtime record); a phasetrain run
keeps its own meta (counters, `config`) as well. Only the TensorBoard reader needs a package
beyond numpy (`tensorboard`, imported when used); nothing here imports torch.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from phasetrain.run.history import METRICS_FORMAT, MetricHistory, load_metrics

FORMATS = {
    "phasetrain": "a phasetrain run folder or its metrics.json",
    "tensorboard": "a TensorBoard log folder or event file (events.out.tfevents.*, scalars of any tag)",
    "lightning": "a Lightning CSVLogger version folder (metrics.csv, with hparams.yaml or in a version_<n> folder)",
    "huggingface": "a Hugging Face Trainer output folder or trainer_state.json (its log_history)",
    "csv": "a CSV file, long (step,metric,value) or wide (step,<metric>,...)",
    "jsonl": "a JSON-lines file, one object per line with a step",
}
"""The formats `load_run` reads: name -> what it accepts."""

STEP_KEYS = ("step", "global_step", "_step")
"""Column / key names taken as the step, in order of preference (matched case-insensitively)."""

LONG_CSV_HEADER = ("step", "metric", "value")

_EVENT_FILE = re.compile(r"events\.out\.tfevents\.")
_LIGHTNING_VERSION = re.compile(r"version_\d+")  # the folder CSVLogger writes a run into
_TENSORBOARD_SEARCH_DEPTH = 3  # sub-folder levels searched for event files (runs/exp/version_0/...)


def load_run(path: str | os.PathLike, format: str = "auto") -> tuple[MetricHistory, dict[str, Any]]:
    """Read the run at `path` into `(history, meta)`.

    path: a file or folder in one of `FORMATS`. format: "auto" (recognise it, `detect_format`) or
    one of the names of `FORMATS` to skip recognition. Raises FileNotFoundError when `path` does
    not exist, ValueError naming the path when it is not a run this module can read (listing the
    formats accepted) or holds no numeric record, ImportError naming the extra when the
    format needs a package that is not installed.
    """
    path = Path(path)
    if format != "auto" and format not in FORMATS:
        raise ValueError(f"format must be 'auto' or one of {', '.join(map(repr, FORMATS))}; got {format!r}")
    if not path.exists():
        raise FileNotFoundError(f"no run at {str(path)!r}: the path does not exist")
    if format == "auto":
        format = detect_format(path)
    history, meta = _READERS[format](path)
    if not history.names() and format != "phasetrain":
        raise ValueError(f"{str(path)!r} (read as {format}) holds no numeric record with a step")
    return history, {"format": format, "source": str(path), **meta}


def detect_format(path: str | os.PathLike) -> str:
    """The name (a key of `FORMATS`) of the run format at `path`.

    Folders are tried in this order: a phasetrain `metrics.json`; Lightning (`metrics.csv` beside
    `hparams.yaml` or in a folder named `version_<n>`); Hugging Face (`trainer_state.json`, here or
    in a `checkpoint-*` sub-folder); TensorBoard event files (here or up to 3 sub-folder levels
    down); `metrics.jsonl`; `metrics.csv`; any other `metrics.json` (phasetrain's loader then says
    what is wrong with it). Files go by name and contents: `*.jsonl`, `*.csv` (Lightning when its
    folder is one, as above), `*tfevents*`, a JSON file with the phasetrain format marker or a
    `log_history` list. Raises ValueError naming the path and listing the formats accepted when
    none fits.
    """
    path = Path(path)
    if path.is_dir():
        found = _folder_format(path)
    elif path.is_file():
        found = _file_format(path)
    else:
        raise FileNotFoundError(f"no run at {str(path)!r}: the path does not exist")
    if found is None:
        accepted = "; ".join(f"{name}: {text}" for name, text in FORMATS.items())
        raise ValueError(f"{str(path)!r} is not a run phasetrain can read. Accepted: {accepted}")
    return found


def _folder_format(folder: Path) -> str | None:
    if _is_phasetrain_json(folder / "metrics.json"):
        return "phasetrain"
    if (folder / "metrics.csv").is_file() and _is_lightning_folder(folder):
        return "lightning"
    if _trainer_state(folder) is not None:
        return "huggingface"
    if next(_event_files(folder), None) is not None:
        return "tensorboard"
    for name, format in (("metrics.jsonl", "jsonl"), ("metrics.csv", "csv"), ("metrics.json", "phasetrain")):
        if (folder / name).is_file():
            return format
    return None


def _file_format(file: Path) -> str | None:
    name = file.name.lower()
    if _EVENT_FILE.search(name):
        return "tensorboard"
    if name.endswith(".jsonl"):
        return "jsonl"
    if name.endswith(".csv"):
        return "lightning" if _is_lightning_folder(file.parent) else "csv"
    if name.endswith(".json"):
        if _is_phasetrain_json(file):
            return "phasetrain"
        document = _read_json(file)
        if isinstance(document, dict) and isinstance(document.get("log_history"), list):
            return "huggingface"
        if name == "metrics.json":
            return "phasetrain"
    return None


def _is_lightning_folder(folder: Path) -> bool:
    """Whether `folder` is where a Lightning CSVLogger writes: it holds `hparams.yaml`, or it is named
    as CSVLogger names its version folders (`version_<n>`)."""
    return (folder / "hparams.yaml").is_file() or _LIGHTNING_VERSION.fullmatch(folder.name) is not None


def _is_phasetrain_json(file: Path) -> bool:
    """Whether `file` starts like a phasetrain metrics.json (the writer puts the marker first)."""
    if not file.is_file():
        return False
    with open(file, "rb") as f:
        head = f.read(200)
    return re.search(rb'"format"\s*:\s*"' + METRICS_FORMAT.encode() + b'"', head) is not None


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{str(file)!r} is not valid JSON: {error}") from None


# ----------------------------------------------------------------------------- cells and columns
def _as_step(cell: Any) -> int | None:
    """An integral step from a number or text ('10', '10.0'), else None."""
    value = _as_number(cell)
    if value is None or not math.isfinite(value) or not value.is_integer():
        return None
    return int(value)


def _as_number(cell: Any) -> float | None:
    """A float from a number or numeric text ('0.5', 'nan', 'inf'), else None (bools are not numbers)."""
    if isinstance(cell, bool):
        return None
    if isinstance(cell, (int, float)):
        return float(cell)
    if isinstance(cell, str):
        try:
            return float(cell)
        except ValueError:
            return None
    return None


class _Columns:
    """metric -> {step: value} as rows arrive; a repeated step keeps its last value."""

    def __init__(self) -> None:
        self.columns: dict[str, dict[int, float]] = {}
        self.rows_without_step = 0
        self.non_numeric_values = 0

    def add(self, step: int, name: str, cell: Any) -> None:
        """Record `cell` (a number, numeric text, or None for JSON null = non-finite) at `step`;
        empty text is no record, other non-numeric cells are counted and dropped."""
        if isinstance(cell, str) and not cell.strip():
            return
        value = math.nan if cell is None else _as_number(cell)
        if value is None:
            self.non_numeric_values += 1
            return
        self.columns.setdefault(name, {})[step] = value

    def add_row(self, row: Mapping[str, Any], step_key: str | None) -> None:
        """One record: `row[step_key]` is the step, every other entry a metric."""
        step = _as_step(row.get(step_key)) if step_key is not None else None
        if step is None:
            self.rows_without_step += 1
            return
        for name, cell in row.items():
            if name != step_key and name:
                self.add(step, name, cell)

    def result(self, **meta: Any) -> tuple[MetricHistory, dict[str, Any]]:
        ordered = {name: sorted(column.items()) for name, column in self.columns.items()}
        history = MetricHistory.from_dict({
            name: {"steps": [step for step, _ in pairs], "values": [value for _, value in pairs]}
            for name, pairs in ordered.items()
        })
        skipped = {"rows_without_step": self.rows_without_step, "non_numeric_values": self.non_numeric_values}
        return history, {**meta, "skipped": skipped}


def _step_key(keys: Iterable[str]) -> str | None:
    """The key of `keys` naming the step (see STEP_KEYS), or None."""
    by_lower = {key.strip().lower(): key for key in keys if isinstance(key, str)}
    return next((by_lower[name] for name in STEP_KEYS if name in by_lower), None)


def _flatten(record: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(name, value) pairs of a JSON object, nested objects joined with '/' ({"train": {"loss": 1}} -> train/loss)."""
    for key, value in record.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", value


# ----------------------------------------------------------------------------- readers
def _read_phasetrain(path: Path) -> tuple[MetricHistory, dict[str, Any]]:
    return load_metrics(path)


def _read_jsonl(path: Path) -> tuple[MetricHistory, dict[str, Any]]:
    file = path / "metrics.jsonl" if path.is_dir() else path
    columns = _Columns()
    with open(file, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # e.g. a last line cut short by a crash
                record = None
            if not isinstance(record, dict):
                columns.rows_without_step += 1
                continue
            row = dict(_flatten(record))
            columns.add_row(row, _step_key(row))
    return columns.result()


def _read_csv_file(file: Path, columns: _Columns) -> None:
    with open(file, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{str(file)!r} is an empty CSV file")
        header = [cell.strip() for cell in header]
        if tuple(cell.lower() for cell in header) == LONG_CSV_HEADER:
            for row in reader:
                step = _as_step(row[0]) if len(row) == 3 else None
                if step is None:
                    columns.rows_without_step += 1
                else:
                    columns.add(step, row[1], row[2])
            return
        step_key = _step_key(header)
        if step_key is None:
            raise ValueError(
                f"{str(file)!r} has no step column: a long CSV has the header step,metric,value; a wide one "
                f"a column named one of {', '.join(STEP_KEYS)}; the header is {','.join(header)}"
            )
        for row in reader:
            columns.add_row(dict(zip(header, row)), step_key)


def _read_csv(path: Path) -> tuple[MetricHistory, dict[str, Any]]:
    columns = _Columns()
    _read_csv_file(path / "metrics.csv" if path.is_dir() else path, columns)
    return columns.result()


def _read_lightning(path: Path) -> tuple[MetricHistory, dict[str, Any]]:
    """metrics.csv of a CSVLogger version folder (or the CSV file given), with `hparams.yaml` as the
    config when the folder has one (Lightning writes it only for `save_hyperparameters()`)."""
    folder = path if path.is_dir() else path.parent
    columns = _Columns()
    _read_csv_file(folder / "metrics.csv" if path.is_dir() else path, columns)
    hparams = folder / "hparams.yaml"
    return columns.result(**({"config": _read_hparams_yaml(hparams)} if hparams.is_file() else {}))


def _read_hparams_yaml(file: Path) -> dict[str, Any]:
    """Lightning's hyper-parameters (`save_hyperparameters()`), flattened with '.' for nested ones."""
    try:
        import yaml
    except ImportError as error:
        raise ImportError(
            f"reading {str(file)!r} needs PyYAML (installed with Lightning): pip install 'phasetrain[lightning]'"
        ) from error
    try:
        document = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"{str(file)!r} is not valid YAML: {' '.join(str(error).split())}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):  # a bad file, not a wrong argument: ValueError
        raise ValueError(  # noqa: TRY004
            f"{str(file)!r} should hold a mapping of hyper-parameters, got {type(document).__name__}"
        )
    return flatten_config(document)


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested configuration as one level, keys joined with '.' ({"optim": {"lr": 1}} -> {"optim.lr": 1}).

    config: a mapping whose values may be mappings again. prefix: put before every key (used by
    the recursion; "" at the top). Values that are not mappings are kept as they are.
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _trainer_state(folder: Path) -> Path | None:
    """`folder/trainer_state.json`, else that of the newest `checkpoint-<step>` sub-folder, else None."""
    top = folder / "trainer_state.json"
    if top.is_file():
        return top
    checkpoints = []
    for child in folder.glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", child.name)
        if match and (child / "trainer_state.json").is_file():
            checkpoints.append((int(match.group(1)), child / "trainer_state.json"))
    return max(checkpoints)[1] if checkpoints else None


_HF_RUN_SUMMARY_KEY = "train_runtime"  # the last log_history record sums up the run; it is not a curve point


def _read_huggingface(path: Path) -> tuple[MetricHistory, dict[str, Any]]:
    file = _trainer_state(path) if path.is_dir() else path
    if file is None:
        raise ValueError(f"{str(path)!r} holds no trainer_state.json (nor a checkpoint-*/trainer_state.json)")
    state = _read_json(file)
    if not isinstance(state, dict) or not isinstance(state.get("log_history"), list):
        raise ValueError(f"{str(file)!r} is not a Hugging Face trainer state (no \"log_history\" list)")  # noqa: TRY004
    columns = _Columns()
    train_summary: dict[str, Any] = {}
    for record in state["log_history"]:
        if isinstance(record, dict) and _HF_RUN_SUMMARY_KEY in record:
            train_summary = record
        elif isinstance(record, dict):
            columns.add_row(record, "step")
        else:
            columns.rows_without_step += 1
    config: dict[str, Any] = {}
    model_config = file.parent / "config.json"
    if model_config.is_file():
        document = _read_json(model_config)
        if isinstance(document, dict):
            config.update(flatten_config(document))
    config.update(flatten_config(state.get("trial_params") or {}))
    config.update({key: value for key, value in state.items()
                   if isinstance(value, (int, float, str, bool))})
    extra = {"train_summary": train_summary} if train_summary else {}
    return columns.result(config=config, state_file=str(file), **extra)


def _event_files(folder: Path, depth: int = _TENSORBOARD_SEARCH_DEPTH) -> Iterator[Path]:
    """Event files in `folder` and its sub-folders down to `depth` levels, sorted per folder."""
    try:
        entries = sorted(folder.iterdir())
    except (PermissionError, NotADirectoryError):
        return
    for entry in entries:
        if entry.is_file() and _EVENT_FILE.search(entry.name):
            yield entry
    if depth > 0:
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                yield from _event_files(entry, depth - 1)


def _read_tensorboard(path: Path) -> tuple[MetricHistory, dict[str, Any]]:
    """Every scalar tag of every event-file folder under `path`; tags of a sub-folder are prefixed
    with its relative path (`add_scalars("loss", {"train": ...})` writes `loss_train/`: `loss_train/loss`).

    Read through the accumulator TensorBoard's own UI uses, so the reader sees what TensorBoard
    shows: legacy `simple_value` scalars and TF2 scalar tensors alike, and a restarted writer's
    `SessionLog.START` (torch's `SummaryWriter(purge_step=...)`) drops the events it supersedes
    once a run folder holds an earlier START. Hyper-parameters written with
    `SummaryWriter.add_hparams` become `meta["config"]`, and the metrics it writes beside them (into
    a sub-folder named by the time) `meta["hparam_metrics"]` ({tag: value}), not curves.
    """
    try:
        from tensorboard.backend.event_processing import plugin_event_accumulator
        from tensorboard.plugins.hparams import plugin_data_pb2
        from tensorboard.util import tensor_util
    except ImportError as error:
        raise ImportError(
            f"reading the TensorBoard log {str(path)!r} needs the tensorboard package: "
            "pip install 'phasetrain[tensorboard]'"
        ) from error
    if path.is_dir():
        root, sources = path, sorted({file.parent for file in _event_files(path)})
    else:
        root, sources = path.parent, [path]
    columns = _Columns()
    config: dict[str, Any] = {}
    hparam_metrics: dict[str, float] = {}
    for source in sources:
        accumulator = plugin_event_accumulator.EventAccumulator(
            str(source), size_guidance={plugin_event_accumulator.TENSORS: 0}
        )
        accumulator.Reload()
        folder = source if source.is_dir() else source.parent
        prefix = "" if folder == root else folder.relative_to(root).as_posix() + "/"
        try:
            hparams = accumulator.PluginTagToContent("hparams").values()
        except KeyError:  # no hyper-parameters in this folder
            hparams = ()
        for content in hparams:
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
            if data.HasField("session_start_info"):
                for key, value in data.session_start_info.hparams.items():
                    kind = value.WhichOneof("kind")
                    if kind in ("number_value", "string_value", "bool_value"):
                        config[key] = getattr(value, kind)
        # torch's add_hparams writes its summary metrics into a sub-folder named by the time: not curves
        summary_only = bool(hparams) and re.fullmatch(r"\d+(\.\d+)?", folder.name) is not None
        for tag in accumulator.Tags()[plugin_event_accumulator.TENSORS]:
            if accumulator.SummaryMetadata(tag).plugin_data.plugin_name != "scalars":
                continue
            for event in accumulator.Tensors(tag):
                value = tensor_util.make_ndarray(event.tensor_proto)
                if value.size != 1:
                    continue
                if summary_only:
                    hparam_metrics[tag] = float(value.reshape(()))
                else:
                    columns.add(event.step, prefix + tag, float(value.reshape(())))
    extra = {"config": config} if config else {}
    return columns.result(**extra, **({"hparam_metrics": hparam_metrics} if hparam_metrics else {}))


_READERS = {
    "phasetrain": _read_phasetrain,
    "tensorboard": _read_tensorboard,
    "lightning": _read_lightning,
    "huggingface": _read_huggingface,
    "csv": _read_csv,
    "jsonl": _read_jsonl,
}
