"""The machine's FMA and sgemm ceilings, measured the way the kernels run.

The FMA ceiling is a loop of independent FMAs on the target's native vector
(zmm on AVX-512, ymm on AVX2), 12 accumulator chains to cover FMA latency,
on every thread: the most any conv kernel could reach. The sgemm ceiling is
numpy's BLAS on a large square matrix product. Both report the best of
several runs: noise on a shared machine only ever slows a run down, and a
ceiling is what the machine can do. The bench also times the FMA probe
interleaved with each layer's contenders, as this machine's speed drifts by
a third over minutes.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
from numba import njit, prange

from convtune.codegen.intrinsics import vadd, vfma, vget, vsplat
from convtune.schedules.target import host_target
from convtune.tuner.timing import time_calls

CHAINS = 12


@lru_cache(maxsize=None)
def fma_chains(lanes: int) -> Callable[[float, int], float]:
    """``CHAINS`` independent chains of ``lanes``-wide FMAs, ``iterations``
    long: a serial function, as written inline in a ``prange`` it ran at half
    speed (numba's parfor lowering kept the accumulators out of registers)."""

    @njit(inline="always")
    def fma4(a, b, c, d, x, y):  # type: ignore[no-untyped-def]
        return vfma(a, x, y), vfma(b, x, y), vfma(c, x, y), vfma(d, x, y)

    @njit(nogil=True)
    def chains(x0, iterations):  # type: ignore[no-untyped-def]
        x = vsplat(x0, lanes)
        y = vsplat(x0 * 0.5, lanes)
        a0 = vsplat(0.0, lanes)
        a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11 = a0, a0, a0, a0, a0, a0, a0, a0, a0, a0, a0
        for _ in range(iterations):  # CHAINS = 12 independent accumulators
            a0, a1, a2, a3 = fma4(a0, a1, a2, a3, x, y)
            a4, a5, a6, a7 = fma4(a4, a5, a6, a7, x, y)
            a8, a9, a10, a11 = fma4(a8, a9, a10, a11, x, y)
        s = a0
        for v in (a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11):
            s = vadd(s, v)
        return vget(s, 0)

    return chains


@lru_cache(maxsize=None)
def _fma_loop(lanes: int) -> Callable[[np.ndarray, int], None]:
    """``fma_chains`` on every thread."""
    chains = fma_chains(lanes)

    @njit(parallel=True)
    def loop(out, iterations):  # type: ignore[no-untyped-def]
        for t in prange(out.shape[0]):
            out[t] = chains(out[t], iterations)

    return loop


def fma_probe(threads: int, lanes: int | None = None, iterations: int = 2_000_000) -> tuple[Callable[[], object], int]:
    """A call running back-to-back ``lanes``-wide FMAs (default: the host's
    native vector) on ``threads`` threads, and the FLOPs it does: the bench
    times it beside each layer so "% of the ceiling" compares like with like."""
    lanes = lanes or host_target().vector_lanes
    loop = _fma_loop(lanes)
    out = np.full(threads, 0.999, np.float32)
    return (lambda: loop(out, iterations)), threads * iterations * CHAINS * lanes * 2


def fma_ceiling(threads: int, lanes: int | None = None, iterations: int = 2_000_000, repeats: int = 7) -> float:
    """GFLOP/s of the FMA probe, best of ``repeats`` runs."""
    run, flops = fma_probe(threads, lanes, iterations)
    return flops / min(time_calls(run, repeats, warmup=1)) / 1e9


def sgemm_ceiling(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of numpy's float32 matrix product (n^3)."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    return 2 * n ** 3 / min(time_calls(lambda: a @ a, repeats, warmup=1)) / 1e9
