"""Ctrl-C and SIGTERM during training: finish the update, save, stop cleanly; twice: stop at once.

`StopSignals` is a context manager around the training loop. The first SIGINT or SIGTERM only sets
`interrupted` (and `signal_name`); the loop checks it after each optimizer update, writes a
checkpoint and metrics.json with `stop_reason="interrupted"` and returns. A second signal while
the first is being handled raises KeyboardInterrupt at once (for a save that hangs). On exit the
handlers that were there before are put back. Outside the main thread (where Python cannot set
signal handlers) it does nothing, and signals keep their usual effect. A signal the process
ignores (SIG_IGN, e.g. SIGINT in a background job) stays ignored.
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Turn the first stop signal into a flag, the second into KeyboardInterrupt.

    Args:
        signals: the signals to catch (default SIGINT and SIGTERM).

    Attributes:
        interrupted: True once a caught signal arrived.
        signal_name: its name ("SIGINT", "SIGTERM"), None before.
        active: True while the handlers are installed (False outside the main thread).
    """

    def __init__(self, signals: Sequence[signal.Signals] = STOP_SIGNALS) -> None:
        self.signals = tuple(signal.Signals(s) for s in signals)
        self.interrupted = False
        self.signal_name: str | None = None
        self.active = False
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> Self:
        self.interrupted, self.signal_name = False, None
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in self.signals:
            previous = signal.getsignal(signum)
            if previous is signal.SIG_IGN or previous is None:  # ignored, or owned by non-Python code
                continue
            self._previous[signum] = previous
            signal.signal(signum, self._handle)
        self.active = True
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.interrupted:
            raise KeyboardInterrupt(f"second stop signal ({signal.Signals(signum).name}) during the clean stop")
        self.interrupted, self.signal_name = True, signal.Signals(signum).name

    def __exit__(self, *exc_info: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        self.active = False
