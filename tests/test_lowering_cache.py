"""The on-disk cache of lowered kernels: make() runs once per schedule, a
corrupt entry is lowered again, and another schedule or the bounds-check
flag gets its own entry."""
from __future__ import annotations

from pathlib import Path

import pytest

from convtune.codegen.build import build, lower_schedule, source
from convtune.codegen.lowering_cache import lowered
from convtune.ir import conv2d
from convtune.schedules.templates import default_config, schedule_from_config


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CONVTUNE_CACHE_DIR", str(tmp_path))
    return tmp_path


def _state(k: int = 8):  # type: ignore[no-untyped-def]
    wl = conv2d(1, 8, 10, 10, k, 3, padding=1)
    return schedule_from_config(wl, default_config(wl)).state


def test_lowered_once_then_loaded(cache: Path) -> None:
    calls = []

    def make():  # type: ignore[no-untyped-def]
        calls.append(1)
        return lower_schedule(state), source(state)

    state = _state()
    first = lowered(state, False, make)
    again = lowered(_state(), False, make)  # an equal state built again
    assert len(calls) == 1 and again == first and len(list(cache.glob("lowered_*.pkl"))) == 1
    lowered(state, True, make)
    lowered(_state(16), False, make)
    assert len(calls) == 3
    for entry in cache.glob("lowered_*.pkl"):
        entry.write_bytes(b"not a pickle")
    assert lowered(state, False, make) == first and len(calls) == 4


def test_build_uses_it(cache: Path) -> None:
    state = _state()
    kernel = build(state)
    assert len(list(cache.glob("lowered_*.pkl"))) == 1
    assert kernel.source == source(state) and kernel.loop_nest == lower_schedule(state)
