"""Per-launch overhead of the CUDA launch paths, in microseconds:
``python -m convtune.tuner.cuda_overhead`` prints it as JSON (GPU only).

A one-element conv is launched through numba's dispatcher (what a plain
``kernel[grid, block](*args)`` costs), through a prepared launch
(``PreparedCudaConv.launch``), and as a CUDA graph of ``GRAPH_LAUNCHES``
captured launches; wall-clock time per launch, the stream synchronised at
the end of each block. The goal for a prepared or graph launch is <= 5 us.
"""
from __future__ import annotations

import json
import time
from typing import Callable

import numpy as np

GRAPH_LAUNCHES = 20


def _per_launch_us(run: Callable[[], None], sync: Callable[[], None], launches_per_run: int, runs: int) -> float:
    run()
    sync()
    start = time.perf_counter()
    for _ in range(runs):
        run()
    sync()
    return (time.perf_counter() - start) / (runs * launches_per_run) * 1e6


def launch_overhead(runs: int = 2000) -> dict[str, float]:
    from numba import cuda

    from convtune.codegen import build
    from convtune.codegen.cuda_graph import CudaGraph
    from convtune.ir import conv2d
    from convtune.schedules.schedule import default_schedule

    wl = conv2d(1, 1, 1, 1, 1, 1)
    kernel = build(default_schedule(wl), target="cuda")
    stream = cuda.stream()
    conv = kernel.prepare(np.ones(wl.weight_shape, np.float32), stream=stream)
    data = cuda.to_device(np.ones(wl.data_shape, np.float32), stream=stream)
    out = cuda.device_array(wl.out_shape, np.float32, stream=stream)
    conv.bind(data, None, out)
    stage = kernel.stages[0]
    configured = stage.dispatcher[stage.grid, stage.block, stream]
    graph = CudaGraph([conv] * GRAPH_LAUNCHES, stream)
    result = {
        "dispatcher_us": _per_launch_us(lambda: configured(*conv.arguments), stream.synchronize, 1, runs),
        "prepared_us": _per_launch_us(conv.launch, stream.synchronize, 1, runs),
        "graph_us": _per_launch_us(graph.replay, graph.synchronize, GRAPH_LAUNCHES, max(1, runs // GRAPH_LAUNCHES)),
    }
    if out.copy_to_host()[0, 0, 0, 0] != 1.0:
        raise AssertionError(f"the one-element conv computed {out.copy_to_host()} instead of 1")
    return result


def main() -> None:
    from convtune.codegen.cuda_build import cuda_unavailable
    from convtune.codegen.cuda_launch import simulated

    reason = cuda_unavailable() or ("numba's CUDA simulator has no launch overhead to measure" if simulated() else None)
    if reason:
        raise SystemExit(f"cuda_overhead: needs a GPU: {reason}")
    print(json.dumps(launch_overhead(), indent=2))


if __name__ == "__main__":
    main()
