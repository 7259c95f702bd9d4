"""A residual conv written over its residual: which kernels may
(``codegen.in_place``), that they compute the same in place on odd shapes,
and that a model plan shares the buffer only where the conv reads the
residual last."""
from __future__ import annotations

import random

import numpy as np
import pytest

from convtune.codegen import build
from convtune.codegen.in_place import residual_in_place
from convtune.ir import conv2d
from convtune.ir.expr import Load, Var
from convtune.ir.loopnest import Buffer, Kernel, Store
from convtune.schedules.target import host_target
from convtune.schedules.templates import schedule_from_config, search_space

RESIDUAL_WORKLOADS = [
    conv2d(1, 64, 13, 11, 40, 1, bias=True, activation="relu", residual=True),
    conv2d(2, 16, 9, 7, 21, 3, padding=1, bias=True, activation="relu", residual=True),
    conv2d(1, 24, 11, 11, 17, 3, padding=1, residual=True),
    conv2d(1, 20, 7, 7, 20, 3, padding=1, groups=20, bias=True, residual=True),  # depthwise
]


def _configs(wl):  # type: ignore[no-untyped-def]
    """Every template's default config and a random valid one (fresh draws each run)."""
    rnd = random.Random()
    for name, space in search_space(wl, host_target()).items():
        yield name, space.default
        yield name, space.sample(rnd)


@pytest.mark.parametrize("wl", RESIDUAL_WORKLOADS, ids=lambda w: w.short())
def test_kernels_that_may_write_over_their_residual_compute_the_same_in_place(wl) -> None:
    """Each kernel the check lets write over its residual: the output computed
    with the two sharing one buffer equals the output with two buffers."""
    rng = np.random.default_rng()
    x = rng.standard_normal(wl.data_shape, dtype=np.float32)
    w = rng.standard_normal(wl.weight_shape, dtype=np.float32)
    b = rng.standard_normal(wl.K, dtype=np.float32) if wl.bias else None
    r = rng.standard_normal(wl.out_shape, dtype=np.float32)
    checked = 0
    for name, config in _configs(wl):
        kernel = build(schedule_from_config(wl, {"algorithm": name, **config}, host_target()))
        if not residual_in_place(kernel.loop_nest):
            continue
        conv = kernel.prepare(w, b)
        separate = conv(x, r.copy(), out=np.full(wl.out_shape, np.nan, np.float32))
        shared = r.copy()
        conv(x, shared, out=shared)
        assert np.array_equal(shared, separate), (name, config)
        checked += 1
    assert checked, f"{wl.short()}: no template may write over its residual"


def test_a_kernel_without_a_residual_or_one_reading_its_output_keeps_its_own_buffer() -> None:
    wl = conv2d(1, 16, 8, 8, 16, 1, bias=True)
    assert not residual_in_place(build(schedule_from_config(wl, {"algorithm": "gemm", **search_space(
        wl, host_target())["gemm"].default}, host_target())).loop_nest)
    i = Var("i", "int")
    params = tuple(Buffer(n, (64,)) for n in ("residual", "out"))
    accumulate = Store("out", (i,), Load("out", (i,)) + Load("residual", (i,)))  # out += residual: reads out
    assert not residual_in_place(Kernel("k", params, (accumulate,)))
    elsewhere = Store("out", (i,), Load("residual", (i + 1,)))  # reads an element another store writes
    assert not residual_in_place(Kernel("k", params, (elsewhere,)))
    assert residual_in_place(Kernel("k", params, (Store("out", (i,), Load("residual", (i,)) * 2.0),)))
