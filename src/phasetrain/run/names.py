"""The metric names phasetrain records itself, and the check of `watch_metrics` against them.

A watched name that no built-in metric, monitor or callback ever records is watched in vain, so
`check_watch_metrics` warns (it does not refuse: a callback may `log_metrics` any name, and a user
monitor's names are only known once it has run) and suggests the closest known name.
"""
from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Iterable, Sequence

BUILT_IN_METRICS = (
    "train_loss", "train_acc", "grad_norm", "lr", "epoch", "weight_norm", "val_loss", "val_acc",
    "nonfinite_skipped", "hessian_diag_mean", "hessian_diag_mean_stderr", "hessian_diag_std",
    "hessian_diag_max", "hessian_trace", "hessian_eos_ratio",
)
HESSIAN_EIGENVALUE = re.compile(r"^hessian_eig_[1-9]\d*$")  # hessian_eig_1 ... hessian_eig_k


def is_built_in_metric(name: str) -> bool:
    """True for a name phasetrain's loop or its built-in monitors record."""
    return name in BUILT_IN_METRICS or HESSIAN_EIGENVALUE.match(name) is not None


def check_watch_metrics(watch_metrics: Sequence[str], extra_names: Iterable[str] = ()) -> list[str]:
    """Warn (UserWarning) about each watched name that phasetrain does not record, with a did-you-mean.

    Args:
        watch_metrics: the metric names to watch for transitions, as passed to the trainer.
        extra_names: further names known to be recorded (user monitors' or logged metrics' names).

    Returns the names warned about. A name the user's own code records is fine: pass it in
    `extra_names`, or ignore the warning.
    """
    known = [*BUILT_IN_METRICS, "hessian_eig_1", *extra_names]
    unknown = [name for name in watch_metrics if not is_built_in_metric(name) and name not in known]
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else f"; phasetrain records: {', '.join(BUILT_IN_METRICS)}"
        warnings.warn(f"watch_metrics names {name!r}, which phasetrain does not record: it is watched only if a "
                      f"monitor or callback logs it{hint}", UserWarning, stacklevel=2)
    return unknown
