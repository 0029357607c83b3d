"""The `phasetrain` command: `report`, `detect` and `summary` on a run folder.

Reads only the run's `metrics.json` (no model is built). Exit status 0 on success, 1 with a
one-line message on stderr when the run folder or metric is not usable, 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from phasetrain.detect import detect_in_history
from phasetrain.report import format_step, plot_run, run_folder, write_html_report
from phasetrain.run.history import MetricHistory, load_metrics
from phasetrain.run.summary import training_summary, transitions_by_metric

_USER_ERRORS = (FileNotFoundError, NotADirectoryError, PermissionError, ValueError, KeyError, ImportError)


def _window_size(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number of steps, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of steps, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phasetrain",
        description="Inspect a phasetrain run folder: plot it, find its phase transitions, summarise it.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    report = commands.add_parser(
        "report", help="write report.png (and report.html) for a run", description="Plot every metric "
        "family of a run with its detected transitions; writes RUN_DIR/report.png and report.html."
    )
    report.add_argument("run_dir", metavar="RUN_DIR", help="run folder (holds metrics.json) or a metrics.json")
    report.add_argument("--out", metavar="PATH", type=Path, help="PNG path (default RUN_DIR/report.png); "
                        "the HTML page goes beside it with the suffix .html")
    report.add_argument("--window-size", metavar="N", type=_window_size,
                        help="detector window in steps (default: 2%% of the run)")
    report.add_argument("--xscale", choices=("auto", "linear", "log", "symlog"), default="auto",
                        help="step axis; auto: log when the first logged step is < 1%% of the last")
    report.set_defaults(handler=_report)

    detect = commands.add_parser(
        "detect", help="print the phase transitions of one metric",
        description="Run the change-point detector on one recorded metric of a run.",
    )
    detect.add_argument("run", metavar="RUN_DIR_OR_METRICS_JSON", help="run folder or metrics.json")
    detect.add_argument("--metric", required=True, help="metric name, e.g. val_acc, train_loss, hessian_eig_1")
    detect.add_argument("--window-size", metavar="N", type=_window_size,
                        help="detector window in steps (default: 2%% of the run)")
    detect.add_argument("--json", action="store_true", help="print a JSON list of transition dicts")
    detect.set_defaults(handler=_detect)

    summary = commands.add_parser(
        "summary", help="print the training summary of a run",
        description="Final and best losses/accuracies, step counts and detected transitions of a run.",
    )
    summary.add_argument("run_dir", metavar="RUN_DIR", help="run folder (holds metrics.json) or a metrics.json")
    summary.add_argument("--json", action="store_true", help="print the summary as JSON")
    summary.set_defaults(handler=_summary)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]) and return the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        return args.handler(args)
    except _USER_ERRORS as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        print(f"phasetrain {args.command}: error: {' '.join(str(message).split())}", file=sys.stderr)
        return 1


def _progress(message: str) -> None:
    """Say what a slow step is doing, only to a person watching a terminal."""
    if sys.stderr.isatty():
        print(message, file=sys.stderr, flush=True)


def _jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars to Python, non-finite floats to None, tuples to lists."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _load(path: str) -> tuple[MetricHistory, dict[str, Any]]:
    history, meta = load_metrics(path)
    if not history.names():
        raise ValueError(f"{path!r} holds no recorded metrics")
    return history, meta


def _report(args: argparse.Namespace) -> int:
    history, meta = _load(args.run_dir)
    run_dir = run_folder(args.run_dir)
    _progress(f"detecting transitions in {run_dir} ...")
    summary = training_summary(history, meta)
    transitions = (
        summary["phase_transitions"]
        if args.window_size is None
        else transitions_by_metric(history, window_size=args.window_size)
    )
    _progress("drawing ...")
    title = run_dir.resolve().name
    png = plot_run(history, args.out or run_dir / "report.png", transitions=transitions, title=title, xscale=args.xscale)
    page = write_html_report(png, png.with_suffix(".html"), transitions, summary, title=f"phasetrain: {title}")
    print(png)
    print(page)
    return 0


def _detect(args: argparse.Namespace) -> int:
    history, _ = _load(args.run)
    transitions = [t.to_dict() for t in detect_in_history(history, args.metric, window_size=args.window_size)]
    if args.json:
        print(json.dumps(_jsonable(transitions)))
    elif not transitions:
        print(f"no transitions found in {args.metric} ({len(history.values(args.metric))} records)")
    else:
        print(_transition_table(args.metric, transitions))
    return 0


def _number(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.4g}"


def _transition_table(metric: str, transitions: Sequence[dict[str, Any]]) -> str:
    rows = [("step", "span", "direction", "before -> after", "magnitude", "score")]
    for t in transitions:
        rows.append((
            format_step(t["step"]),
            f"{format_step(t['start_step'])}-{format_step(t['end_step'])}",
            str(t.get("direction", "")),
            f"{_number(t.get('level_before'))} -> {_number(t.get('level_after'))}",
            _number(t.get("magnitude")),
            _number(t.get("score")),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows]
    return f"{len(transitions)} transition(s) in {metric}:\n" + "\n".join(lines)


def _summary(args: argparse.Namespace) -> int:
    history, meta = _load(args.run_dir)
    summary = training_summary(history, meta)
    if args.json:
        print(json.dumps(_jsonable(summary), indent=2))
        return 0
    width = max(len(key) for key in summary)
    for key, value in summary.items():
        if key != "phase_transitions":
            shown = _number(value) if isinstance(value, float) else ("-" if value is None else value)
            print(f"{key.ljust(width)}  {shown}")
    print("phase_transitions")
    for metric, records in summary["phase_transitions"].items():
        found = ", ".join(f"{r.get('direction', '')} at {format_step(r['step'])}" for r in records) or "none"
        print(f"  {metric.ljust(width - 2)}  {found}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
