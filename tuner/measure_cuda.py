"""Measuring a CUDA candidate in the worker: build (the device's limits are
checked first), check against the float64 reference on the device, time.

Operands live on the device, so the timing covers the kernels and their
prepared launches, not host copies. Times come from CUDA events around
blocks of launches after a warm-up; on numba's CUDA simulator, whose events
record nothing, from the wall clock (a test of the path, not a speed).
"""
from __future__ import annotations

import time
from typing import Any, Callable

from convtune.tuner.measure import MeasureOptions, MeasureResult, _describe, _inputs_and_reference, wrong_answer
from convtune.tuner.records import ErrorCode

WARMUP_LAUNCHES = 3
MAX_LAUNCHES_PER_BLOCK = 10000


def _block_seconds(launch: Callable[[], None], stream: Any, number: int) -> float:
    """Mean seconds per launch over ``number`` launches."""
    from numba import cuda

    from convtune.codegen.cuda_launch import simulated

    if simulated():
        start = time.perf_counter()
        for _ in range(number):
            launch()
        stream.synchronize()
        return (time.perf_counter() - start) / number
    begin, end = cuda.event(), cuda.event()
    begin.record(stream)
    for _ in range(number):
        launch()
    end.record(stream)
    end.synchronize()
    return cuda.event_elapsed_time(begin, end) / 1e3 / number


def time_launches(launch: Callable[[], None], stream: Any, repeats: int, min_seconds: float) -> list[float]:
    """Seconds per launch, one per repeat, after a warm-up; each repeat is a
    block of launches lasting about ``min_seconds``. On the simulator (a test
    of the path, where a launch takes seconds) one launch a repeat, no warm-up:
    the check's launch came first."""
    from convtune.codegen.cuda_launch import simulated

    if simulated():
        return [_block_seconds(launch, stream, 1) for _ in range(repeats)]
    for _ in range(WARMUP_LAUNCHES):
        launch()
    stream.synchronize()
    once = _block_seconds(launch, stream, 1)
    number = max(1, min(MAX_LAUNCHES_PER_BLOCK, int(min_seconds / max(once, 1e-7))))
    return [_block_seconds(launch, stream, number) for _ in range(repeats)]


def measure_cuda(workload: dict, config: dict, options: MeasureOptions) -> MeasureResult:
    """Build, check and time one CUDA candidate in this process."""
    import numpy as np
    from numba import cuda

    from convtune.codegen.cuda_build import build_cuda, cuda_target
    from convtune.ir.workload import Conv2D
    from convtune.schedules.templates import schedule_from_config

    wl = Conv2D.from_dict(workload)
    start = time.perf_counter()
    try:
        target = cuda_target()
        kernel = build_cuda(schedule_from_config(wl, config, target).state, target)
    except Exception as e:  # noqa: BLE001 - a limit, a lowering or a compile failure is a result
        return MeasureResult(error_code=ErrorCode.BUILD_ERROR, error=_describe(e))
    compiled = time.perf_counter() - start
    x, ref = _inputs_and_reference(wl)
    try:
        conv = kernel.prepare(x.weight, x.bias)
        data = cuda.to_device(x.data)
        residual = None if x.residual is None else cuda.to_device(x.residual)
        out = cuda.to_device(np.full(wl.out_shape, np.nan, np.float32))
        conv(data, residual=residual, out=out)
        result = out.copy_to_host()
    except Exception as e:  # noqa: BLE001
        return MeasureResult(error_code=ErrorCode.RUNTIME_ERROR, error=_describe(e), compile_seconds=compiled)
    wrong = wrong_answer(result, ref, compiled)
    if wrong is not None:
        return wrong
    costs = time_launches(conv.launch, conv.stream, options.repeats, options.min_repeat_seconds)
    return MeasureResult(costs, compile_seconds=compiled, measure_seconds=time.perf_counter() - start - compiled)
