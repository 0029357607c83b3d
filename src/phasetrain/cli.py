"""The `phasetrain` command: `report`, `detect`, `summary` on one run and `compare` on several.

A run is anything `phasetrain.run.sources.load_run` reads: a phasetrain run folder or its
metrics.json, a TensorBoard log folder, a CSV (long or wide), a Lightning CSVLogger folder, a
Hugging Face output folder or trainer_state.json, a JSONL file; the format is recognised (or
named with `--format`). No model is built and torch is not imported. Exit status 0 on success, 1
with a one-line message on stderr when a run or metric is not usable, 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from phasetrain.compare import compare_runs, plot_comparison
from phasetrain.detect import KINDS, detect_in_history
from phasetrain.detect.candidates import DEFAULT_WINDOW_FRACTION, DEFAULT_WINDOW_POINTS
from phasetrain.report import format_step, plot_run, run_folder, transition_metrics, write_html_report
from phasetrain.run.history import MetricHistory
from phasetrain.run.sources import FORMATS, load_run
from phasetrain.run.summary import phenomena_and_story, training_summary

_USER_ERRORS = (FileNotFoundError, NotADirectoryError, PermissionError, ValueError, KeyError, ImportError)


def _window_size(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number of steps, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of steps, got {text!r}")
    return value


WINDOW_HELP = (
    f"detector window in steps (default: the detector's automatic window, {DEFAULT_WINDOW_FRACTION * 100:g}%% of "
    f"the steps the metric spans, at least {DEFAULT_WINDOW_POINTS} recording intervals)"
)
RUN_HELP = "run folder or file: phasetrain, TensorBoard, CSV, Lightning, Hugging Face or JSONL"


def _source_options() -> argparse.ArgumentParser:
    """--format and --window-size, shared by every command."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--format", choices=("auto", *FORMATS), default="auto",
                         help="the run format (default auto: recognised from the path)")
    options.add_argument("--window-size", metavar="N", type=_window_size, help=WINDOW_HELP)
    return options


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phasetrain",
        description="Inspect training runs (phasetrain, TensorBoard, CSV, Lightning, Hugging Face, JSONL): "
        "plot them, find their phase transitions, summarise and compare them.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = [_source_options()]

    report = commands.add_parser(
        "report", parents=shared, help="write report.png (and report.html) for a run", description="Plot every "
        "metric family of a run with its detected transitions; writes report.png and report.html into the run folder."
    )
    report.add_argument("run_dir", metavar="RUN", help=RUN_HELP)
    report.add_argument("--out", metavar="PATH", type=Path, help="PNG path (default RUN_FOLDER/report.png); "
                        "the HTML page goes beside it with the suffix .html")
    report.add_argument("--xscale", choices=("auto", "linear", "log", "symlog"), default="auto",
                        help="step axis; auto: log when the first logged step is < 1%% of the last")
    _add_kinds(report)
    report.set_defaults(handler=_report)

    detect = commands.add_parser(
        "detect", parents=shared, help="print the phase transitions of one metric",
        description="Run the change-point detector on one recorded metric of a run.",
    )
    detect.add_argument("run", metavar="RUN", help=RUN_HELP)
    detect.add_argument("--metric", required=True,
                        help="metric name as the run spells it, e.g. val_acc, train/loss, eval_accuracy")
    _add_kinds(detect)
    detect.add_argument("--json", action="store_true", help="print a JSON list of transition dicts")
    detect.set_defaults(handler=_detect)

    story = commands.add_parser(
        "story", parents=shared, help="say what happened in a run, in a few lines",
        description="Name what happened in a run (memorisation, grokking, plateau exits, saddle-to-saddle "
                    "drops, edge of stability, oscillation regimes, loss spikes, catapults) with steps, "
                    "evidence and confidence.",
    )
    story.add_argument("run_dir", metavar="RUN", help=RUN_HELP)
    story.add_argument("--json", action="store_true", help="print the phenomena as a JSON list")
    story.set_defaults(handler=_story)

    summary = commands.add_parser(
        "summary", parents=shared, help="print the training summary of a run",
        description="Final and best losses/accuracies, step counts and detected transitions of a run.",
    )
    summary.add_argument("run_dir", metavar="RUN", help=RUN_HELP)
    summary.add_argument("--json", action="store_true", help="print the summary as JSON")
    summary.set_defaults(handler=_summary)

    compare = commands.add_parser(
        "compare", parents=shared, help="overlay one metric of several runs and tabulate their transitions",
        description="Overlay one metric across runs with each run's transitions marked, print the transition "
        "steps per run, and with --by plot the transition step against a configuration value.",
    )
    compare.add_argument("runs", metavar="RUN", nargs="+", help=RUN_HELP + " (any mix)")
    compare.add_argument("--metric", help="metric to compare (default: the first watched metric every run recorded)")
    compare.add_argument("--by", metavar="CONFIG_KEY",
                         help="configuration key to plot the transition step against, e.g. weight_decay")
    compare.add_argument("--out", metavar="PATH", type=Path, default=Path("compare.png"),
                         help="PNG path (default ./compare.png)")
    compare.add_argument("--xscale", choices=("auto", "linear", "log", "symlog"), default="auto",
                         help="step axis of the overlay")
    compare.add_argument("--json", action="store_true", help="print the comparison as JSON (no picture)")
    compare.set_defaults(handler=_compare)
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
    except BrokenPipeError:  # the reader left (`phasetrain summary RUN | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
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


def _load(path: str, format: str = "auto") -> tuple[MetricHistory, dict[str, Any]]:
    history, meta = load_run(path, format)
    if not history.names():
        raise ValueError(f"{path!r} holds no recorded metrics")
    return history, meta


def _report(args: argparse.Namespace) -> int:
    history, meta = _load(args.run_dir, args.format)
    run_dir = run_folder(args.run_dir)
    _progress(f"detecting transitions in {run_dir} ...")
    summary = training_summary(history, meta, transition_metrics(history), args.window_size, args.kinds)
    transitions = summary["phase_transitions"]
    _progress("drawing ...")
    title = run_dir.resolve().name
    png = plot_run(history, args.out or run_dir / "report.png", transitions=transitions, title=title,
                   xscale=args.xscale)
    page = write_html_report(png, png.with_suffix(".html"), transitions, summary, title=f"phasetrain: {title}",
                             meta=meta)
    print(png)
    print(page)
    return 0


def _add_kinds(command: argparse.ArgumentParser) -> None:
    command.add_argument("--kinds", type=_kinds, default=("level",), metavar="KIND[,KIND...]",
                         help="what to report: level (abrupt changes, the default), slope (kinks: a trend "
                              "changing rate), regime (a sustained oscillation or train of spikes)")


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [kind for kind in kinds if kind not in KINDS]
    if not kinds or unknown:
        raise argparse.ArgumentTypeError(f"must be a comma-separated list of {', '.join(KINDS)}; got {text!r}")
    return kinds


def _detect(args: argparse.Namespace) -> int:
    history, _ = _load(args.run, args.format)
    transitions = [t.to_dict() for t in detect_in_history(history, args.metric, window_size=args.window_size,
                                                          kinds=args.kinds)]
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
    rows = [("kind", "step", "span", "direction", "before -> after", "magnitude", "score")]
    for t in transitions:
        ongoing = t.get("ongoing")
        rows.append((
            str(t.get("kind", "level")),
            format_step(t["step"]),
            f"{format_step(t['start_step'])}-{'(ongoing)' if ongoing else format_step(t['end_step'])}",
            str(t.get("direction", "")),
            f"{_number(t.get('level_before'))} -> {_number(t.get('level_after'))}",
            _number(t.get("magnitude")),
            _number(t.get("score")),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows]
    return f"{len(transitions)} transition(s) in {metric}:\n" + "\n".join(lines)


def _summary(args: argparse.Namespace) -> int:
    history, meta = _load(args.run_dir, args.format)
    summary = training_summary(history, meta, transition_metrics(history), args.window_size)
    if args.json:
        print(json.dumps(_jsonable(summary), indent=2))
        return 0
    width = max(len(key) for key in summary)
    print(f"{'format'.ljust(width)}  {meta['format']} ({meta['source']})")
    for key, value in summary.items():
        if key not in ("phase_transitions", "phenomena", "story"):
            shown = _number(value) if isinstance(value, float) else ("-" if value is None else value)
            print(f"{key.ljust(width)}  {shown}")
    print("phase_transitions")
    for metric, records in summary["phase_transitions"].items():
        found = ", ".join(f"{r.get('direction', '')} at {format_step(r['step'])}" for r in records) or "none"
        print(f"  {metric.ljust(width - 2)}  {found}")
    print("story")
    for line in (summary["story"] or "nothing named: no memorisation, grokking, plateau exit, ... found").splitlines():
        print(f"  {line}")
    return 0


def _story(args: argparse.Namespace) -> int:
    history, _ = _load(args.run_dir, args.format)
    told = phenomena_and_story(history, args.window_size)
    if args.json:
        print(json.dumps(_jsonable(told["phenomena"]), indent=2))
    else:
        print(told["story"] or "nothing named: no memorisation, grokking, plateau exit, ... found")
    return 0


def _compare(args: argparse.Namespace) -> int:
    _progress(f"reading {len(args.runs)} runs and detecting their transitions ...")
    comparison = compare_runs(args.runs, metric=args.metric, by=args.by, window_size=args.window_size,
                              format=args.format)
    if args.json:
        print(json.dumps(_jsonable(comparison.to_dict()), indent=2))
        return 0
    print(comparison.table())
    for note in comparison.notes():
        print(note)
    _progress("drawing ...")
    print(plot_comparison(comparison, args.out, xscale=args.xscale))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
