"""The picture of a run: one panel per metric family, every detected transition marked on it.

`plan_panels` decides which panels a run gets and `plan_markers` which transition goes on which
panel; `build_figure` draws them with matplotlib (the optional extra `plot`, imported lazily);
`plot_run` ties it together for a run (any format `phasetrain.run.sources.load_run` reads) and
writes `report.png`; `write_html_report` adds a self-contained `report.html` that reads on its own
(the transitions, the PNG inline, the summary, the configuration and the run's source as tables).
"""
from __future__ import annotations

import base64
import html
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from phasetrain.run.checks import check_choice, check_int
from phasetrain.run.history import MetricHistory
from phasetrain.run.sources import load_run
from phasetrain.run.summary import KEY_METRICS, transitions_by_metric

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LOG_X_RATIO = 0.01
"""Steps go on a log axis when the first logged step is below this fraction of the last one."""

HIDDEN_METRICS = ("epoch",)
"""Bookkeeping metrics that get no panel."""


@dataclass(frozen=True)
class Panel:
    """One axes of the report: which metrics it shows and how its y axis is scaled."""

    key: str
    title: str
    metrics: tuple[str, ...]
    yscale: str = "linear"
    ylim: tuple[float, float] | None = None
    reference: float | None = None


@dataclass(frozen=True)
class Marker:
    """One transition drawn on one panel; `primary` on the panel of its own metric, faint elsewhere."""

    panel: str
    metric: str
    step: float
    start_step: float
    end_step: float
    direction: str
    primary: bool
    kind: str = "level"

    @property
    def label(self) -> str:
        """Short text beside the line, e.g. 'val_acc ↑ 2,150' (a slope or regime says so)."""
        text = _label_text(self.metric, self.direction, [self.step])
        return text if self.kind == "level" else f"{text} ({self.kind})"


def format_step(step: float) -> str:
    """A step for people: '2,150' (a fractional step, from a detector fed float steps, keeps one decimal)."""
    step = float(step)
    return f"{step:,.0f}" if step.is_integer() else f"{step:,.1f}"


@dataclass(frozen=True)
class _Family:
    key: str
    title: str
    matches: Callable[[str], bool]
    prefer_log: bool = False
    unit_interval: bool = False
    reference: float | None = None


def _tokens(name: str) -> list[str]:
    """The words of a metric name: 'train/loss_step' -> ['train', 'loss', 'step'] (split at _ / . -)."""
    return re.split(r"[_/.\-]", name.lower())


_FAMILIES = (
    _Family("loss", "Loss", lambda n: "loss" in _tokens(n), prefer_log=True),
    _Family("accuracy", "Accuracy", lambda n: bool({"acc", "accuracy"} & set(_tokens(n))), unit_interval=True),
    _Family("grad_norm", "Gradient norm", lambda n: n.startswith("grad_norm"), prefer_log=True),
    _Family(
        "sharpness",
        "Hessian top eigenvalues (sharpness)",
        lambda n: re.fullmatch(r"hessian_(eig_\d+|top_eigenvalue)", n) is not None,
        prefer_log=True,
    ),
    _Family(
        "eos",
        "Edge-of-stability ratio (1 = stability limit 2/lr)",
        lambda n: n.startswith("hessian_eos_ratio"),
        reference=1.0,
    ),
    _Family("hessian_diag", "Hessian diagonal", lambda n: n.startswith("hessian_diag"), prefer_log=True),
    _Family("hessian_trace", "Hessian trace", lambda n: n.startswith("hessian_trace"), prefer_log=True),
    _Family("curvature", "Curvature (other)", lambda n: n.startswith("hessian_")),
    _Family("lr", "Learning rate", lambda n: "lr" in _tokens(n) or "learning_rate" in n.lower(), prefer_log=True),
    _Family("weight_norm", "Weight norm", lambda n: n.startswith("weight_norm"), prefer_log=True),
    _Family("other", "Other metrics", lambda n: True),
)
"""Metric families in reading order; a name joins the first family that matches it. Names from other
loggers match by their words (`train/loss`, `eval_accuracy`, `lr-Adam`, `learning_rate`)."""

_NOT_WATCHED = re.compile(r"runtime|per_second|flos|^epoch$|(^|/)step$", re.IGNORECASE)
"""Bookkeeping a logger records beside the curves (HF's eval_runtime, total_flos; epoch): no transitions."""


def transition_metrics(history: MetricHistory) -> tuple[str, ...]:
    """The metrics of `history` whose transitions a report, summary or comparison looks for.

    A phasetrain run (or any run using its names): the summary's key metrics it recorded
    (`phasetrain.run.summary.KEY_METRICS`: val_acc, val_loss, train_acc, train_loss, hessian_*).
    A run from another logger, which spells them differently: every metric that gets a panel
    (`plan_panels`) except learning rates and bookkeeping (runtimes, throughput, FLOPs, epoch).
    """
    present = tuple(name for name in KEY_METRICS if name in history)
    if present:
        return present
    return tuple(
        metric for panel in plan_panels(history) if panel.key != "lr"
        for metric in panel.metrics if not _NOT_WATCHED.search(metric)
    )


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def _yscale(history: MetricHistory, metrics: Sequence[str], prefer_log: bool) -> str:
    """'log' when the family reads best on a log scale and its positive values span >= 10x."""
    if not prefer_log:
        return "linear"
    return spread_scale(np.concatenate([_finite(history.values(m)) for m in metrics]))


def spread_scale(values: np.ndarray) -> str:
    """'log' for finite values (shape (n,)) that are all positive and span >= 10x, else 'linear'."""
    if values.size == 0 or values.min() <= 0:
        return "linear"
    return "log" if values.max() >= 10 * values.min() else "linear"


def metric_yscale(metric: str, values: np.ndarray) -> str:
    """The y scale the report gives `metric` (by its family, see `plan_panels`) for `values`
    (shape (n,), NaN allowed): 'log' for losses, norms, curvature and learning rates whose positive
    values span >= 10x, else 'linear'."""
    family = next(f for f in _FAMILIES if f.matches(metric))
    return spread_scale(_finite(np.asarray(values, dtype=float))) if family.prefer_log else "linear"


def plan_panels(history: MetricHistory) -> list[Panel]:
    """The panels a run's report gets: one per metric family present, in a fixed reading order.

    Families: losses (log y), accuracies ([0, 1]), gradient norm (log y), Hessian top eigenvalues,
    the edge-of-stability ratio (reference line at 1.0), Hessian diagonal, Hessian trace, other
    curvature, learning rate, weight norm, and "other" for any metric name not known here.
    Bookkeeping metrics (`epoch`), metrics without a single finite value and constant metrics (a
    fixed learning rate: named in the figure's title instead, see `constant_metrics`) get no panel;
    nor does a `<metric>_stderr` of a recorded metric: it is drawn as a band around that metric.
    """
    groups: dict[str, list[str]] = {family.key: [] for family in _FAMILIES}
    constants = constant_metrics(history)
    for name in history.names():
        if name in HIDDEN_METRICS or name in constants or _finite(history.values(name)).size == 0:
            continue
        if name.endswith("_stderr") and name[: -len("_stderr")] in history:
            continue  # drawn as a band around its metric
        family = next(f for f in _FAMILIES if f.matches(name))
        groups[family.key].append(name)
    panels = []
    for family in _FAMILIES:
        metrics = groups[family.key]
        if not metrics:
            continue
        ylim = None
        if family.unit_interval:
            values = np.concatenate([_finite(history.values(m)) for m in metrics])
            if values.min() >= 0 and values.max() <= 1:
                ylim = (-0.03, 1.03)
        panels.append(
            Panel(
                key=family.key,
                title=family.title,
                metrics=tuple(metrics),
                yscale=_yscale(history, metrics, family.prefer_log),
                ylim=ylim,
                reference=family.reference,
            )
        )
    return panels


def constant_metrics(history: MetricHistory) -> dict[str, float]:
    """{name: value} of the shown metrics that take one finite value throughout (at least 2 records)."""
    constants = {}
    for name in history.names():
        values = _finite(history.values(name))
        if name not in HIDDEN_METRICS and values.size >= 2 and np.all(values == values[0]):
            constants[name] = float(values[0])
    return constants


def choose_xscale(history: MetricHistory) -> str:
    """'log' when the run is long against its first logged step (first < 1% of last), else 'linear'.

    Grokking's late jump and an early memorisation phase are both visible on a log axis; a run that
    logged step 0 (e.g. a validation before training) gets 'symlog', linear below step 1.
    """
    steps = [history.steps(m) for m in history.names() if m not in HIDDEN_METRICS]
    return xscale_for_steps(np.concatenate(steps) if steps else np.empty(0, dtype=np.int64))


def xscale_for_steps(steps: np.ndarray) -> str:
    """`choose_xscale`'s rule ('linear', 'log' or 'symlog') for `steps`, the global steps (shape (n,),
    any order) of one or several runs."""
    if steps.size == 0:
        return "linear"
    first, last = int(steps.min()), int(steps.max())
    if last <= 0 or max(first, 1) > LOG_X_RATIO * last:
        return "linear"
    return "log" if first >= 1 else "symlog"


def _as_dict(transition: Any) -> dict[str, Any]:
    if hasattr(transition, "to_dict"):
        return dict(transition.to_dict())
    if isinstance(transition, Mapping):
        return dict(transition)
    raise TypeError(
        f"transitions entries must be Transition objects or dicts, got {type(transition).__name__}"
    )


def normalise_transitions(
    transitions: Mapping[str, Iterable[Any]] | Iterable[Any],
) -> dict[str, list[dict[str, Any]]]:
    """`{metric: [transition dict, ...]}` from a mapping of that shape or a flat list whose items
    name their `metric`; items may be detector `Transition` objects or their `to_dict()` dicts."""
    if isinstance(transitions, Mapping):
        return {str(metric): [_as_dict(t) for t in items] for metric, items in transitions.items()}
    grouped: dict[str, list[dict[str, Any]]] = {}
    for item in transitions:
        record = _as_dict(item)
        if not record.get("metric"):
            raise ValueError(
                f"transitions given as a flat list must name their metric; got {record!r} "
                "(pass {metric: [transitions]} instead)"
            )
        grouped.setdefault(str(record["metric"]), []).append(record)
    return grouped


def plan_markers(panels: Sequence[Panel], transitions: Mapping[str, Iterable[Any]] | Iterable[Any]) -> list[Marker]:
    """Which transition goes on which panel: a primary marker on the panel that shows its metric,
    a faint one on every other panel. Transitions of metrics with no panel are dropped."""
    grouped = normalise_transitions(transitions)
    home = {metric: panel.key for panel in panels for metric in panel.metrics}
    markers = []
    for metric, records in grouped.items():
        if metric not in home:
            continue
        for record in records:
            step = float(record["step"])
            for panel in panels:
                markers.append(
                    Marker(
                        panel=panel.key,
                        metric=metric,
                        step=step,
                        start_step=float(record.get("start_step", step)),
                        end_step=float(record.get("end_step", step)),
                        direction=str(record.get("direction", "")),
                        primary=panel.key == home[metric],
                        kind=str(record.get("kind", "level")),
                    )
                )
    return markers


def require_matplotlib() -> None:
    """Raise ImportError naming the `plot` extra when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise ImportError("the run report needs matplotlib: pip install 'phasetrain[plot]'") from error


def _minor_log_label(value: float, _position: int) -> str:
    """Label the 2x and 5x minor ticks of a log axis ('20', '0.05'), so a short range still reads."""
    leading = round(value / 10 ** math.floor(math.log10(value)))
    return f"{value:g}" if leading in (2, 5) else ""


def _format_log_axis(axis: Any, history: MetricHistory, metrics: Sequence[str]) -> None:
    """Plain numbers with 2x/5x minor labels on a log axis spanning < 2 decades; powers of ten otherwise."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    values = np.concatenate([_finite(history.values(m)) for m in metrics])
    if values.max() < 100 * values.min():
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_formatter(FuncFormatter(_minor_log_label))
    else:
        axis.set_minor_formatter(NullFormatter())


def _draw_panel(ax: Any, history: MetricHistory, panel: Panel, colors: dict[str, str]) -> None:
    for metric in panel.metrics:
        steps, values = history.steps(metric), history.values(metric)
        # a curvature curve marks every step it was measured at (a time budget makes them irregular)
        style = "-o" if steps.size < 40 or metric.startswith("hessian_") else "-"
        ax.plot(steps, values, style, color=colors[metric], label=metric, lw=1.3, ms=3 if steps.size < 200 else 1.5)
        _draw_stderr_band(ax, history, metric, colors[metric])
    if panel.reference is not None:
        ax.axhline(panel.reference, color="black", ls="--", lw=1, label=f"limit {panel.reference:g}")
    ax.set_yscale(panel.yscale)
    if panel.yscale == "log":
        _format_log_axis(ax.yaxis, history, panel.metrics)
    if panel.ylim is not None:
        ax.set_ylim(*panel.ylim)
    ax.set_title(panel.title, fontsize=10, loc="left")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="best", framealpha=0.8)


def _draw_stderr_band(ax: Any, history: MetricHistory, metric: str, color: str) -> None:
    """Value +- standard error as a band, where the run recorded `<metric>_stderr` at the same steps
    (the Hessian diagonal's mean and spread are estimates)."""
    name = f"{metric}_stderr"
    if name not in history or not np.array_equal(history.steps(name), history.steps(metric)):
        return
    values, stderr = history.values(metric), history.values(name)
    ax.fill_between(history.steps(metric), values - stderr, values + stderr, color=color, alpha=0.2, lw=0,
                    label=f"{metric} +- standard error")


def _draw_markers(ax: Any, markers: Sequence[Marker], colors: dict[str, str]) -> None:
    for marker in markers:
        if not marker.primary:
            ax.axvline(marker.step, color="grey", ls=":", lw=0.8, alpha=0.6)
            continue
        color = colors[marker.metric]
        if marker.kind == "regime":  # a sustained oscillation: shaded (hatched) over its whole span
            ax.axvspan(marker.start_step, marker.end_step, color=color, alpha=0.15, lw=0, hatch="//")
        elif marker.end_step > marker.start_step:
            ax.axvspan(marker.start_step, marker.end_step, color=color, alpha=0.12, lw=0)
        ax.axvline(marker.step, color=color, ls="-." if marker.kind == "slope" else "--", lw=1.1)


_LABEL_ROWS = (0.97, 0.03, 0.80, 0.20, 0.62, 0.38)
"""Candidate heights (axes fraction) of a transition label, in order of preference."""

_MERGE_DISTANCE = 0.06
"""Same-metric, same-direction transitions closer than this (axes fraction) share one label."""


def _label_text(metric: str, direction: str, steps: Sequence[float]) -> str:
    arrow = {"up": "↑", "down": "↓"}.get(direction, "")
    return " ".join(part for part in (metric, arrow, ", ".join(format_step(s) for s in steps)) if part)


def _label_groups(markers: Sequence[Marker], x_of: Callable[[float], float]) -> list[list[Marker]]:
    """Primary markers in step order, runs of one metric and direction closer than
    `_MERGE_DISTANCE` (in axes fraction, via `x_of`) merged so their labels do not pile up."""
    groups: list[list[Marker]] = []
    for marker in sorted((m for m in markers if m.primary), key=lambda m: m.step):
        last = groups[-1][-1] if groups else None
        if (
            last is not None
            and (last.metric, last.direction) == (marker.metric, marker.direction)
            and x_of(marker.step) - x_of(last.step) < _MERGE_DISTANCE
        ):
            groups[-1].append(marker)
        else:
            groups.append([marker])
    return groups


def _label_markers(ax: Any, history: MetricHistory, panel: Panel, markers: Sequence[Marker],
                   colors: dict[str, str]) -> None:
    """Write the primary markers' labels beside their lines: left of the lines in the right half of
    the axes (so they stay inside), at the first height of `_LABEL_ROWS` where the curves and the
    labels already placed leave the fewest points under them. Call once the axes limits are final."""
    to_axes = ax.transData + ax.transAxes.inverted()
    points = np.concatenate([np.column_stack([history.steps(m), history.values(m)]) for m in panel.metrics])
    points = to_axes.transform(points[np.all(np.isfinite(points), axis=1)])
    placed: list[tuple[float, float, float]] = []  # (x from, x to, height) of labels already written
    for group in _label_groups(markers, lambda step: to_axes.transform((step, 1.0))[0]):
        text = _label_text(group[0].metric, group[0].direction, [m.step for m in group])
        left = to_axes.transform((group[0].step, 1.0))[0] > 0.5
        anchor = group[0].step if left else group[-1].step
        x, width = to_axes.transform((anchor, 1.0))[0], 0.011 * len(text) + 0.01
        span = (x - width, x) if left else (x, x + width)
        under = points[(points[:, 0] >= span[0]) & (points[:, 0] <= span[1]), 1]

        def crowding(row: float, span: tuple[float, float] = span, under: np.ndarray = under) -> int:
            centre = row - 0.05 if row > 0.5 else row + 0.05
            clashes = sum(a < span[1] and span[0] < b and abs(h - row) < 0.1 for a, b, h in placed)
            return int(np.count_nonzero(np.abs(under - centre) < 0.09)) + 1000 * clashes

        row = min(_LABEL_ROWS, key=crowding)
        placed.append((*span, row))
        ax.annotate(
            text,
            xy=(anchor, row),
            xycoords=("data", "axes fraction"),
            xytext=(-3 if left else 3, 0),
            textcoords="offset points",
            fontsize=7,
            color=colors[group[0].metric],
            va="top" if row > 0.5 else "bottom",
            ha="right" if left else "left",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
        )


def _story(markers: Sequence[Marker]) -> str:
    """'transitions: train_acc ↑ 120; val_acc ↑ 2,150, 2,300' (one entry per metric and direction)."""
    steps: dict[tuple[str, str], list[float]] = {}
    for marker in sorted((m for m in markers if m.primary), key=lambda m: m.step):
        steps.setdefault((marker.metric, marker.direction), []).append(marker.step)
    if not steps:
        return "no transitions detected"
    return "transitions: " + "; ".join(_label_text(metric, direction, found)
                                       for (metric, direction), found in steps.items())


def build_figure(
    history: MetricHistory,
    transitions: Mapping[str, Iterable[Any]] | Iterable[Any] = (),
    title: str = "",
    xscale: str = "auto",
) -> Figure:
    """Draw the report figure: panels from `plan_panels`, markers from `plan_markers`.

    `xscale` is "auto" (`choose_xscale`), "linear", "log" or "symlog". Returns a matplotlib
    Figure (not attached to pyplot, so nothing global changes); its axes titles are the panels'.
    """
    check_choice("xscale", xscale, ("auto", "linear", "log", "symlog"))
    require_matplotlib()
    from matplotlib.figure import Figure

    panels = plan_panels(history)
    if not panels:
        raise ValueError(f"history has no metric with a finite value to plot; recorded: {history.names()}")
    markers = plan_markers(panels, transitions)
    palette = [f"C{i}" for i in range(10)]
    all_metrics = [m for panel in panels for m in panel.metrics]
    colors = {}
    for panel in panels:
        for i, metric in enumerate(panel.metrics):
            colors[metric] = palette[i % len(palette)]
    ncols = 1 if len(panels) <= 2 else 2
    nrows = math.ceil(len(panels) / ncols)
    figure = Figure(figsize=(6.4 * ncols, 2.7 * nrows + 0.9), layout="constrained")
    axes = figure.subplots(nrows, ncols, sharex=True, squeeze=False).ravel()
    scale = choose_xscale(history) if xscale == "auto" else xscale
    for ax, panel in zip(axes, panels):
        _draw_panel(ax, history, panel, colors)
        _draw_markers(ax, [m for m in markers if m.panel == panel.key], colors)
        if scale == "symlog":
            ax.set_xscale("symlog", linthresh=1.0)
        else:
            ax.set_xscale(scale)
    for ax, panel in zip(axes, panels):
        _label_markers(ax, history, panel, [m for m in markers if m.panel == panel.key], colors)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax in axes[len(panels) - ncols : len(panels)]:
        ax.set_xlabel("global step" + (" (log scale)" if scale != "linear" else ""))
        ax.xaxis.set_tick_params(labelbottom=True)
    last = max(int(history.steps(m).max()) for m in all_metrics)
    heading = f"{title} — " if title else ""
    constants = "".join(f"; {name} = {value:.4g} throughout" for name, value in constant_metrics(history).items())
    figure.suptitle(f"{heading}{last:,} steps; {_story(markers)}{constants}", fontsize=10, wrap=True)
    return figure


def run_folder(path: str | os.PathLike) -> Path:
    """The run folder of `path`: itself when it is a folder, else the folder holding the file."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def plot_run(
    run: str | os.PathLike | MetricHistory,
    out_path: str | os.PathLike | None = None,
    transitions: Mapping[str, Iterable[Any]] | Iterable[Any] | None = None,
    window_size: float | None = None,
    title: str | None = None,
    xscale: str = "auto",
    dpi: int = 120,
    kinds: Sequence[str] = ("level",),
) -> Path:
    """Write the report PNG of a run and return its path.

    `run` is a `MetricHistory` (then `out_path` is required) or any run `load_run` reads: a
    phasetrain run folder or metrics.json, a TensorBoard log folder, a CSV, a Lightning or Hugging
    Face folder, a JSONL file. `out_path` defaults to `<run folder>/report.png` (the folder holding
    a file). `transitions` ({metric: [...]} or a flat list naming metrics; `{}` for none) defaults
    to the detector's output on `transition_metrics(history)` with `window_size` (in steps; None:
    the detector's automatic window). `title` defaults to the run folder's name; `xscale` is
    "auto", "linear", "log" or "symlog"; `dpi` the PNG's resolution; `kinds` what the default
    detection reports ("level", "slope", "regime": a regime is drawn as one hatched span).
    """
    check_int("dpi", dpi)
    if isinstance(run, MetricHistory):
        if out_path is None:
            raise ValueError("out_path is required when run is a MetricHistory (there is no run folder)")
        history, run_dir = run, None
    else:
        history, _ = load_run(run)
        run_dir = run_folder(run)
    out = Path(out_path) if out_path is not None else run_dir / "report.png"
    if transitions is None:
        transitions = transitions_by_metric(history, transition_metrics(history), window_size=window_size,
                                            kinds=kinds)
    if title is None:
        title = run_dir.resolve().name if run_dir is not None else ""
    figure = build_figure(history, transitions, title=title, xscale=xscale)
    figure.savefig(out, dpi=dpi)
    return out


def _cell(value: Any, step: bool = False) -> str:
    """One table cell: numbers right-aligned (4 significant digits; steps as '1,550'), text left,
    missing values as a dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "<td class='num'>—</td>"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"<td>{html.escape(str(value))}</td>"
    if step:
        return f"<td class='num'>{format_step(value)}</td>"
    return f"<td class='num'>{value if isinstance(value, int) else f'{value:.4g}'}</td>"


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], headers: Sequence[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in headers or columns)
    body = "".join(
        "<tr>" + "".join(_cell(row.get(c), step=c.endswith("step")) for c in columns) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


TRANSITION_COLUMNS = (
    "metric", "step", "start_step", "end_step", "direction",
    "level_before", "level_after", "magnitude", "relative_magnitude", "score",
)
_TRANSITION_HEADERS = (
    "metric", "step", "from step", "to step", "direction",
    "level before", "level after", "jump", "jump / range", "score (z)",
)

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1320px;padding:1.5em;color:#222}"
    "h1{margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}"
    ".lead{color:#555;margin-top:0}table{border-collapse:collapse;margin:.6em 0;font-size:14px}"
    "td,th{border:1px solid #d6d6d6;padding:4px 10px;text-align:left}th{background:#f3f3f3}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums}tbody tr:nth-child(even){background:#fafafa}"
    "img{max-width:100%;border:1px solid #eee}.cols{display:flex;gap:3em;flex-wrap:wrap}"
)


def _story_section(summary: Mapping[str, Any] | None) -> list[str]:
    """The story of the run (named phenomena, one line each) as HTML, when the summary has one."""
    lines = (summary or {}).get("story") or ""
    if not lines:
        return []
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines.splitlines())
    return ["<h2>What happened</h2>", f"<ul class='story'>{items}</ul>"]


def write_html_report(
    png_path: str | os.PathLike,
    out_path: str | os.PathLike,
    transitions: Mapping[str, Iterable[Any]] | Iterable[Any],
    summary: Mapping[str, Any] | None = None,
    title: str = "phasetrain report",
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write a self-contained HTML page readable on its own and return its path.

    png_path: the report figure (embedded as base64, so the page is one file). out_path: the page.
    transitions: {metric: [transition]} or a flat list naming metrics (as `plot_run` takes them),
    shown as a table sorted by step. summary: the training summary (`training_summary`; figures
    that are None are listed as not recorded, its `phase_transitions` is the transitions table).
    title: the page heading. meta: the run's meta (`load_run`): its `config` is shown as the
    configuration table (or a note that the run's files hold none), its `format`, `source` and
    other plain entries as the run table.
    """
    image = base64.b64encode(Path(png_path).read_bytes()).decode("ascii")
    rows = [
        {**record, "metric": metric}
        for metric, records in normalise_transitions(transitions).items()
        for record in records
    ]
    rows.sort(key=lambda r: (float(r["step"]), r["metric"]))
    found = "; ".join(f"{r['metric']} {({'up': '↑', 'down': '↓'}).get(r.get('direction'), '')} "
                      f"at step {format_step(r['step'])}" for r in rows)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p class='lead'>{html.escape(found) if rows else 'No phase transition detected.'}</p>",
        *_story_section(summary),
        "<h2>Detected transitions</h2>",
        _table(rows, TRANSITION_COLUMNS, _TRANSITION_HEADERS) if rows else "<p>none</p>",
        "<h2>Curves</h2>",
        (f"<img alt='every recorded metric of the run, one panel per family, transitions marked' "
         f"src='data:image/png;base64,{image}'>"),
        "<div class='cols'>",
    ]
    if summary is not None:
        shown = {k: v for k, v in summary.items() if k not in ("phase_transitions", "phenomena", "story")}
        known = [{"quantity": k, "value": v} for k, v in shown.items() if v is not None]
        missing = [k for k, v in shown.items() if v is None]
        parts += ["<div><h2>Training summary</h2>", _table(known, ("quantity", "value"))]
        if missing:
            parts.append(f"<p class='lead'>Not recorded: {html.escape(', '.join(missing))}</p>")
        parts.append("</div>")
    if meta is not None:
        config = meta.get("config")
        parts.append("<div><h2>Configuration</h2>")
        if isinstance(config, Mapping) and config:
            parts.append(_table([{"setting": k, "value": v} for k, v in config.items()], ("setting", "value")))
        else:
            parts.append("<p class='lead'>The run's files hold no configuration.</p>")
        plain = [{"entry": k, "value": v} for k, v in meta.items()
                 if k != "config" and (v is None or isinstance(v, (str, int, float, bool)))]
        parts += ["</div><div><h2>Run</h2>", _table(plain, ("entry", "value")), "</div>"]
    parts.append("</div></body></html>")
    out = Path(out_path)
    out.write_text("".join(parts), encoding="utf-8")
    return out
