import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    from phasetrain import cli

    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return plot_run(*args, **kwargs)

    monkeypatch.setattr(cli, "plot_run", spy)
    code, out, _ = _run(
        capsys, "report", run_dir / "metrics.json", "--out", tmp_path / "r.png", "--window-size", 150,
        "--xscale", "linear"
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
    [[], ["report"], ["frobnicate", "x"], ["detect", "x"], ["report", "x", "--window-size", "0"],
     ["report", "x", "--xscale", "ln"]],
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
    done = subprocess.run([*command, "detect", "--help"], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert "--metric" in done.stdout and "--json" in done.stdout


@pytest.mark.parametrize("command", ["report", "detect", "summary", "compare"])
def test_help_states_the_detectors_automatic_window(capsys, command):
    from phasetrain.detect.candidates import DEFAULT_WINDOW_FRACTION, DEFAULT_WINDOW_POINTS

    assert (DEFAULT_WINDOW_FRACTION, DEFAULT_WINDOW_POINTS) == (0.01, 8)
    code, out, _ = _run(capsys, command, "--help")
    text = " ".join(out.split())
    assert code == 0 and "automatic window, 1% of the steps the metric spans, at least 8 recording intervals" in text
    assert "2%" not in text


def test_every_command_uses_the_automatic_window_unless_told(run_dir, tmp_path, capsys, monkeypatch):
    from phasetrain import cli, detect

    windows = []

    def spy(history, metric, window_size=None, **kwargs):
        windows.append(window_size)
        return detect_in_history(history, metric, window_size, **kwargs)

    detect_in_history = detect.detect_in_history
    monkeypatch.setattr(detect, "detect_in_history", spy)
    monkeypatch.setattr(cli, "detect_in_history", spy)
    for argv in (["report", run_dir, "--out", tmp_path / "r.png"], ["detect", run_dir, "--metric", "val_acc"],
                 ["summary", run_dir], ["compare", run_dir, run_dir / "metrics.json", "--out", tmp_path / "c.png"]):
        windows.clear()
        assert _run(capsys, *argv)[0] == 0
        assert windows and set(windows) == {None}, argv
        windows.clear()
        assert _run(capsys, *argv, "--window-size", 70)[0] == 0
        # report and summary: training_summary runs its own detection (automatic window) first
        assert windows[-1] == 70.0 and set(windows) <= {None, 70.0}, argv


def _wide_csv(path, metric="eval_accuracy"):
    """A wide CSV whose `metric` jumps from 0.1 to 0.9 at step VAL_JUMP (steps 10..3000)."""
    rng = np.random.default_rng(0)
    lines = ["step,train/loss," + metric]
    for step in range(10, 3001, 10):
        lines.append(f"{step},{1 / step},{(0.1 if step < VAL_JUMP else 0.9) + rng.normal(0, 0.01)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_detect_report_and_summary_read_a_csv_under_its_own_metric_names(tmp_path, capsys):
    path = _wide_csv(tmp_path / "exp" / "log.csv")
    code, out, _ = _run(capsys, "detect", path, "--metric", "eval_accuracy", "--json")
    assert code == 0 and any(abs(t["step"] - VAL_JUMP) <= 20 and t["direction"] == "up" for t in json.loads(out))
    code, out, _ = _run(capsys, "report", path)
    assert code == 0 and out.split() == [str(path.parent / "report.png"), str(path.parent / "report.html")]
    page = (path.parent / "report.html").read_text()
    assert "eval_accuracy ↑ at step" in page and "hold no configuration" in page and "<td>csv</td>" in page
    code, out, _ = _run(capsys, "summary", path)
    assert code == 0 and out.splitlines()[0].split()[:2] == ["format", "csv"]
    (line,) = [line for line in out.splitlines() if line.strip().startswith("eval_accuracy")]
    assert "up at" in line


def test_format_option_reads_a_file_whose_name_says_nothing(tmp_path, capsys):
    path = tmp_path / "log.txt"
    path.write_text("".join(f'{{"step": {s}, "loss": {1 / s}}}\n' for s in range(1, 50)))
    code, _, err = _run(capsys, "summary", path)
    assert code == 1 and "is not a run phasetrain can read" in err and "jsonl: " in err
    code, out, _ = _run(capsys, "summary", path, "--format", "jsonl", "--json")
    assert code == 0 and json.loads(out)["phase_transitions"] == {"loss": []}


def test_compare_prints_the_table_writes_the_picture_and_notes_missing_config(run_dir, tmp_path, capsys, recwarn):
    csv_run = _wide_csv(tmp_path / "csv_run" / "log.csv", metric="val_acc")
    out_png = tmp_path / "cmp.png"
    code, out, err = _run(capsys, "compare", run_dir, csv_run, "--by", "weight_decay", "--out", out_png)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["run", "weight_decay", "format"]
    assert lines[1].split()[:3] == ["grok", "-", "phasetrain"] and lines[2].split()[:3] == ["csv_run", "-", "csv"]
    assert "grok: no configuration in the run's files, so no 'weight_decay'" in out
    assert lines[-1] == str(out_png) and out_png.read_bytes()[:8] == PNG_MAGIC
    assert recwarn.list == []


def test_compare_json_equals_the_python_function(run_dir, capsys):
    from phasetrain.compare import compare_runs

    code, out, _ = _run(capsys, "compare", run_dir, run_dir / "metrics.json", "--metric", "train_acc", "--json")
    assert code == 0
    assert json.loads(out) == _null_nan(compare_runs([run_dir, run_dir / "metrics.json"], metric="train_acc").to_dict())


def test_compare_of_an_unknown_metric_exits_1_naming_the_run(run_dir, capsys):
    code, out, err = _run(capsys, "compare", run_dir, "--metric", "bleu")
    assert code == 1 and out == "" and len(err.splitlines()) == 1
    assert str(run_dir) in err and "'bleu' was not recorded" in err


def _grokking_like_run(folder: Path) -> Path:
    """A run that memorises at step 200 and generalises at step 1,200 (noisy, known steps)."""
    from phasetrain.run.history import MetricHistory, save_metrics

    rng = np.random.default_rng(0)
    history = MetricHistory()
    for step in range(10, 2010, 10):
        history.log(step, {"train_acc": (0.1 if step < 200 else 1.0) - abs(rng.normal(0, 0.01)),
                           "val_acc": (0.01 if step < 1200 else 0.95) + abs(rng.normal(0, 0.01))})
    folder.mkdir()
    save_metrics(folder / "metrics.json", history, {"finished": True, "total_training_steps": 2000})
    return folder


def test_story_names_memorisation_and_grokking_with_its_delay(tmp_path, capsys):
    run = _grokking_like_run(tmp_path / "run")
    out = _run(capsys, "story", run)[1]
    assert "step 200: memorisation" in out and "step 1,200: grokking" in out and "6.0x later" in out
    phenomena = json.loads(_run(capsys, "story", run, "--json")[1])
    assert [(p["name"], p["step"]) for p in phenomena] == [("memorisation", 200), ("grokking", 1200)]
    assert "grokking" in _run(capsys, "summary", run)[1].split("story")[-1]


def test_detect_reports_the_kinds_asked_for_and_refuses_unknown_ones(tmp_path, capsys):
    from phasetrain.run.history import MetricHistory, save_metrics

    steps = np.arange(1, 1001)
    noise = np.random.default_rng(1).normal(0, 0.01, steps.size)
    kink = np.where(steps < 500, steps / 500, 1.0) + noise  # rises, then levels off: a slope change at 500
    history = MetricHistory()
    for step, value in zip(steps.tolist(), kink.tolist()):
        history.log(step, {"sharpness": value})
    (tmp_path / "run").mkdir()
    save_metrics(tmp_path / "run" / "metrics.json", history, {})
    found = json.loads(_run(capsys, "detect", tmp_path / "run", "--metric", "sharpness", "--kinds", "slope",
                            "--json")[1])
    assert [t["kind"] for t in found] == ["slope"] and abs(found[0]["step"] - 500) <= 25
    table = _run(capsys, "detect", tmp_path / "run", "--metric", "sharpness", "--kinds", "level,slope")[1]
    assert "slope" in table.splitlines()[2]
    assert main(["detect", str(tmp_path / "run"), "--metric", "sharpness", "--kinds", "kink"]) == 2


def test_report_draws_an_edge_of_stability_oscillation_as_one_regime_when_asked(tmp_path, capsys):
    """Sharpness at the edge of stability: by default each sawtooth fall is its own level change;
    with --kinds level,slope,regime the report holds one regime and no per-bump transitions."""
    from phasetrain.run.history import MetricHistory, save_metrics
    from tests.detect.curves import eos_sawtooth_sharpness

    steps, values = eos_sawtooth_sharpness(seed=0)
    history = MetricHistory()
    for step, value in zip(steps.tolist(), values.tolist()):
        history.log(int(step), {"hessian_eig_1": value})
    (tmp_path / "run").mkdir()
    save_metrics(tmp_path / "run" / "metrics.json", history, {})
    level_only = transitions_by_metric(history, ("hessian_eig_1",))["hessian_eig_1"]
    assert len(level_only) >= 3  # the bumps, one by one
    code, out, _ = _run(capsys, "report", tmp_path / "run", "--kinds", "level,slope,regime")
    page = Path(out.split()[1]).read_text()
    assert code == 0 and page.count("regime") >= 1
    kinds = [t["kind"] for t in transitions_by_metric(history, ("hessian_eig_1",),
                                                      kinds=("level", "slope", "regime"))["hessian_eig_1"]]
    assert kinds.count("regime") == 1 and "level" not in kinds


def test_python_dash_m_phasetrain_is_the_command():
    ran = subprocess.run([sys.executable, "-m", "phasetrain", "--help"], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0 and ran.stdout.startswith("usage: phasetrain")
