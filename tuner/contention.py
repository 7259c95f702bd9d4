"""How much of the machine other processes took while a candidate was timed.

Why: timings taken while another process competes for the cores are
inflated, unevenly, and rank configs wrongly. A resnet18 log tuned beside a
test suite on 2 cores recorded the default direct config of a stride-2 layer
at 15.7 ms; on a quiet machine the same config runs in 0.30 ms (a quiet
retune, with more trials, ran the whole model 1.4x faster). The tuner cannot
prevent that, but it can notice, record it and say so.

The measure is the system's busy CPU time (``/proc/stat``: user, nice,
system, irq, softirq and a VM's steal time) minus this process's own (all its
threads), as a fraction of the wall time times the cores. It does not depend
on how this process's threads wait (spinning or sleeping). Linux only; None
elsewhere.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

CONTENDED = 0.25
"""Fraction of the cores busy elsewhere above which a timing is not trusted."""
MIN_SECONDS = 0.25
"""Shortest span measured: the kernel counts CPU time in ticks (10 ms), so
a shorter one is mostly rounding (a 20 ms span read 37 % on a quiet machine)."""

_STAT = Path("/proc/stat")
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)
"""user, nice, system, irq, softirq, steal of /proc/stat's cpu line (not idle, iowait, guest)."""


def _busy_seconds() -> Optional[float]:
    try:
        fields = _STAT.read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    return sum(int(fields[i]) for i in _BUSY_FIELDS if i < len(fields)) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


class CpuMeter:
    """Started when made; ``stop()`` returns (and ``others`` holds) the
    fraction of the machine's cores other processes kept busy meanwhile:
    None where unknown, or when the span was shorter than ``MIN_SECONDS``.
    Also a context manager (``with CpuMeter() as m: ...; m.others``)."""

    def __init__(self, cores: Optional[int] = None) -> None:
        self.cores = cores or os.cpu_count() or 1
        self.others: Optional[float] = None
        self._start = (time.perf_counter(), _busy_seconds(), _own_seconds())

    def stop(self) -> Optional[float]:
        wall0, busy0, own0 = self._start
        busy1, own1, wall = _busy_seconds(), _own_seconds(), time.perf_counter() - wall0
        if busy0 is not None and busy1 is not None and wall >= MIN_SECONDS:
            others = (busy1 - busy0) - (own1 - own0)
            self.others = min(1.0, max(0.0, others / (wall * self.cores)))
        return self.others

    def __enter__(self) -> CpuMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
