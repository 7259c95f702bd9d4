"""GPU schedule primitives and the device limits a GPU schedule must respect.

``bind`` turns a loop into a block or thread index (TVM's ``bind``; a
reduction loop bound to blocks splits the reduction, see ``split_k_axis``); binding
to ``vthread`` keeps the loop inside each thread, unrolled, so a split
[block, vthread, thread, inner] gives each thread a register tile whose
elements lie a whole thread-block apart (strided, coalesced accesses).
``cache_read`` stages the part of the input or the weights that one
iteration of a loop reads in shared memory: the block's threads load it
together, with a barrier before and after its use. ``check_limits`` refuses a
schedule that a device could not launch (threads, shared memory, registers)
before anything is compiled, naming the primitive and the limit.
"""
from __future__ import annotations

import math

from convtune.ir.compute import REDUCE
from convtune.ir.expr import Const, Expr, substitute
from convtune.ir.loopnest import LoopKind
from convtune.ir.simplify import bounds, simplify
from convtune.schedules.primitives import _leaf, _not_annotated, check
from convtune.schedules.state import ScheduleError, ScheduleState, SharedRead
from convtune.schedules.target import CudaTarget

TAGS: dict[str, LoopKind] = {
    "blockIdx.x": LoopKind.BLOCK_X, "blockIdx.y": LoopKind.BLOCK_Y, "blockIdx.z": LoopKind.BLOCK_Z,
    "threadIdx.x": LoopKind.THREAD_X, "threadIdx.y": LoopKind.THREAD_Y, "threadIdx.z": LoopKind.THREAD_Z,
    "vthread": LoopKind.UNROLLED,
}
BLOCKS = (LoopKind.BLOCK_X, LoopKind.BLOCK_Y, LoopKind.BLOCK_Z)
THREADS = (LoopKind.THREAD_X, LoopKind.THREAD_Y, LoopKind.THREAD_Z)
CACHED_BUFFERS = ("data", "weight")

REGISTER_OVERHEAD = 32
"""Registers a thread needs besides its accumulators (indices, addresses,
operands in flight): an estimate, so the register check errs on the safe side
of what the compiler allocates."""


def bind(state: ScheduleState, axis: str, tag: str) -> ScheduleState:
    """Bind a spatial loop to a block index, a thread index or a vthread."""
    a = _leaf(state, "bind", axis)
    if tag not in TAGS:
        raise ScheduleError(f"bind: tag {tag!r} is not one of {', '.join(TAGS)}")
    _not_annotated(state, "bind", axis)
    if a.kind == REDUCE and not tag.startswith("blockIdx"):
        raise ScheduleError(f"bind: '{axis}' is a reduction axis; it can only be split over blocks (blockIdx)")
    if a.kind == REDUCE and split_k_axis(state) is not None:
        raise ScheduleError(f"bind: reduction axis '{split_k_axis(state)}' is already split over blocks")
    if state.annotated(LoopKind.PARALLEL):
        raise ScheduleError(f"bind: '{state.annotated(LoopKind.PARALLEL)[0]}' is a parallel CPU loop; "
                            "a schedule is for the CPU or the GPU")
    kind = TAGS[tag]
    if kind.is_gpu and state.annotated(kind):
        raise ScheduleError(f"bind: '{state.annotated(kind)[0]}' is already bound to {tag}")
    return check(state.with_(f"bind({axis}, {tag})", annotations=state.annotations + ((axis, kind),)), "bind")


def split_k_axis(state: ScheduleState) -> str | None:
    """The reduction loop bound to a block index (split-K: each block sums
    its part of the reduction; a last stage adds the parts), if any."""
    return next((n for n in state.gpu_bound() if state.axis(n).kind == REDUCE), None)


def cache_read(state: ScheduleState, buffer: str, scope: str, at: str) -> ScheduleState:
    """Stage what one iteration of loop ``at`` reads of ``buffer`` in shared memory."""
    if buffer not in CACHED_BUFFERS:
        raise ScheduleError(f"cache_read: buffer {buffer!r} is not one of {', '.join(CACHED_BUFFERS)}")
    if scope != "shared":
        raise ScheduleError(f"cache_read: scope {scope!r} is not supported (only 'shared')")
    _leaf(state, "cache_read", at)
    packed = state.data_packing if buffer == "data" else state.weight_packing
    if packed is not None:
        raise ScheduleError(f"cache_read: {buffer} is packed; shared memory stages the logical layout")
    if any(r.buffer == buffer for r in state.shared_reads):
        raise ScheduleError(f"cache_read: {buffer} is already read through shared memory")
    bound = state.gpu_bound()
    if not bound:
        raise ScheduleError("cache_read: bind block and thread axes first (shared memory belongs to a block)")
    if state.leaves.index(at) <= state.leaves.index(bound[-1]):
        raise ScheduleError(f"cache_read: attach point '{at}' must be inside the bound axes (innermost: '{bound[-1]}')")
    new = state.with_(f"cache_read({buffer}, {scope}, at={at})",
                      shared_reads=state.shared_reads + (SharedRead(buffer, at),))
    footprint(new, buffer, at)  # refuses a region it cannot bound now, not at build time
    return check(new, "cache_read")


def _ranges(state: ScheduleState) -> dict[str, tuple[int, int]]:
    return {a.name: (0, a.extent - 1) for a in state.leaf_axes()}


def footprint(state: ScheduleState, buffer: str, at: str) -> tuple[tuple[Expr, ...], tuple[int, ...]]:
    """(first element, shape) of the box of ``buffer`` (logical coordinates,
    padding included) that one iteration of ``at`` reads across the block:
    the first element is a function of the loops outside ``at`` and the block
    indices; the shape holds for every block and iteration."""
    ranges = _ranges(state)
    roots = state.root_exprs()
    compute = state.compute
    ax = {a.name: simplify(roots[a.name], ranges) for a in compute.axes}
    coords = compute.data_coords(ax) if buffer == "data" else compute.weight_coords(ax)
    single = {a.name: Const(0) for a in state.leaf_axes() if a.extent == 1}  # lets (x + 0) // n fold
    coords = tuple(simplify(substitute(c, single), ranges) for c in coords)
    order = state.leaves
    free = set(order[order.index(at) + 1:]) | {n for n in state.gpu_bound() if state.annotation(n) in THREADS}
    zero = {v: Const(0) for v in free}
    base = tuple(simplify(substitute(c, zero), ranges) for c in coords)
    shape = []
    for c, b in zip(coords, base):
        span = bounds(simplify(c - b, ranges), ranges)
        if span is None or span[0] < 0:
            raise ScheduleError(f"cache_read: cannot bound the part of {buffer} read inside '{at}' ({c})")
        shape.append(span[1] + 1)
    return base, tuple(shape)


def launch_dims(state: ScheduleState) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(grid, block) dimensions (x, y, z) of the bound loops; 1 where unbound."""
    extent = {state.annotation(n): state.axis(n).extent for n in state.gpu_bound()}
    return tuple(extent.get(k, 1) for k in BLOCKS), tuple(extent.get(k, 1) for k in THREADS)  # type: ignore[return-value]


def accumulators(state: ScheduleState) -> int:
    """Output elements each thread accumulates: the spatial loops inside the
    cache_write attach point (one without cache_write)."""
    if state.cache_at is None:
        return 1
    inner = state.leaves[state.leaves.index(state.cache_at) + 1:]
    return math.prod(state.axis(n).extent for n in inner if state.axis(n).kind != REDUCE)


def shared_bytes(state: ScheduleState) -> int:
    return 4 * sum(math.prod(footprint(state, r.buffer, r.at)[1]) for r in state.shared_reads)


def check_limits(state: ScheduleState, target: CudaTarget) -> None:
    """ScheduleError, naming the primitive and the limit, for a schedule the
    device cannot run."""
    grid, block = launch_dims(state)
    threads = math.prod(block)
    if threads > target.max_threads_per_block:
        raise ScheduleError(f"bind: {threads} threads per block ({' x '.join(map(str, block))}) exceed the "
                            f"device's limit of {target.max_threads_per_block}")
    for tags, dims, limits in ((THREADS, block, target.max_block_dims), (BLOCKS, grid, target.max_grid_dims)):
        for kind, n, limit in zip(tags, dims, limits):
            if n > limit:
                raise ScheduleError(f"bind: {kind.value} has extent {n}, past the device's limit of {limit}")
    smem = shared_bytes(state)
    if smem > target.max_shared_memory_per_block:
        raise ScheduleError(f"cache_read: {smem} bytes of shared memory per block exceed the device's limit of "
                            f"{target.max_shared_memory_per_block}")
    reason = register_limit(target, threads, accumulators(state))
    if reason:
        raise ScheduleError(f"cache_write: {reason}")


def register_limit(target: CudaTarget, threads: int, accumulators: int) -> str | None:
    """Why ``threads`` threads of ``accumulators`` accumulators each do not
    fit the register file, or None (templates prune their spaces with it)."""
    regs = accumulators + REGISTER_OVERHEAD
    if regs > target.max_registers_per_thread:
        return f"about {regs} registers per thread exceed the device's limit of {target.max_registers_per_thread}"
    if regs * threads > target.registers_per_block:
        return f"{threads} threads x about {regs} registers exceed the {target.registers_per_block} registers of a block"
    return None
