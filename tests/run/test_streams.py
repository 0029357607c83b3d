import csv
import json
import math

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
    with pytest.raises(ValueError, match=r"loggers.*'wandb'.*'jsonl', 'csv', 'tensorboard'"):
        make_loggers(["csv", "wandb"], tmp_path)
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
                                     log_dir=tmp_path, log_freq=1, progress_bar=False)
    trainer.train([(torch.randn(4, 2), torch.randint(0, 2, (4,)))], num_epochs=1)
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert 7 not in steps and steps[0] == 1
