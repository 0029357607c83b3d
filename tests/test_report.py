import base64
import sys

import numpy as np
import pytest

from phasetrain.detect.transition import Transition
from phasetrain.report import (
    Panel,
    build_figure,
    choose_xscale,
    format_step,
    plan_markers,
    plan_panels,
    plot_run,
    write_html_report,
)
from phasetrain.run.history import MetricHistory, save_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TRAIN_JUMP, VAL_JUMP = 150, 1500


def _sigmoid(x, centre, width):
    return 1.0 / (1.0 + np.exp(-(x - centre) / width))


def synthetic_history(last_step: int = 3000, seed: int = 0) -> MetricHistory:
    """A grokking-shaped run: train accuracy jumps at step 150, validation accuracy at 1,500."""
    rng = np.random.default_rng(seed)
    history = MetricHistory()
    for step in range(10, last_step + 1, 10):
        record = {
            "train_loss": 3.0 * np.exp(-step / 60) + 1e-3 * (1 + rng.random()),
            "train_acc": min(1.0, 0.05 + 0.95 * _sigmoid(step, TRAIN_JUMP, 10) + rng.normal(0, 0.003)),
            "grad_norm": 2.0 * np.exp(-step / 300) + 0.05,
            "lr": 1e-3 if step < 2000 else 5e-4,
            "epoch": float(step // 100),
            "weight_norm": 40.0 - 20.0 * _sigmoid(step, 1200, 300),
        }
        if step % 50 == 0:
            record["val_loss"] = 6.0 * (1 - _sigmoid(step, VAL_JUMP, 40)) + 0.05 + rng.normal(0, 0.01)
            record["val_acc"] = 0.02 + 0.96 * _sigmoid(step, VAL_JUMP, 40) + rng.normal(0, 0.005)  # stays in [0, 1]
            record["hessian_eig_1"] = 40.0 * np.exp(-step / 800) + 4.0
            record["hessian_eos_ratio"] = record["hessian_eig_1"] * 1e-3 / 2
            record["my_probe"] = float(np.sin(step / 300))
            record["broken_probe"] = float("nan")
        history.log(step, record)
    return history


def write_synthetic_run(run_dir, **kwargs):
    """A run folder holding the synthetic history's metrics.json; returns the folder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_metrics(run_dir / "metrics.json", synthetic_history(**kwargs), {"total_training_steps": 3000})
    return run_dir


VAL_ACC_JUMP = {"val_acc": [{"step": VAL_JUMP, "start_step": 1400, "end_step": 1600, "direction": "up"}]}


def _visible_titles(figure):
    return [ax.get_title(loc="left") for ax in figure.axes if ax.get_visible()]


def test_plan_panels_puts_each_metric_family_on_its_own_panel_in_reading_order():
    panels = plan_panels(synthetic_history())
    assert [(p.key, p.metrics) for p in panels] == [
        ("loss", ("train_loss", "val_loss")),
        ("accuracy", ("train_acc", "val_acc")),
        ("grad_norm", ("grad_norm",)),
        ("sharpness", ("hessian_eig_1",)),
        ("eos", ("hessian_eos_ratio",)),
        ("lr", ("lr",)),
        ("weight_norm", ("weight_norm",)),
        ("other", ("my_probe",)),
    ]


def test_plan_panels_scales_losses_log_accuracies_unit_interval_and_marks_the_eos_limit():
    panels = {p.key: p for p in plan_panels(synthetic_history())}
    assert panels["loss"].yscale == "log"
    assert panels["grad_norm"].yscale == "log"
    assert panels["accuracy"].yscale == "linear" and panels["accuracy"].ylim == (-0.03, 1.03)
    assert panels["eos"].reference == 1.0
    assert panels["lr"].yscale == "linear"  # a 2x decay: nothing to spread over decades
    assert panels["other"].yscale == "linear"


def test_plan_panels_falls_back_to_linear_y_when_a_log_family_has_non_positive_values():
    history = MetricHistory()
    for step, loss in [(1, 5.0), (2, 0.5), (3, -0.1)]:
        history.log(step, {"train_loss": loss})
    assert plan_panels(history) == [Panel("loss", "Loss", ("train_loss",), "linear")]


def test_plan_panels_hides_epoch_and_metrics_that_never_had_a_finite_value():
    names = {m for p in plan_panels(synthetic_history()) for m in p.metrics}
    assert "epoch" not in names and "broken_probe" not in names


@pytest.mark.parametrize(
    "first, last, expected",
    [(10, 3000, "log"), (10, 1000, "log"), (11, 1000, "linear"), (1, 50, "linear"), (0, 5000, "symlog"),
     (0, 50, "linear")],
)
def test_choose_xscale_uses_log_steps_when_the_first_step_is_below_one_percent_of_the_last(first, last, expected):
    history = MetricHistory()
    history.log(first, {"train_loss": 1.0})
    history.log(last, {"train_loss": 0.5})
    assert choose_xscale(history) == expected


def test_plan_markers_puts_a_primary_marker_on_the_metrics_panel_and_faint_ones_elsewhere():
    panels = plan_panels(synthetic_history())
    markers = plan_markers(panels, VAL_ACC_JUMP)
    assert len(markers) == len(panels)
    (primary,) = [m for m in markers if m.primary]
    assert (primary.panel, primary.metric, primary.step, primary.start_step, primary.end_step) == (
        "accuracy", "val_acc", 1500, 1400, 1600,
    )
    assert primary.label == "val_acc ↑ 1,500"
    assert {m.panel for m in markers if not m.primary} == {p.key for p in panels} - {"accuracy"}


def test_plan_markers_takes_a_flat_list_of_detector_transitions_naming_their_metric():
    panels = plan_panels(synthetic_history())
    found = Transition(1500, 1400, 1600, 6.0, 0.05, 5.95, 0.99, "down", 40.0, metric="val_loss")
    (primary,) = [m for m in plan_markers(panels, [found]) if m.primary]
    assert (primary.panel, primary.step, primary.label) == ("loss", 1500, "val_loss ↓ 1,500")


def test_plan_markers_rejects_a_flat_list_entry_without_a_metric():
    unnamed = Transition(1500, 1400, 1600, 6.0, 0.05, 5.95, 0.99, "down", 40.0)
    with pytest.raises(ValueError, match="metric"):
        plan_markers(plan_panels(synthetic_history()), [unnamed])


def test_plan_markers_drops_transitions_of_metrics_that_have_no_panel():
    panels = plan_panels(synthetic_history())
    assert plan_markers(panels, {"epoch": [{"step": 100}], "absent": [{"step": 5}]}) == []


def test_format_step_groups_thousands_and_keeps_fractional_steps():
    assert (format_step(2150), format_step(2150.0), format_step(12.5)) == ("2,150", "2,150", "12.5")


def test_build_figure_has_one_titled_axes_per_panel_on_log_steps_with_the_transition_drawn():
    history = synthetic_history()
    figure = build_figure(history, VAL_ACC_JUMP, title="grok")
    assert _visible_titles(figure) == [p.title for p in plan_panels(history)]
    accuracy = next(ax for ax in figure.axes if ax.get_title(loc="left") == "Accuracy")
    assert accuracy.get_xscale() == "log"
    vertical = [tuple(line.get_xdata()) for line in accuracy.lines if line.get_linestyle() == "--"]
    assert (VAL_JUMP, VAL_JUMP) in vertical
    assert any("val_acc ↑ 1,500" in text.get_text() for text in accuracy.texts)
    assert "val_acc ↑ 1,500" in figure.get_suptitle() and "grok" in figure.get_suptitle()


def test_build_figure_merges_the_labels_of_close_same_direction_transitions_of_one_metric():
    close = {"val_acc": [{"step": 1500, "direction": "up"}, {"step": 1560, "direction": "up"},
                         {"step": 40, "direction": "down"}]}
    figure = build_figure(synthetic_history(), close)
    accuracy = next(ax for ax in figure.axes if ax.get_title(loc="left") == "Accuracy")
    assert sorted(text.get_text() for text in accuracy.texts) == ["val_acc ↑ 1,500, 1,560", "val_acc ↓ 40"]
    assert "val_acc ↓ 40; val_acc ↑ 1,500, 1,560" in figure.get_suptitle()


def test_build_figure_rejects_an_unknown_xscale_and_an_empty_history():
    with pytest.raises(ValueError, match="xscale"):
        build_figure(synthetic_history(), xscale="loglog")
    with pytest.raises(ValueError, match="no metric"):
        build_figure(MetricHistory())


def test_build_figure_names_the_plot_extra_when_matplotlib_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"phasetrain\[plot\]"):
        build_figure(synthetic_history())


def test_plot_run_writes_a_png_into_the_run_folder(tmp_path):
    run = write_synthetic_run(tmp_path / "run")
    out = plot_run(run, transitions=VAL_ACC_JUMP)
    assert out == run / "report.png"
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_plot_run_of_a_history_needs_an_out_path(tmp_path):
    with pytest.raises(ValueError, match="out_path"):
        plot_run(synthetic_history(), transitions={})
    out = plot_run(synthetic_history(), tmp_path / "h.png", transitions={})
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_plot_run_detects_transitions_by_default(tmp_path, monkeypatch):
    """With no `transitions`, the detector runs on the key metrics and its jumps get markers."""
    from phasetrain import report

    drawn = {}

    def spy(history, transitions, **kwargs):
        drawn.update(transitions)
        return build_figure(history, transitions, **kwargs)

    monkeypatch.setattr(report, "build_figure", spy)
    plot_run(write_synthetic_run(tmp_path / "run"))
    assert {"val_acc", "train_acc", "val_loss", "train_loss", "hessian_eig_1"} <= set(drawn)
    (val_acc,) = drawn["val_acc"]
    assert abs(val_acc["step"] - VAL_JUMP) <= 100


def test_write_html_report_embeds_the_png_and_tabulates_transitions_summary_and_configuration(tmp_path):
    png = plot_run(synthetic_history(), tmp_path / "report.png", transitions=VAL_ACC_JUMP)
    summary = {"final_val_acc": 0.975, "best_step": None, "phase_transitions": {}}
    meta = {"format": "phasetrain", "source": "runs/grok", "config": {"weight_decay": 1.0, "precision": "32"}}
    page = write_html_report(png, tmp_path / "report.html", VAL_ACC_JUMP, summary, meta=meta)
    text = page.read_text()
    assert base64.b64encode(png.read_bytes()).decode() in text
    assert ("<td>val_acc</td><td class='num'>1,500</td><td class='num'>1,400</td><td class='num'>1,600</td>"
            "<td>up</td>") in text
    assert "val_acc ↑ at step 1,500" in text  # the one-line story under the title
    assert "<td>final_val_acc</td><td class='num'>0.975</td>" in text and "Not recorded: best_step" in text
    assert "<td>weight_decay</td><td class='num'>1</td>" in text and "<td>precision</td><td>32</td>" in text
    assert "<td>source</td><td>runs/grok</td>" in text and "phase_transitions" not in text
    bare = write_html_report(png, tmp_path / "bare.html", {}, meta={"format": "csv", "source": "m.csv"}).read_text()
    assert "No phase transition detected." in bare and "hold no configuration" in bare


def test_report_of_a_real_training_run_shows_its_loss_accuracy_and_gradient_panels(tmp_path, loaders):
    torch = pytest.importorskip("torch")
    from phasetrain import PhaseTransitionTrainer
    from tests.conftest import make_mlp

    model = make_mlp()
    trainer = PhaseTransitionTrainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.CrossEntropyLoss(),
        log_dir=tmp_path / "run", log_freq=2, checkpoint_freq=None, progress_bar=False,
    )
    trainer.train(*loaders, num_epochs=4)
    out = plot_run(tmp_path / "run")
    assert out.read_bytes()[:8] == PNG_MAGIC
    keys = [p.key for p in plan_panels(trainer.history)]
    assert keys[:3] == ["loss", "accuracy", "grad_norm"] and "weight_norm" in keys


def test_constant_metrics_get_no_panel_but_are_named_in_the_title():
    from phasetrain.report import build_figure, constant_metrics, plan_panels
    from phasetrain.run.history import MetricHistory

    history = MetricHistory()
    for step in range(10, 210, 10):
        history.log(step, {"train_loss": 1.0 / step, "lr": 0.01})
    assert constant_metrics(history) == {"lr": 0.01}
    assert [panel.key for panel in plan_panels(history)] == ["loss"]
    figure = build_figure(history)
    assert "lr = 0.01 throughout" in figure._suptitle.get_text()


def test_a_standard_error_is_a_band_around_its_metric_and_curvature_marks_its_measured_steps():
    from phasetrain.report import build_figure

    history = MetricHistory()
    for step in range(10, 510, 10):
        history.log(step, {"train_loss": 1.0 / step})
    for step in (100, 200, 400):  # measured at irregular steps, as under a time budget
        history.log(step, {"hessian_diag_mean": 0.1 * step, "hessian_diag_mean_stderr": 2.0})
    assert all("hessian_diag_mean_stderr" not in panel.metrics for panel in plan_panels(history))
    figure = build_figure(history)
    axis = next(ax for ax in figure.axes if any(line.get_label() == "hessian_diag_mean" for line in ax.get_lines()))
    line = next(line for line in axis.get_lines() if line.get_label() == "hessian_diag_mean")
    assert line.get_marker() == "o" and list(line.get_xdata()) == [100, 200, 400]
    band = next(c for c in axis.collections if c.get_label() == "hessian_diag_mean +- standard error")
    lows = band.get_paths()[0].vertices[:, 1]
    assert min(lows) == pytest.approx(10 - 2.0) and max(lows) == pytest.approx(40 + 2.0)
