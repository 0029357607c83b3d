"""Runs side by side: one metric of several runs overlaid with each run's transitions, a table of
the transition steps per run, and the transition step against a configuration value (the grokking
step against weight decay, say).

`compare_runs(paths, metric=..., by=...)` reads each run with `phasetrain.run.sources.load_run`
(any format, mixed freely), runs the detector on the metric and returns a `Comparison`;
`plot_comparison` draws it (matplotlib, the `plot` extra). `phasetrain compare RUN... [--metric M]
[--by KEY] [--out PATH]` prints the table and writes the picture.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from phasetrain.report import (
    format_step,
    metric_yscale,
    require_matplotlib,
    run_folder,
    spread_scale,
    transition_metrics,
    xscale_for_steps,
)
from phasetrain.run.checks import check_choice, check_int
from phasetrain.run.history import unknown_metric_message
from phasetrain.run.sources import flatten_config, load_run

_ARROWS = {"up": "↑", "down": "↓"}


@dataclass(frozen=True)
class ComparedRun:
    """One run of a comparison.

    label: a short unique name (the run folder's name, with parent folders added until unique).
    source: the path read; format: its format (a key of `phasetrain.run.sources.FORMATS`).
    steps, values: the compared metric, shapes (n,), int64 steps and float64 values (NaN where
    the run logged a non-finite value). transitions: the detector's transitions of the metric as
    dicts (`Transition.to_dict()`: step, start_step, end_step, direction, levels, score), by step.
    config_value: the value of the `by` key in the run's configuration, None when absent (or no
    `by`); config_note: why it is absent, None otherwise.
    """

    label: str
    source: str
    format: str
    steps: np.ndarray
    values: np.ndarray
    transitions: tuple[dict[str, Any], ...]
    config_value: Any = None
    config_note: str | None = None


@dataclass(frozen=True)
class Comparison:
    """The outcome of `compare_runs`: the metric, the configuration key (or None) and the runs in
    the order given."""

    metric: str
    by: str | None
    runs: tuple[ComparedRun, ...]

    def table(self) -> str:
        """The transition steps per run as aligned text: run, the `by` value, format, records, last
        step and each transition as 'up 1,510 (1,450-1,560)'."""
        head = ["run", *([self.by] if self.by else []), "format", "records", "last step",
                f"transitions of {self.metric}"]
        rows = [head]
        for run in self.runs:
            found = "; ".join(
                f"{t.get('direction', '')} {format_step(t['step'])} "
                f"({format_step(t['start_step'])}-{format_step(t['end_step'])})"
                for t in run.transitions
            )
            by = [_shown(run.config_value) if run.config_note is None else "-"] if self.by else []
            last = format_step(run.steps[-1]) if run.steps.size else "-"
            rows.append([run.label, *by, run.format, str(run.steps.size), last, found or "none"])
        widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
        return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(row, widths)), row[-1]]).rstrip() for row in rows)

    def notes(self) -> list[str]:
        """One line per run whose `by` value is missing, saying why."""
        return [f"{run.label}: {run.config_note}" for run in self.runs if run.config_note is not None]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: {"metric", "by", "runs": [{label, source, format, records, last_step,
        config_value, config_note, transitions}]} (the curves themselves are left out)."""
        return {
            "metric": self.metric,
            "by": self.by,
            "runs": [
                {
                    "label": run.label, "source": run.source, "format": run.format, "records": int(run.steps.size),
                    "last_step": int(run.steps[-1]) if run.steps.size else None,
                    "config_value": run.config_value, "config_note": run.config_note,
                    "transitions": list(run.transitions),
                }
                for run in self.runs
            ],
        }


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def compare_runs(
    paths: Sequence[str | os.PathLike],
    metric: str | None = None,
    by: str | None = None,
    window_size: float | None = None,
    format: str = "auto",
) -> Comparison:
    """Read every run of `paths`, find the transitions of `metric` in each, look up `by`.

    paths: run folders or files of any format `load_run` reads (at least one; formats may be
    mixed). metric: the metric to compare, as the runs spell it; None: the first metric of the
    first run's `transition_metrics` (val_acc, val_loss, ... for phasetrain runs) that every run
    recorded. by: a configuration key (e.g. "weight_decay"; nested keys as "optimizer.lr" or by
    their last part when that is unique) looked up in each run's `meta["config"]` (a phasetrain
    run's config, Lightning's hparams.yaml, a Hugging Face trainer state and model config.json,
    TensorBoard hparams); runs without it get a `config_note`. window_size: the detector window
    in steps (None: its automatic window). format: "auto" or a format name for every run.

    Raises ValueError for an empty `paths`, for a metric some run did not record (naming the run
    and listing its metrics) or, with metric=None, when the runs share no watched metric; the
    errors of `load_run` for a path it cannot read.
    """
    from phasetrain.detect import detect_in_history

    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("compare_runs needs at least one run path; got none")
    loaded = [load_run(path, format) for path in paths]
    if metric is None:
        metric = _common_metric(paths, [history for history, _ in loaded])
    runs = []
    for path, label, (history, meta) in zip(paths, _labels(paths), loaded):
        if metric not in history:
            raise ValueError(f"run {str(path)!r}: {unknown_metric_message(metric, history.names())}")
        value, note = (None, None) if by is None else config_value(meta, by)
        found = [t.to_dict() for t in detect_in_history(history, metric, window_size)]
        runs.append(ComparedRun(
            label=label, source=str(path), format=str(meta.get("format")), steps=history.steps(metric),
            values=history.values(metric), transitions=tuple(found), config_value=value, config_note=note,
        ))
    return Comparison(metric=metric, by=by, runs=tuple(runs))


def _common_metric(paths: Sequence[Path], histories: Sequence[Any]) -> str:
    for name in transition_metrics(histories[0]):
        if all(name in history for history in histories):
            return name
    listed = "; ".join(f"{str(p)!r}: {', '.join(h.names())}" for p, h in zip(paths, histories))
    raise ValueError(f"the runs share no metric to compare; name one with metric= (--metric). Recorded: {listed}")


_GENERIC_FOLDER = re.compile(r"version_\d+|checkpoint-\d+|tensorboard|lightning_logs")
"""Folder names that say nothing about the run (Lightning versions, HF checkpoints): labelled with their parent."""


def _labels(paths: Sequence[Path]) -> list[str]:
    """Each run's folder name (with its parent's for generic names such as version_0), with parent
    folders prepended until every label is unique."""
    parts = [run_folder(path).resolve().parts for path in paths]
    least = [2 if _GENERIC_FOLDER.fullmatch(p[-1]) and len(p) > 1 else 1 for p in parts]
    for depth in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-max(depth, low):]) for p, low in zip(parts, least)]
        if len(set(labels)) == len(labels):
            return labels
    return [str(path) for path in paths]


def config_value(meta: Mapping[str, Any], key: str) -> tuple[Any, str | None]:
    """(value, None) for `key` in `meta["config"]`, else (None, why it is absent).

    meta: a run's meta as `load_run` returns it. key: matched exactly, as a dotted path into nested
    settings ("optimizer.lr"), or as the last part of exactly one nested setting ("lr" for
    "optimizer.lr"); an ambiguous last part is reported as such.
    """
    config = meta.get("config")
    if not isinstance(config, Mapping) or not config:
        return None, f"no configuration in the run's files, so no {key!r}"
    flat = flatten_config(config)
    if key in flat:
        return flat[key], None
    suffixed = [name for name in flat if name.endswith("." + key)]
    if len(suffixed) == 1:
        return flat[suffixed[0]], None
    known = ", ".join(sorted(flat))
    if suffixed:
        return None, f"{key!r} is ambiguous: {', '.join(suffixed)}"
    return None, f"no {key!r} in its configuration ({known})"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def plot_comparison(
    comparison: Comparison, out_path: str | os.PathLike, xscale: str = "auto", dpi: int = 120
) -> Path:
    """Draw `comparison` and write it as a PNG at `out_path`; returns the path.

    Left: the metric of every run against the step, each run's transitions as dashed lines and
    dots on its curve (triangles: up or down). Right, when the comparison has a `by` key: every
    transition step against that configuration value (a numeric axis, logarithmic when the
    positive values span >= 10x; categories otherwise), runs without a transition as crosses at
    the bottom; runs without the value are named under the plot. xscale: the step axis, "auto"
    (log when the first step is < 1% of the last), "linear", "log" or "symlog". dpi: resolution.
    """
    check_choice("xscale", xscale, ("auto", "linear", "log", "symlog"))
    check_int("dpi", dpi)
    require_matplotlib()
    from matplotlib.figure import Figure

    runs = comparison.runs
    colors = _colors(comparison)
    with_by = comparison.by is not None
    figure = Figure(figsize=(12.8 if with_by else 8.0, 4.8), layout="constrained")
    axes = figure.subplots(1, 2 if with_by else 1, squeeze=False, width_ratios=[1.5, 1] if with_by else None)[0]
    ax = axes[0]
    for run, color in zip(runs, colors):
        label = (run.label if not with_by or run.config_note
                 else f"{run.label} ({comparison.by}={_shown(run.config_value)})")
        ax.plot(run.steps, run.values, "-", color=color, lw=1.3, label=label)
        for t in run.transitions:
            ax.axvline(t["step"], color=color, ls="--", lw=0.9, alpha=0.8)
            marker = "^" if t.get("direction") == "up" else "v"
            ax.plot([t["step"]], [np.interp(t["step"], run.steps, run.values)], marker, color=color, ms=7, mec="black")
    scale = xscale_for_steps(np.concatenate([run.steps for run in runs])) if xscale == "auto" else xscale
    ax.set_xscale("symlog", linthresh=1.0) if scale == "symlog" else ax.set_xscale(scale)
    ax.set_yscale(metric_yscale(comparison.metric, np.concatenate([run.values for run in runs])))
    ax.set_xlabel("step" + (" (log scale)" if scale != "linear" else ""))
    ax.set_ylabel(comparison.metric)
    ax.set_title(f"{comparison.metric} across {len(runs)} runs (dashed: detected transitions)", fontsize=10, loc="left")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best", framealpha=0.85)
    if with_by:
        _draw_by(axes[1], comparison, colors)
    out = Path(out_path)
    figure.savefig(out, dpi=dpi)
    return out


def _colors(comparison: Comparison) -> list[Any]:
    """One colour per run: ordered along viridis by the `by` value when every run has a number, else tab10."""
    from matplotlib import colormaps

    values = [run.config_value for run in comparison.runs]
    if comparison.by is not None and len(values) > 1 and all(_is_number(v) for v in values):
        ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable")
        return [colormaps["viridis"](0.9 * rank / (len(values) - 1)) for rank in ranks]
    return [f"C{i % 10}" for i in range(len(comparison.runs))]


def _draw_by(ax: Any, comparison: Comparison, colors: Sequence[Any]) -> None:
    """Transition steps against the `by` value (see `plot_comparison`)."""
    present = [(run, color) for run, color in zip(comparison.runs, colors) if run.config_note is None]
    numeric = bool(present) and all(_is_number(run.config_value) for run, _ in present)
    categories: dict[str, int] = {}
    for run, _ in present:
        categories.setdefault(_shown(run.config_value), len(categories))

    def x_of(run: ComparedRun) -> float:
        return float(run.config_value) if numeric else float(categories[_shown(run.config_value)])

    steps = []
    for run, color in present:
        for t in run.transitions:
            marker = "^" if t.get("direction") == "up" else "v"
            ax.plot([x_of(run)], [t["step"]], marker, color=color, ms=9, mec="black")
            steps.append(t["step"])
        if not run.transitions:
            ax.plot([x_of(run)], [0.03], "x", color=color, ms=9, mew=2, transform=ax.get_xaxis_transform())
    firsts = sorted((x_of(run), run.transitions[0]["step"]) for run, _ in present if run.transitions)
    if numeric and len(firsts) > 1:
        ax.plot(*zip(*firsts), "-", color="grey", lw=0.8, zorder=0)
    if numeric:
        ax.set_xscale(spread_scale(np.array([x_of(run) for run, _ in present])))
    elif categories:
        ax.set_xticks(list(categories.values()), list(categories))
        ax.set_xlim(-0.5, len(categories) - 0.5)
    else:
        ax.text(0.5, 0.5, f"no run records {comparison.by}", transform=ax.transAxes, ha="center", va="center")
    if steps:
        ax.set_yscale(spread_scale(np.array(steps, dtype=float)))
    ax.set_xlabel(comparison.by)
    ax.set_ylabel(f"transition step of {comparison.metric}")
    ax.set_title(f"transition step vs {comparison.by} (x: no transition)", fontsize=10, loc="left")
    ax.grid(True, alpha=0.3)
    missing = [run.label for run in comparison.runs if run.config_note is not None]
    if missing:
        ax.annotate(f"no {comparison.by}: {', '.join(missing)}", xy=(0, -0.2), xycoords="axes fraction", fontsize=8)
