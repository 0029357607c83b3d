import csv
import json
import math
import sys

import pytest

from phasetrain.run.streams import CSVLogger, JsonlLogger, MetricLogger, TensorBoardLogger, make_loggers

RECORDS = [
    (1, {"train_loss": 2.5, "train_acc": 0.125, "val_acc": None}),
    (2, {"train_loss": float("nan"), "grad_norm": float("inf")}),
    (3, {"train_loss": 0.75, "hessian_eig_1": -1.5e-7}),
]


def _write(logger, records=RECORDS):
    with logger:
        for step, metrics in records:
            logger.log(step, metrics)


def test_jsonl_logger_writes_one_strict_json_object_per_record_null_for_non_finite_none_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write(JsonlLogger(path))
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"step": 1, "train_loss": 2.5, "train_acc": 0.125},
        {"step": 2, "train_loss": None, "grad_norm": None},
        {"step": 3, "train_loss": 0.75, "hessian_eig_1": -1.5e-7},
    ]


def test_jsonl_logger_appends_to_an_existing_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write(JsonlLogger(path), RECORDS[:1])
    _write(JsonlLogger(path), RECORDS[2:])
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 3]


def test_jsonl_logger_flushes_every_n_records_so_readers_see_them_before_close(tmp_path):
    path = tmp_path / "metrics.jsonl"
    logger = JsonlLogger(path, flush_every=2)
    logger.log(1, {"a": 1.0})
    logger.log(2, {"a": 2.0})
    logger.log(3, {"a": 3.0})
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    logger.close()
    assert len(path.read_text().splitlines()) == 3


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-3, ValueError), (1.5, TypeError), (True, TypeError)])
def test_file_loggers_reject_a_flush_every_that_is_not_a_positive_int(tmp_path, bad, error):
    with pytest.raises(error, match="flush_every"):
        CSVLogger(tmp_path / "m.csv", flush_every=bad)


def test_csv_logger_writes_long_format_rows_that_parse_back_exactly(tmp_path):
    path = tmp_path / "metrics.csv"
    _write(CSVLogger(path))
    rows = list(csv.DictReader(path.open()))
    parsed = [(int(r["step"]), r["metric"], float(r["value"])) for r in rows]
    expected = [(s, name, value) for s, metrics in RECORDS for name, value in metrics.items() if value is not None]
    assert len(parsed) == len(expected)
    for got, want in zip(parsed, expected):
        assert got[:2] == want[:2]
        assert got[2] == want[2] or (math.isnan(got[2]) and math.isnan(want[2]))


def test_csv_logger_writes_the_header_once_when_appending(tmp_path):
    path = tmp_path / "metrics.csv"
    _write(CSVLogger(path), RECORDS[:1])
    _write(CSVLogger(path), RECORDS[2:])
    lines = path.read_text().splitlines()
    assert lines[0] == "step,metric,value"
    assert lines.count("step,metric,value") == 1
    assert len(lines) == 1 + 2 + 2


def test_tensorboard_logger_event_file_reads_back_every_scalar(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    records = [(1, {"train_loss": 2.5, "lr": 0.01}), (5, {"train_loss": 1.25, "lr": None}), (9, {"train_loss": 0.5})]
    _write(TensorBoardLogger(tmp_path / "tb"), records)
    accumulator = event_accumulator.EventAccumulator(str(tmp_path / "tb"))
    accumulator.Reload()
    assert sorted(accumulator.Tags()["scalars"]) == ["lr", "train_loss"]
    loss = accumulator.Scalars("train_loss")
    assert [(e.step, e.value) for e in loss] == [(1, 2.5), (5, 1.25), (9, 0.5)]
    assert [(e.step, e.value) for e in accumulator.Scalars("lr")] == [(1, pytest.approx(0.01))]


def test_make_loggers_maps_names_to_sinks_inside_log_dir(tmp_path):
    sinks = make_loggers(["jsonl", "CSV", "tensorboard"], tmp_path)
    try:
        assert [type(s) for s in sinks] == [JsonlLogger, CSVLogger, TensorBoardLogger]
        assert sinks[0].path == tmp_path / "metrics.jsonl"
        assert sinks[1].path == tmp_path / "metrics.csv"
        assert sinks[2].log_dir == tmp_path / "tensorboard"
        assert all(isinstance(s, MetricLogger) for s in sinks)
    finally:
        for sink in sinks:
            sink.close()


def test_make_loggers_accepts_none_a_single_name_and_passes_logger_objects_through(tmp_path):
    assert make_loggers(None, tmp_path) == []
    custom = JsonlLogger(tmp_path / "mine.jsonl")
    sinks = make_loggers(["csv", custom], tmp_path)
    assert sinks[1] is custom and isinstance(sinks[0], CSVLogger)
    (single,) = make_loggers("jsonl", tmp_path)
    assert isinstance(single, JsonlLogger)
    for sink in [*sinks, single]:
        sink.close()


def test_make_loggers_rejects_an_unknown_name_listing_the_allowed_ones_and_creates_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"loggers.*'neptune'.*'jsonl', 'csv', 'tensorboard', 'wandb', 'mlflow'"):
        make_loggers(["csv", "neptune"], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_make_loggers_rejects_duplicates_and_objects_that_are_not_loggers(tmp_path):
    with pytest.raises(ValueError, match="loggers.*more than once"):
        make_loggers(["csv", "csv"], tmp_path)
    with pytest.raises(TypeError, match="loggers"):
        make_loggers([42], tmp_path)
    with pytest.raises(TypeError, match="loggers"):
        make_loggers(3.5, tmp_path)


def test_rewind_replaces_the_stream_with_the_history(tmp_path):
    from phasetrain.run.history import MetricHistory
    from phasetrain.run.streams import CSVLogger, JsonlLogger

    history = MetricHistory()
    history.log(1, {"a": 1.0})
    history.log(2, {"a": 2.0, "b": float("nan")})
    jsonl, csv_sink = JsonlLogger(tmp_path / "m.jsonl"), CSVLogger(tmp_path / "m.csv")
    for sink in (jsonl, csv_sink):
        sink.log(1, {"a": 1.0})
        sink.log(5, {"a": 9.0})  # logged after the checkpoint: must be forgotten
        sink.rewind(history)
        sink.log(3, {"a": 3.0})
        sink.close()
    lines = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert lines == [{"step": 1, "a": 1.0}, {"step": 2, "a": 2.0, "b": None}, {"step": 3, "a": 3.0}]
    rows = (tmp_path / "m.csv").read_text().splitlines()
    assert rows == ["step,metric,value", "1,a,1.0", "2,a,2.0", "2,b,nan", "3,a,3.0"]


def test_a_new_trainer_starts_a_fresh_stream(tmp_path):
    import torch
    from torch import nn, optim

    from phasetrain import PhaseTransitionTrainer

    (tmp_path / "metrics.jsonl").write_text('{"step": 7, "train_loss": 1.0}\n')
    model = nn.Linear(2, 2)
    trainer = PhaseTransitionTrainer(model, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                                     log_dir=tmp_path, log_freq=1, progress_bar=False, overwrite=True)
    trainer.train([(torch.randn(4, 2), torch.randint(0, 2, (4,)))], num_epochs=1)
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert 7 not in steps and steps[0] == 1


def _history(records):
    from phasetrain.run.history import MetricHistory

    history = MetricHistory()
    for step, metrics in records:
        history.log(step, metrics)
    return history


def _tensorboard_points(log_dir):
    """{tag: [(step, value)]} as TensorBoard's UI reads them, and as the classic EventAccumulator does."""
    from tensorboard.backend.event_processing import event_accumulator

    from phasetrain.run.sources import load_run

    history, _ = load_run(log_dir, format="tensorboard")
    ui = {name: list(zip(history.steps(name).tolist(), history.values(name).tolist())) for name in history.names()}
    classic = event_accumulator.EventAccumulator(str(log_dir))
    classic.Reload()
    assert {tag: [(e.step, e.value) for e in classic.Scalars(tag)] for tag in classic.Tags()["scalars"]} == ui
    return ui


def test_tensorboard_rewind_on_resume_shows_every_step_once(tmp_path):
    pytest.importorskip("tensorboard")
    first = TensorBoardLogger(tmp_path)
    first.rewind(_history([]))
    for step in range(1, 11):
        first.log(step, {"loss": float(step)})
    first.flush()  # killed after step 10; its checkpoint was at step 5
    resumed = TensorBoardLogger(tmp_path)
    resumed.rewind(_history([(step, {"loss": float(step)}) for step in range(1, 6)]))
    for step in range(6, 9):
        resumed.log(step, {"loss": 100.0 + step})
    resumed.close()
    first.close()
    expected = [(s, float(s)) for s in range(1, 6)] + [(s, 100.0 + s) for s in range(6, 9)]
    assert _tensorboard_points(tmp_path) == {"loss": expected}


def test_tensorboard_rewind_of_a_reused_folder_forgets_the_old_run(tmp_path):
    pytest.importorskip("tensorboard")
    for offset in (0.0, 50.0):  # two runs into the same folder, each starting afresh
        with TensorBoardLogger(tmp_path) as sink:
            sink.rewind(_history([]))
            for step in range(1, 4 if offset else 11):
                sink.log(step, {"loss": offset + step, "acc": None})
    assert _tensorboard_points(tmp_path) == {"loss": [(1, 51.0), (2, 52.0), (3, 53.0)]}


def test_a_new_trainer_with_tensorboard_in_a_reused_folder_starts_a_fresh_stream(tmp_path):
    pytest.importorskip("tensorboard")
    import torch
    from torch import nn, optim

    from phasetrain import PhaseTransitionTrainer

    batches = [(torch.randn(4, 2), torch.randint(0, 2, (4,)))] * 3
    for epochs in (3, 1):
        model = nn.Linear(2, 2)
        trainer = PhaseTransitionTrainer(model, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                                         log_dir=tmp_path, log_freq=1, progress_bar=False, checkpoint_freq=None,
                                         loggers=("tensorboard",), overwrite=True)
        trainer.train(batches, num_epochs=epochs)
    points = _tensorboard_points(tmp_path / "tensorboard")
    assert [step for step, _ in points["train_loss"]] == [1, 2, 3]
    assert [value for _, value in points["train_loss"]] == pytest.approx(trainer.history.values("train_loss").tolist())


def _wandb_records(path):
    """W&B's protobuf Records in a run's .wandb file (a LevelDB log: 32 KiB blocks of framed chunks)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, position, records, partial = path.read_bytes(), 7, [], b""  # 7 bytes: the ':W&B' file header
    while position + 7 <= len(data):
        left = 32768 - position % 32768
        _, length, kind = struct.unpack("<IHB", data[position:position + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # the padded end of a block
            position += left
            continue
        chunk = data[position + 7:position + 7 + length]
        position += 7 + length
        partial = chunk if kind in (1, 2) else partial + chunk  # 1 full, 2 first, 3 middle, 4 last
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(partial))
    return records


def _wandb_runs(root):
    """The runs W&B wrote offline under `root`, by start time: [(name, group, [{metric: value, "_step": s}])]."""
    import time

    runs = []
    for path in sorted(root.glob("wandb/offline-run-*/run-*.wandb")):
        for _ in range(50):  # W&B's writer process may still be closing the file
            records = _wandb_records(path)
            if any(r.WhichOneof("record_type") == "exit" for r in records):
                break
            time.sleep(0.1)
        (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        history = []
        for record in records:
            if record.WhichOneof("record_type") == "history":
                items = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item}
                history.append({key: value for key, value in items.items() if key == "_step" or key[0] != "_"})
        runs.append((run.display_name, run.run_group, history))
    return runs


def test_wandb_logger_offline_logs_every_record_and_a_rewind_replays_the_history_into_a_new_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from phasetrain.run.streams import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    sink = make_loggers("wandb", tmp_path / "grok")[0]
    assert isinstance(sink, WandbLogger)
    sink.rewind(_history([]))  # a new run: nothing to replay, no W&B run opened yet
    assert sink.run is None
    for step in range(1, 5):
        sink.log(step, {"loss": float(step), "acc": None if step < 3 else 0.5})
    sink.rewind(_history([(1, {"loss": 1.0}), (2, {"loss": 2.0})]))  # resumed from the step-2 checkpoint
    sink.log(3, {"loss": 30.0})
    sink.close()
    first, second = _wandb_runs(tmp_path / "grok")
    assert first[:2] == second[:2] == ("grok", "grok")
    assert first[2] == [{"loss": 1, "_step": 1}, {"loss": 2, "_step": 2}, {"loss": 3, "acc": 0.5, "_step": 3},
                        {"loss": 4, "acc": 0.5, "_step": 4}]
    assert second[2] == [{"loss": 1, "_step": 1}, {"loss": 2, "_step": 2}, {"loss": 30, "_step": 3}]


def test_mlflow_logger_file_store_logs_every_record_and_a_rewind_replays_into_a_new_run(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from phasetrain.run.streams import MlflowLogger

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for a database otherwise
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    sink = make_loggers(["mlflow"], tmp_path / "grok")[0]
    assert isinstance(sink, MlflowLogger) and sink.run_name == "grok"
    sink.rewind(_history([]))
    for step in range(1, 5):
        sink.log(step, {"train/loss": float(step), "grad_norm": float("nan") if step == 2 else 1.0})
    first = sink.run_id
    sink.rewind(_history([(1, {"train/loss": 1.0}), (2, {"train/loss": 2.0})]))
    sink.log(3, {"train/loss": 30.0})
    second = sink.run_id
    sink.close()
    client = MlflowClient(f"file:{tmp_path / 'mlruns'}")

    def points(run_id, key):
        return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]

    assert points(first, "train/loss") == [(s, float(s)) for s in range(1, 5)]
    assert [s for s, _ in points(first, "grad_norm")] == [1, 2, 3, 4] and math.isnan(points(first, "grad_norm")[1][1])
    assert points(second, "train/loss") == [(1, 1.0), (2, 2.0), (3, 30.0)]
    runs = {run_id: client.get_run(run_id) for run_id in (first, second)}
    assert [runs[first].info.status, runs[second].info.status] == ["KILLED", "FINISHED"]
    assert runs[second].data.tags["phasetrain.replayed_to_step"] == "2"
    assert runs[second].data.tags["phasetrain.log_dir"] == str(tmp_path / "grok")


@pytest.mark.parametrize("name, extra", [("wandb", "wandb"), ("mlflow.tracking", "mlflow")])
def test_tracking_sinks_name_their_extra_when_the_package_is_missing(tmp_path, monkeypatch, name, extra):
    monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=rf"phasetrain\[{extra}\]"):
        make_loggers([extra], tmp_path)
