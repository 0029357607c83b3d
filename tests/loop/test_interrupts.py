"""StopSignals: the first SIGINT/SIGTERM becomes a flag, the second a KeyboardInterrupt; handlers restored."""
from __future__ import annotations

import os
import signal
import threading

import pytest

from phasetrain.loop.interrupts import StopSignals


def a_loop(guard: StopSignals, signal_at: int, signum: int, steps: int = 50) -> int:
    """Stands for the training loop: an update per iteration, the flag checked after each."""
    done = 0
    for step in range(1, steps + 1):
        if step == signal_at:
            os.kill(os.getpid(), signum)  # delivered to this (main) thread before kill returns to Python code
        done = step  # "the update" completes
        if guard.interrupted:
            break
    return done


@pytest.mark.parametrize("signum, name", [(signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")])
def test_first_signal_sets_the_flag_and_the_loop_finishes_its_update(signum, name):
    for signal_at in (1, 7, 30):
        with StopSignals() as guard:
            assert guard.active and not guard.interrupted
            assert a_loop(guard, signal_at, signum) == signal_at
        assert guard.interrupted and guard.signal_name == name


def test_second_sigint_raises_keyboard_interrupt_at_once():
    with StopSignals() as guard:
        os.kill(os.getpid(), signal.SIGINT)
        assert guard.interrupted
        with pytest.raises(KeyboardInterrupt, match="second stop signal"):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10**6):  # the handler runs at the next bytecode boundary
                pass


def test_previous_handlers_are_restored_also_after_an_exception():
    seen = []

    def mine(signum, frame):
        seen.append(signum)

    old_int = signal.signal(signal.SIGINT, mine)
    old_term = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(RuntimeError), StopSignals():
            assert signal.getsignal(signal.SIGINT) is not mine
            raise RuntimeError("boom")
        assert signal.getsignal(signal.SIGINT) is mine and signal.getsignal(signal.SIGTERM) is old_term
        os.kill(os.getpid(), signal.SIGINT)
        assert seen == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, old_int)


def test_default_sigint_is_keyboard_interrupt_again_after_exit():
    with StopSignals():
        pass
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10**6):
            pass


def test_an_ignored_signal_stays_ignored():
    old = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with StopSignals() as guard:
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGTERM)
            assert not guard.interrupted
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, old)


def test_outside_the_main_thread_it_does_nothing_and_raises_nothing():
    results = {}

    def worker():
        before = signal.getsignal(signal.SIGINT)
        with StopSignals() as guard:
            results["active"] = guard.active
            results["handler_kept"] = signal.getsignal(signal.SIGINT) is before
        results["interrupted"] = guard.interrupted

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert results == {"active": False, "handler_kept": True, "interrupted": False}


def test_reusable_the_flag_resets_on_enter():
    guard = StopSignals()
    with guard:
        os.kill(os.getpid(), signal.SIGINT)
    assert guard.interrupted
    with guard:
        assert not guard.interrupted and guard.signal_name is None
