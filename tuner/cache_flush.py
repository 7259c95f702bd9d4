"""Cold caches before a timed call, as a kernel finds them inside a model.

In a model a layer's weights and scratch were last touched a whole network
ago, so they come from memory; timed alone and repeatedly, they sit in the
caches and the layer looks faster than it ever runs (ResNet-18's 20 convs:
16.2 ms in sequence against 8.7 ms summed warm, shared/NOTES.md). AutoTVM's
x86 recipe flushes the CPU cache between measurements for this reason.

``CacheFlusher`` reads a buffer twice the size of all caches on every
thread (so each core's private L2 is evicted too, not just the shared L3),
then re-reads the tensors that a model would have just produced (the
layer's input), which stay warm in a model.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
from numba import njit, prange

LINE_FLOATS = 16
"""float32 values per 64-byte cache line: one read per line evicts it."""
DEFAULT_CACHE_BYTES = 32 << 20


def cache_bytes(cores: int) -> int:
    """The shared last-level cache plus every core's private levels, from
    sysfs (a 32 MiB guess where sysfs does not say)."""
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    total = 0
    for index in sorted(root.glob("index*")):
        try:
            level = int((index / "level").read_text())
            size = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        nbytes = int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
        total += nbytes if level >= 3 else nbytes * cores
    return total or DEFAULT_CACHE_BYTES


@njit(parallel=True, nogil=True, cache=True)
def _read_lines(buf: np.ndarray) -> float:  # pragma: no cover - compiled
    total = 0.0
    for row in prange(buf.shape[0]):
        line = buf[row]
        for i in range(0, line.shape[0], LINE_FLOATS):
            total += line[i]
    return total


@lru_cache(maxsize=2)
def _evictor(nbytes: int) -> np.ndarray:
    rows = 256
    return np.ones((rows, -(-nbytes // (4 * rows))), np.float32)


class CacheFlusher:
    """``flusher()`` evicts every cache level on every thread (untimed work
    done before a timed call), then touches ``keep`` so those arrays are warm."""

    def __init__(self, cores: int, keep: Sequence[np.ndarray] = ()) -> None:
        self._buf = _evictor(2 * cache_bytes(cores))
        self._keep = [np.asarray(a) for a in keep if a is not None]
        self.sink = 0.0
        """The sum read (kept so the reads cannot be optimised away)."""

    def __call__(self) -> None:
        self.sink = _read_lines(self._buf)
        for a in self._keep:
            self.sink += float(a.reshape(-1)[::LINE_FLOATS].sum())
