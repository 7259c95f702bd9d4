"""The CUDA pipeline: a GPU schedule -> the shared lowering and passes ->
``numba.cuda.jit`` source -> compiled kernels with their launch
configurations.

numba.cuda is imported only here and in ``codegen.cuda_launch``, and only
when a CUDA kernel is asked for: CPU use never pays for it. A schedule past
the device's limits is refused (``schedules.gpu.check_limits``) before
anything compiles.
"""
from __future__ import annotations

import importlib.util
import time
from functools import lru_cache

from convtune.codegen.build import lower_schedule
from convtune.codegen.cuda_launch import CudaKernel, CudaStage, simulated
from convtune.codegen.kernel_cache import load_module
from convtune.codegen.lowering_cache import lowered
from convtune.codegen.render_cuda import render_cuda
from convtune.ir.loopnest import Kernel as LoopNest
from convtune.schedules.gpu import check_limits
from convtune.schedules.state import ScheduleState
from convtune.schedules.target import CudaTarget


class CudaUnavailable(RuntimeError):
    """No GPU and no simulator: the message says so in one line."""


def cuda_unavailable() -> str | None:
    """None when CUDA kernels can run here (a GPU, or numba's simulator), else why not."""
    if importlib.util.find_spec("numba_cuda") is None:
        return "numba-cuda is not installed (pip install 'convtune[cuda]')"
    from numba import cuda

    if cuda.is_available():
        return None
    return "no CUDA GPU is available (NUMBA_ENABLE_CUDASIM=1 runs CUDA kernels on numba's simulator)"


def require_cuda() -> None:
    reason = cuda_unavailable()
    if reason:
        raise CudaUnavailable(f"cuda: {reason}")


@lru_cache(maxsize=1)
def cuda_target() -> CudaTarget:
    """The current device and its limits (generic limits on the simulator)."""
    require_cuda()
    from numba import cuda

    dev = cuda.get_current_device()
    cc = tuple(dev.compute_capability)
    if simulated():
        return CudaTarget("CUDA simulator", cc)  # type: ignore[arg-type]
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    return CudaTarget(
        name, cc, dev.MAX_THREADS_PER_BLOCK,  # type: ignore[arg-type]
        (dev.MAX_BLOCK_DIM_X, dev.MAX_BLOCK_DIM_Y, dev.MAX_BLOCK_DIM_Z),
        (dev.MAX_GRID_DIM_X, dev.MAX_GRID_DIM_Y, dev.MAX_GRID_DIM_Z),
        dev.MAX_SHARED_MEMORY_PER_BLOCK, 255, dev.MAX_REGISTERS_PER_BLOCK, dev.MULTIPROCESSOR_COUNT)


def _header(state: ScheduleState) -> list[str]:
    return ["convtune generated kernel (numba CUDA); do not edit",
            f"workload: {state.compute.workload.key}", *(f"  {t}" for t in state.trace)]


def cuda_source(state: ScheduleState) -> str:
    """The numba.cuda source of a GPU schedule (needs no GPU)."""
    return render_cuda(lower_schedule(state, target="cuda"), _header(state))


def build_cuda(state: ScheduleState, target: CudaTarget | None = None) -> CudaKernel:
    """Check the schedule against the device's limits, then compile it (from
    numba's disk cache when an earlier process compiled the same source)."""
    target = target or cuda_target()
    check_limits(state, target)

    def make() -> tuple[LoopNest, str]:
        nest = lower_schedule(state, target="cuda")
        return nest, render_cuda(nest, _header(state))

    nest, src = lowered(state, False, make, target="cuda")  # a model's repeated layers lower once
    start = time.perf_counter()
    module = load_module(src, "cuda")
    seconds = time.perf_counter() - start
    stages = tuple(CudaStage(getattr(module, name), grid, block) for name, grid, block in module.STAGES)
    return CudaKernel(state, nest, src, stages, seconds, target)
