"""Timing that holds up on a shared, noisy machine.

Each measurement is a block of calls long enough to swamp timer resolution
(``min_block_seconds``), preceded by a warm-up call and a short pause: a pause
lets another runtime's spinning threads (OpenBLAS, onnxruntime, OpenMP) go
idle so they do not steal cores from the contender being timed. Results are
per-call seconds; callers take medians.
"""
from __future__ import annotations

import time
from typing import Callable

SETTLE_SECONDS = 0.01
PEER_SETTLE_SECONDS = 0.1
"""Between different runtimes: onnxruntime's pool spins for up to ~100 ms
after a run (measured: torch ran at 7-20 GFLOP/s 10 ms after onnxruntime, at
35-42 after 100 ms). Its spinning is left on, as its users run it."""


def calls_per_block(fn: Callable[[], object], min_block_seconds: float, warmup: int = 3) -> int:
    """Calls needed for one block to last at least ``min_block_seconds``
    (judged from the fastest of a few warm calls)."""
    for _ in range(warmup):
        fn()
    once = max(min(time_calls(fn, 3, settle=0.0, warmup=0)), 1e-7)
    return max(1, int(min_block_seconds / once) + 1)


def time_calls(fn: Callable[[], object], number: int, settle: float = SETTLE_SECONDS, warmup: int = 2,
               before: Callable[[], object] | None = None) -> list[float]:
    """Seconds of each of ``number`` calls, after a pause and ``warmup`` calls
    (the first calls after a pause pay for waking the thread pool).
    ``before`` runs, untimed, before each timed call (e.g. a cache flush)."""
    if settle:
        time.sleep(settle)
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(number):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
