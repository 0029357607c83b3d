import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from phasetrain.cli import main
from phasetrain.detect import detect_transitions
from phasetrain.report import plot_run
from phasetrain.run.history import load_metrics
from phasetrain.run.summary import training_summary, transitions_by_metric
from tests.test_report import PNG_MAGIC, VAL_JUMP, write_synthetic_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return write_synthetic_run(tmp_path_factory.mktemp("cli") / "grok")


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _null_nan(obj):
    if isinstance(obj, dict):
        return {k: _null_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_null_nan(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def test_report_writes_png_and_html_into_the_run_folder_and_prints_their_paths(run_dir, capsys):
    code, out, err = _run(capsys, "report", run_dir)
    assert (code, err) == (0, "")
    assert out.splitlines() == [str(run_dir / "report.png"), str(run_dir / "report.html")]
    assert (run_dir / "report.png").read_bytes()[:8] == PNG_MAGIC
    page = (run_dir / "report.html").read_text()
    assert "<td>val_acc</td>" in page and "total_training_steps" in page


def test_report_out_window_size_and_xscale_options(run_dir, tmp_path, capsys, monkeypatch):
    import phasetrain.cli as cli

    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return plot_run(*args, **kwargs)

    monkeypatch.setattr(cli, "plot_run", spy)
    code, out, _ = _run(
        capsys, "report", run_dir / "metrics.json", "--out", tmp_path / "r.png", "--window-size", 150, "--xscale", "linear"
    )
    assert code == 0
    assert out.split() == [str(tmp_path / "r.png"), str(tmp_path / "r.html")]
    assert (tmp_path / "r.png").read_bytes()[:8] == PNG_MAGIC
    history, _ = load_metrics(run_dir)
    (call,) = calls
    assert call["xscale"] == "linear"
    assert call["transitions"] == transitions_by_metric(history, window_size=150)


def test_detect_json_equals_the_python_api_on_the_same_data(run_dir, capsys):
    history, _ = load_metrics(run_dir)
    for window in (None, 120):
        args = ["detect", run_dir, "--metric", "val_acc", "--json"] + (["--window-size", window] if window else [])
        code, out, _ = _run(capsys, *args)
        expected = detect_transitions(history.values("val_acc"), steps=history.steps("val_acc"), window_size=window)
        assert code == 0
        assert json.loads(out) == _null_nan([{**t.to_dict(), "metric": "val_acc"} for t in expected])
    assert any(abs(t["step"] - VAL_JUMP) <= 100 for t in json.loads(out))


def test_detect_prints_a_table_with_the_transition_step(run_dir, capsys):
    history, _ = load_metrics(run_dir)
    (found,) = [t for t in detect_transitions(history.values("val_acc"), steps=history.steps("val_acc"))
                if abs(t.step - VAL_JUMP) <= 100]
    code, out, _ = _run(capsys, "detect", run_dir, "--metric", "val_acc")
    assert code == 0
    assert "transition(s) in val_acc" in out
    assert f"{found.step:,}" in out and "up" in out


def test_summary_json_equals_training_summary(run_dir, capsys):
    history, meta = load_metrics(run_dir)
    code, out, _ = _run(capsys, "summary", run_dir, "--json")
    assert code == 0
    assert json.loads(out) == _null_nan(training_summary(history, meta))


def test_summary_prints_one_line_per_figure_and_the_transitions(run_dir, capsys):
    code, out, _ = _run(capsys, "summary", run_dir)
    assert code == 0
    assert any(line.split() == ["total_training_steps", "3000"] for line in out.splitlines())
    assert "phase_transitions" in out and "val_acc" in out


def _bad_runs(tmp_path: Path) -> dict[str, Path]:
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "metrics.json").write_text('{"format": "phasetrain-metrics", "metr')
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "metrics.json").write_text('{"loss": [1, 2]}')
    blank = tmp_path / "blank"
    blank.mkdir()
    (blank / "metrics.json").write_text('{"format": "phasetrain-metrics", "version": 1, "metrics": {}}')
    return {"missing": tmp_path / "nowhere", "empty": empty, "corrupt": corrupt, "foreign": foreign, "blank": blank}


@pytest.mark.parametrize("kind", ["missing", "empty", "corrupt", "foreign", "blank"])
@pytest.mark.parametrize("command", [["report"], ["summary"], ["detect", "--metric", "val_acc"]])
def test_unusable_run_folders_exit_1_with_a_one_line_message_naming_the_path(tmp_path, capsys, kind, command):
    path = _bad_runs(tmp_path)[kind]
    code, out, err = _run(capsys, command[0], path, *command[1:])
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"phasetrain {command[0]}: error: ") and str(path) in err


def test_detect_unknown_metric_exits_1_listing_the_recorded_metrics(run_dir, capsys):
    code, out, err = _run(capsys, "detect", run_dir, "--metric", "val_accuracy")
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1
    assert "'val_accuracy' was not recorded" in err and "train_loss" in err and "val_acc," in err


@pytest.mark.parametrize(
    "argv",
    [[], ["report"], ["frobnicate", "x"], ["detect", "x"], ["report", "x", "--window-size", "0"], ["report", "x", "--xscale", "ln"]],
)
def test_bad_arguments_exit_2_with_usage(capsys, argv):
    code, _, err = _run(capsys, *argv)
    assert code == 2 and "usage: phasetrain" in err


def test_help_exits_0_and_lists_the_commands(capsys):
    code, out, _ = _run(capsys, "--help")
    assert code == 0
    assert all(command in out for command in ("report", "detect", "summary"))


def test_installed_console_script_answers_help():
    script = Path(sys.executable).parent / "phasetrain"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "phasetrain.cli"]
    done = subprocess.run([*command, "detect", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert "--metric" in done.stdout and "--json" in done.stdout
