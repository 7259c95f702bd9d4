"""The pipeline: schedule -> loop nest -> passes -> Numba source -> compiled kernel."""
from __future__ import annotations

import os


from convtune.codegen.kernel import CompiledKernel
from convtune.codegen.kernel_cache import CODEGEN_VERSION, compile_source, machine_code_cached
from convtune.codegen.lower import lower
from convtune.codegen.lowering_cache import cached_lowering, lowered
from convtune.codegen.passes.bounds_check import check_bounds
from convtune.codegen.passes.chunk_stores import chunk_stores
from convtune.codegen.passes.flatten import flatten_kernel
from convtune.codegen.passes.hoist import hoist_indices
from convtune.codegen.passes.prefetch import insert_prefetches
from convtune.codegen.passes.combine_stores import combine_stores
from convtune.codegen.passes.registers import promote_registers
from convtune.codegen.passes.shared_memory import stage_shared
from convtune.codegen.passes.simplify import simplify_kernel
from convtune.codegen.passes.unroll import unroll_kernel
from convtune.codegen.passes.vectorize import vectorize_kernel
from convtune.codegen.render_numba import render
from convtune.ir.loopnest import Kernel as LoopNest
from convtune.schedules.schedule import Schedule
from convtune.schedules.state import ScheduleState

TARGETS = ("cpu", "cuda")


def _state(schedule: Schedule | ScheduleState) -> ScheduleState:
    return schedule.state if isinstance(schedule, Schedule) else schedule


def lower_schedule(schedule: Schedule | ScheduleState, optimize: bool = True, target: str = "cpu") -> LoopNest:
    """The loop nest of a schedule: as lowered, or (default) after all passes.
    The GPU adds shared-memory staging and has no vector passes."""
    _check_target(target)
    state = _state(schedule)
    k = lower(state)
    if target == "cuda":
        k = stage_shared(k, state)
    k = simplify_kernel(flatten_kernel(k))
    check_bounds(k)
    if not optimize:
        return k
    if target == "cuda":
        return hoist_indices(simplify_kernel(promote_registers(unroll_kernel(k))))
    return hoist_indices(simplify_kernel(promote_registers(combine_stores(unroll_kernel(
        chunk_stores(vectorize_kernel(insert_prefetches(k, state))))))))


def source(schedule: Schedule | ScheduleState, target: str = "cpu") -> str:
    """The Python source Numba compiles for this schedule."""
    _check_target(target)
    state = _state(schedule)
    if target == "cuda":
        from convtune.codegen.cuda_build import cuda_source

        return cuda_source(state)
    _check_cpu_schedule(state)
    return _cpu_source(state, lower_schedule(state), bounds_checked())


def bounds_checked() -> bool:
    """``CONVTUNE_CHECK_BOUNDS`` set: kernels check every access (a build of its own)."""
    return os.environ.get("CONVTUNE_CHECK_BOUNDS", "") not in ("", "0")


def _cpu_source(state: ScheduleState, nest: LoopNest, check: bool) -> str:
    header = [
        "convtune generated kernel (numba CPU); do not edit",
        f"workload: {state.compute.workload.key}",
        *(f"  {t}" for t in state.trace),
        f"codegen {CODEGEN_VERSION}",
    ]
    if check:
        header.append("bounds-checked build (CONVTUNE_CHECK_BOUNDS): every access raises IndexError if out of range")
    return render(nest, header, check_bounds=check)


def build(schedule: Schedule | ScheduleState, target: str = "cpu") -> CompiledKernel:
    """Compile a schedule into a callable kernel (from the disk cache when an
    earlier process compiled the same source)."""
    _check_target(target)
    state = _state(schedule)
    if target == "cuda":
        from convtune.codegen.cuda_build import build_cuda

        return build_cuda(state)  # type: ignore[return-value]
    _check_cpu_schedule(state)
    check = bounds_checked()

    def make() -> tuple[LoopNest, str]:
        nest = lower_schedule(state)
        return nest, _cpu_source(state, nest, check)

    nest, src = lowered(state, check, make)
    compiled = compile_source(src)
    return CompiledKernel(state, nest, src, compiled)


def is_built(schedule: Schedule | ScheduleState) -> bool:
    """Whether ``build`` of this CPU schedule would only load from the disk
    caches (lowered nest and machine code), compiling nothing."""
    state = _state(schedule)
    value = cached_lowering(state, bounds_checked())
    return value is not None and machine_code_cached(value[1])


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"target: {target!r} is not supported (targets: {', '.join(TARGETS)})")


def _check_cpu_schedule(state: ScheduleState) -> None:
    if state.gpu_bound() or state.shared_reads:
        raise ValueError("target: this schedule binds GPU blocks and threads; build it with target='cuda'")


