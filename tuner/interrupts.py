"""Ctrl-C only where it is safe: during a measurement, not while the log and
the Optuna study are being brought into agreement.

A tuning run spends nearly all its time measuring, and an interrupt there
loses nothing (the trial is closed as failed and measured again on resume).
Between measurements it writes the log and several SQLite rows; a
KeyboardInterrupt raised in the middle of those leaves a logged config that the
study counts as unmeasured, or an SQLAlchemy session half committed.

The gate swaps in a handler that only notes the signal rather than masking it:
the kernel hands a process-directed SIGINT to any thread that does not block it
(rich's progress bar runs one), and Python then runs the handler in the main
thread whatever the main thread's mask says.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator


class CtrlCGate:
    """``with gate.held():`` defers Ctrl-C to the end of the block, except
    inside ``with gate.allowed():``, where a pending or new one is raised."""

    def __init__(self) -> None:
        self._noted = False
        self._previous: Any = None
        self._active = threading.current_thread() is threading.main_thread()

    def _note(self, signum: int, frame: object) -> None:
        self._noted = True

    def _deliver(self, handler: Any) -> None:
        if self._noted:
            self._noted = False
            if callable(handler):
                handler(signal.SIGINT, None)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        if not self._active:  # signal handlers belong to the main thread
            yield
            return
        self._previous = signal.signal(signal.SIGINT, self._note)
        try:
            yield
        finally:
            previous, self._previous = self._previous, None
            signal.signal(signal.SIGINT, previous)
            self._deliver(previous)

    @contextlib.contextmanager
    def allowed(self) -> Iterator[None]:
        if not self._active or self._previous is None:
            yield
            return
        signal.signal(signal.SIGINT, self._previous)
        try:
            self._deliver(self._previous)
            yield
        finally:
            signal.signal(signal.SIGINT, self._note)
