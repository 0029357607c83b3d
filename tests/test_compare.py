"""Runs side by side: the table, the configuration lookup and the picture, over mixed formats."""
import csv
import dataclasses

import numpy as np
import pytest

from phasetrain.compare import Comparison, compare_runs, config_value, plot_comparison
from phasetrain.detect import detect_in_history
from phasetrain.run.history import MetricHistory, save_metrics
from phasetrain.run.sources import load_run
from tests.test_report import PNG_MAGIC

GROKKING = {0.1: 2500, 0.3: 1400, 1.0: 700}
"""weight decay -> the step at which the synthetic run's validation accuracy jumps."""


def grokking_history(jump, seed=0):
    """val_acc: ~0.02 until `jump`, then ~0.98 (a sigmoid 30 steps wide); train_loss falls early."""
    rng = np.random.default_rng(seed)
    history = MetricHistory()
    for step in range(10, 3001, 10):
        history.log(step, {
            "train_loss": float(np.exp(-step / 100) + 0.01),
            "val_acc": float(0.02 + 0.96 / (1 + np.exp(-(step - jump) / 30)) + rng.normal(0, 0.01)),
        })
    return history


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three phasetrain run folders with weight decay in their config, jumping at GROKKING's steps."""
    root = tmp_path_factory.mktemp("sweep")
    paths = []
    for seed, (wd, jump) in enumerate(GROKKING.items()):
        folder = root / f"wd_{wd}"
        folder.mkdir()
        save_metrics(folder / "metrics.json", grokking_history(jump, seed), {"config": {"weight_decay": wd}})
        paths.append(folder)
    return paths


def test_compare_runs_finds_each_runs_jump_and_reads_the_config_value(runs):
    comparison = compare_runs(runs, by="weight_decay")
    assert comparison.metric == "val_acc"  # the first watched metric every run recorded
    assert [run.label for run in comparison.runs] == ["wd_0.1", "wd_0.3", "wd_1.0"]
    assert [run.config_value for run in comparison.runs] == list(GROKKING)
    for run, jump in zip(comparison.runs, GROKKING.values()):
        ups = [t for t in run.transitions if t["direction"] == "up"]
        assert len(ups) == 1 and abs(ups[0]["step"] - jump) <= 100
        history, _ = load_run(run.source)
        assert list(run.transitions) == [t.to_dict() for t in detect_in_history(history, "val_acc")]
        assert run.steps.tolist() == list(range(10, 3001, 10)) and run.config_note is None


def test_the_table_lists_every_run_with_its_config_value_and_transition_steps(runs):
    comparison = compare_runs(runs, by="weight_decay")
    lines = comparison.table().splitlines()
    assert lines[0].split() == ["run", "weight_decay", "format", "records", "last", "step", "transitions", "of",
                                "val_acc"]
    for line, run in zip(lines[1:], comparison.runs):
        step = run.transitions[0]["step"]
        assert line.split()[:6] == [run.label, f"{run.config_value:g}", "phasetrain", "300", "3,000", "up"]
        assert f"{step:,}" in line
    assert comparison.notes() == []


def test_mixed_formats_and_a_missing_config_value_are_reported_per_run(runs, tmp_path):
    history = grokking_history(900)
    wide = tmp_path / "exported" / "log.csv"
    wide.parent.mkdir()
    with wide.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "val_acc"])
        writer.writerows(zip(history.steps("val_acc").tolist(), history.values("val_acc").tolist()))
    comparison = compare_runs([runs[0], wide], metric="val_acc", by="weight_decay")
    assert [run.format for run in comparison.runs] == ["phasetrain", "csv"]
    assert comparison.runs[1].config_value is None
    assert comparison.notes() == ["exported: no configuration in the run's files, so no 'weight_decay'"]
    assert abs(comparison.runs[1].transitions[0]["step"] - 900) <= 100
    assert comparison.table().splitlines()[2].split()[:2] == ["exported", "-"]


def test_config_value_matches_exact_dotted_and_unique_last_part_keys():
    meta = {"config": {"optimizer": {"lr": 0.1, "weight_decay": 0.5}, "model.lr": 3, "seed": 1}}
    assert config_value(meta, "seed") == (1, None)
    assert config_value(meta, "optimizer.weight_decay") == (0.5, None)
    assert config_value(meta, "weight_decay") == (0.5, None)
    value, note = config_value(meta, "lr")
    assert value is None and "'lr' is ambiguous: optimizer.lr, model.lr" in note
    value, note = config_value(meta, "dropout")
    assert value is None and "no 'dropout' in its configuration (model.lr, optimizer.lr" in note
    assert config_value({}, "seed") == (None, "no configuration in the run's files, so no 'seed'")


def test_labels_grow_parent_folders_until_unique(tmp_path):
    paths = []
    for sweep in ("a", "b"):
        folder = tmp_path / sweep / "version_0"
        folder.mkdir(parents=True)
        (folder / "metrics.jsonl").write_text("".join(f'{{"step": {s}, "loss": {1 / s}}}\n' for s in range(1, 40)))
        paths.append(folder / "metrics.jsonl")
    comparison = compare_runs(paths, metric="loss")
    assert [run.label for run in comparison.runs] == ["a/version_0", "b/version_0"]
    assert [run.label for run in compare_runs(paths[:1], metric="loss").runs] == ["a/version_0"]  # generic name
    plain = tmp_path / "plain" / "metrics.jsonl"
    plain.parent.mkdir()
    plain.write_text(paths[0].read_text())
    assert [run.label for run in compare_runs([plain], metric="loss").runs] == ["plain"]


def test_errors_name_the_run_and_list_what_it_recorded(runs, tmp_path):
    with pytest.raises(ValueError,
                       match=r"wd_0\.1.*'val_loss' was not recorded; recorded metrics: train_loss, val_acc"):
        compare_runs(runs, metric="val_loss")
    other = tmp_path / "other.jsonl"
    other.write_text('{"step": 1, "bleu": 0.1}\n{"step": 2, "bleu": 0.2}\n')
    with pytest.raises(ValueError, match=r"share no metric.*other\.jsonl': bleu"):
        compare_runs([runs[0], other])
    with pytest.raises(ValueError, match="at least one run"):
        compare_runs([])


def test_plot_comparison_draws_every_curve_its_transitions_and_the_by_panel(runs, tmp_path, monkeypatch):
    import matplotlib.figure

    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, *a, **k: saved.append(self))
    comparison = compare_runs(runs, by="weight_decay")
    plot_comparison(comparison, tmp_path / "c.png")
    (figure,) = saved
    overlay, by = figure.axes
    assert [line.get_label() for line in overlay.get_lines() if not line.get_label().startswith("_")] == [
        "wd_0.1 (weight_decay=0.1)", "wd_0.3 (weight_decay=0.3)", "wd_1.0 (weight_decay=1)",
    ]
    dashed = {line.get_xdata()[0] for line in overlay.get_lines() if line.get_linestyle() == "--"}
    assert dashed == {t["step"] for run in comparison.runs for t in run.transitions}
    points = sorted((line.get_xdata()[0], line.get_ydata()[0]) for line in by.get_lines() if line.get_marker() == "^")
    assert points == sorted((run.config_value, run.transitions[0]["step"]) for run in comparison.runs)
    assert by.get_xscale() == "log" and by.get_xlabel() == "weight_decay"  # 0.1 to 1.0 spans 10x
    assert overlay.get_xscale() == "log"  # steps 10 to 3,000


def test_plot_comparison_writes_a_png_and_puts_text_values_on_a_category_axis(runs, tmp_path, monkeypatch):
    import matplotlib.figure

    out = plot_comparison(compare_runs(runs), tmp_path / "c.png")
    assert out.read_bytes()[:8] == PNG_MAGIC
    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, *a, **k: saved.append(self))
    plot_comparison(compare_runs(runs), tmp_path / "one.png")
    assert len(saved[0].axes) == 1  # no --by: the overlay alone
    by_text = [dataclasses.replace(run, config_value=name) for run, name in zip(compare_runs(runs).runs, "aba")]
    plot_comparison(Comparison("val_acc", "optimizer", tuple(by_text)), tmp_path / "cat.png")
    by = saved[1].axes[1]
    assert [label.get_text() for label in by.get_xticklabels()] == ["a", "b"]
    assert sorted(line.get_xdata()[0] for line in by.get_lines() if line.get_marker() == "^") == [0, 0, 1]


def test_by_reads_the_config_of_tensorboard_lightning_and_hugging_face_runs(tmp_path):
    import json

    from torch.utils.tensorboard import SummaryWriter

    steps = range(10, 3001, 10)
    curves = {wd: grokking_history(jump, seed) for seed, (wd, jump) in enumerate(GROKKING.items())}
    tensorboard = tmp_path / "tb"
    with SummaryWriter(tensorboard) as writer:
        for step, value in zip(steps, curves[0.1].values("val_acc").tolist()):
            writer.add_scalar("val_acc", value, step)
        writer.add_hparams({"weight_decay": 0.1}, {"hparam/done": 1.0})
    lightning = tmp_path / "lightning" / "version_0"  # the two files Lightning's CSVLogger leaves
    lightning.mkdir(parents=True)
    (lightning / "hparams.yaml").write_text("weight_decay: 0.3\noptimizer:\n  name: adamw\n")
    rows = zip(steps, curves[0.3].values("val_acc").tolist())
    (lightning / "metrics.csv").write_text("epoch,step,val_acc\n" + "".join(f"0,{s},{v}\n" for s, v in rows))
    hugging_face = tmp_path / "hf" / "checkpoint-3000"
    hugging_face.mkdir(parents=True)
    log_history = [{"step": s, "epoch": s / 100, "val_acc": v} for s, v in zip(steps, curves[1.0].values("val_acc"))]
    (hugging_face / "trainer_state.json").write_text(json.dumps(
        {"global_step": 3000, "trial_params": {"weight_decay": 1.0}, "log_history": log_history}
    ))
    comparison = compare_runs([tensorboard, lightning, hugging_face.parent], metric="val_acc", by="weight_decay")
    assert [run.format for run in comparison.runs] == ["tensorboard", "lightning", "huggingface"]
    assert [run.config_value for run in comparison.runs] == [0.1, 0.3, 1.0]
    assert [run.label for run in comparison.runs] == ["tb", "lightning/version_0", "hf"]
    for run, jump in zip(comparison.runs, GROKKING.values()):
        assert [abs(t["step"] - jump) <= 100 for t in run.transitions] == [True]
