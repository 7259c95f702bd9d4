"""Lowered kernels (loop nest and source) cached on disk, keyed by the schedule.

Why: numba's cache gives a second process the machine code in milliseconds,
but lowering a schedule and running the passes is Python that takes 0.3-1.4 s
a conv (most of ResNet-18's 29 s warm start). The key is the pickled
schedule state, the bounds-check flag and a hash of every source file of
``ir``, ``schedules`` and ``codegen``, so any change to the code that
lowers misses the cache rather than reusing a stale nest. Entries are
written atomically beside the kernel modules (``kernel_cache.cache_dir``)
and are as trusted as those modules, which are imported from there.
"""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Callable

from convtune.codegen.kernel_cache import cache_dir, write_atomically
from convtune.ir.loopnest import Kernel as LoopNest
from convtune.schedules.state import ScheduleState

_PACKAGE = Path(__file__).resolve().parent.parent
LOWERING_VERSION = hashlib.sha256(b"".join(
    p.read_bytes() for d in ("ir", "schedules", "codegen") for p in sorted((_PACKAGE / d).rglob("*.py")))).hexdigest()


_peeked: dict[Path, tuple[LoopNest, str]] = {}
"""Lowerings ``cached_lowering`` read, kept for the ``lowered`` call that
follows it (``prebuild`` asks, then the plan builds): read once, not twice."""


def _path(pickled_state: bytes, check_bounds: bool, target: str) -> Path:
    key = hashlib.sha256(f"{LOWERING_VERSION} {target} {check_bounds} ".encode() + pickled_state).hexdigest()[:32]
    return cache_dir() / f"lowered_{key}.pkl"


def _load(path: Path) -> tuple[LoopNest, str] | None:
    try:
        return pickle.loads(path.read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError):
        return None


def cached_lowering(state: ScheduleState, check_bounds: bool, target: str = "cpu") -> tuple[LoopNest, str] | None:
    """What ``lowered`` stored for this schedule in an earlier call, if anything."""
    path = _path(pickle.dumps(state), check_bounds, target)
    value = _peeked.get(path) or _load(path)
    if value is not None:
        _peeked[path] = value
    return value


def store_lowering(pickled_state: bytes, check_bounds: bool, value: tuple[LoopNest, str], target: str = "cpu") -> None:
    """Store ``value`` for the schedule whose pickle is ``pickled_state``.
    A schedule's pickle can change in a round trip (pickle interns the
    attribute names it loads, so objects once distinct become shared), so a
    process building another's schedules stores them under the sender's
    pickle as well as its own."""
    write_atomically(_path(pickled_state, check_bounds, target), pickle.dumps(value))


def lowered(state: ScheduleState, check_bounds: bool, make: Callable[[], tuple[LoopNest, str]],
            target: str = "cpu") -> tuple[LoopNest, str]:
    """``make()`` (the loop nest and its source for ``target``), or what it
    returned in an earlier process."""
    pickled = pickle.dumps(state)  # before make(), which may fill caches the state carries
    path = _path(pickled, check_bounds, target)
    value = _peeked.pop(path, None) or _load(path)
    if value is None:
        value = make()
        store_lowering(pickled, check_bounds, value, target)
    return value
