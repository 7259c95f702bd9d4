"""The one parallel driver every kernel runs on.

A kernel is a sequence of stages (pack, compute, ...); each stage is a serial
function ``stage(i, *buffers)`` whose ``i`` is the stage's parallel loop
index. ``run_stages`` runs them in order, each over a ``prange`` on Numba's
threading layer; a stage without a parallel loop has extent 1. It is
compiled once per buffer count and cached on disk, so building a kernel
never pays for parfor lowering.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from codegen.intrinsics import call_stage


@njit(parallel=True, cache=True, nogil=True)
def run_stages(addresses, extents, buffers):  # type: ignore[no-untyped-def]
    for stage in range(addresses.shape[0]):
        addr = addresses[stage]
        for i in prange(extents[stage]):
            call_stage(addr, np.int64(i), buffers)
