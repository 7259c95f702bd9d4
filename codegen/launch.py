"""The one parallel driver every kernel runs on.

A kernel is a sequence of stages (pack, compute, ...); each stage is a serial
function ``stage(i, *buffers)`` whose ``i`` is the stage's parallel loop
index. ``run_stages`` runs them in order, each over a ``prange`` on Numba's
threading layer; a stage without a parallel loop has extent 1. It is
compiled once per buffer count, so building a kernel never pays for parfor
lowering. Like the kernels, its source is written to the kernel cache with
the code generator's version in it: numba's cache does not notice when the
intrinsics it calls change, the version stamp does.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from numba import types

from convtune.codegen.kernel_cache import CODEGEN_VERSION, load_module

_SOURCE = '''# convtune parallel stage driver; codegen {version}
import numpy as np
from numba import njit, prange
from convtune.codegen.intrinsics import call_stage


@njit(parallel=True, cache=True, nogil=True)
def run_stages(addresses, extents, buffers):
    for stage in range(addresses.shape[0]):
        addr = addresses[stage]
        for i in prange(extents[stage]):
            call_stage(addr, np.int64(i), buffers)


@njit(cache=True, nogil=True)
def run_stages_serial(addresses, extents, buffers):
    for stage in range(addresses.shape[0]):
        addr = addresses[stage]
        for i in range(extents[stage]):
            call_stage(addr, np.int64(i), buffers)
'''


@lru_cache(maxsize=2)
def run_stages(serial: bool = False) -> Any:
    """The driver: ``run_stages()(addresses, extents, buffers_tuple)``. The
    serial one serves bounds-checked kernels: an exception raised inside a
    ``prange`` reaches Python only as a SystemError, a serial loop passes the
    IndexError on as it is."""
    module = load_module(_SOURCE.format(version=CODEGEN_VERSION), "launch")
    return module.run_stages_serial if serial else module.run_stages


def stage_driver_signature(buffers: int) -> tuple[types.Type, ...]:
    """The driver's signature for kernels of ``buffers`` buffers, as a model's
    driver calls it (``codegen.model_driver``: writable flat arrays)."""
    index = types.Array(types.int64, 1, "C")
    return index, index, types.UniTuple(types.Array(types.float32, 1, "C"), buffers)


def compile_stage_driver(buffers: int, serial: bool = False) -> None:
    """Compile the driver for kernels of ``buffers`` buffers (or load it from
    the disk cache) ahead of a first call: the workers of ``codegen.prebuild``
    do, since each buffer count costs about a second of parfor lowering, and
    a cold model start waited for four of them after its kernels."""
    run_stages(serial).compile(stage_driver_signature(buffers))
