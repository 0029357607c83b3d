"""close_loggers: every stream file is closed, even when one sink fails to close."""
from __future__ import annotations

import pytest

from phasetrain.run.streams import close_loggers, make_loggers


class BrokenSink:
    def log(self, step, metrics):
        pass

    def flush(self):
        pass

    def close(self):
        raise OSError(28, "No space left on device")


def test_all_files_closed_and_the_first_error_raised(tmp_path):
    jsonl, csv = make_loggers(["jsonl", "csv"], tmp_path)
    jsonl.log(1, {"train_loss": 0.5})
    csv.log(1, {"train_loss": 0.5})
    with pytest.raises(OSError, match="No space left"):
        close_loggers([BrokenSink(), jsonl, csv, BrokenSink()])
    assert jsonl._file.closed and csv._file.closed
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step":1,"train_loss":0.5}\n'
    assert (tmp_path / "metrics.csv").read_text().splitlines()[-1] == "1,train_loss,0.5"


def test_closing_twice_is_harmless(tmp_path):
    sinks = make_loggers(["jsonl"], tmp_path)
    close_loggers(sinks)
    close_loggers(sinks)
    assert sinks[0]._file.closed
