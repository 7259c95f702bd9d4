"""The machine's FMA and sgemm ceilings, measured the way the kernels run.

The FMA ceiling is a loop of independent vector FMAs (register-resident, 12
accumulator chains to cover FMA latency) on every thread: the most any conv
kernel could reach. The sgemm ceiling is numpy's BLAS on a large square
matrix product. Both report the best of several runs: noise on a shared
machine only ever slows a run down, and a ceiling is what the machine can do.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from codegen.intrinsics import vfma, vget, vsplat
from tuner.timing import time_calls

LANES = 8
"""One AVX2 vector; on AVX-512 LLVM fuses pairs, so the peak is the same loop."""


@njit(parallel=True, cache=True, fastmath=False)
def _fma_loop(out, iterations):  # type: ignore[no-untyped-def]
    for t in prange(out.shape[0]):
        x = vsplat(out[t], 8)
        a0 = vsplat(0.0, 8)
        a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11 = a0, a0, a0, a0, a0, a0, a0, a0, a0, a0, a0
        for _ in range(iterations):
            a0 = vfma(a0, x, x)
            a1 = vfma(a1, x, x)
            a2 = vfma(a2, x, x)
            a3 = vfma(a3, x, x)
            a4 = vfma(a4, x, x)
            a5 = vfma(a5, x, x)
            a6 = vfma(a6, x, x)
            a7 = vfma(a7, x, x)
            a8 = vfma(a8, x, x)
            a9 = vfma(a9, x, x)
            a10 = vfma(a10, x, x)
            a11 = vfma(a11, x, x)
        s = a0
        for v in (a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11):
            s = vfma(s, x, v)
        out[t] = vget(s, 0)


def fma_ceiling(threads: int, iterations: int = 2_000_000, repeats: int = 7) -> float:
    """GFLOP/s of back-to-back vector FMAs on ``threads`` threads."""
    out = np.full(threads, 1e-6, np.float32)
    flops = threads * iterations * 12 * LANES * 2
    return flops / min(time_calls(lambda: _fma_loop(out, iterations), repeats, warmup=1)) / 1e9


def sgemm_ceiling(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of numpy's float32 matrix product (n^3)."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    return 2 * n ** 3 / min(time_calls(lambda: a @ a, repeats, warmup=1)) / 1e9
