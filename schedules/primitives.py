"""Schedule primitives: each takes a state and returns a new, checked state.

Errors are ``ScheduleError`` messages that start with the primitive's name, so
a user who chains ten primitives knows which one was illegal and why.
"""
from __future__ import annotations

from dataclasses import replace

from convtune.ir.compute import REDUCE, SPATIAL
from convtune.ir.loopnest import LoopKind
from convtune.schedules.state import (
    BlockedLayout,
    DataPacking,
    Fuse,
    IterVar,
    ScheduleError,
    ScheduleState,
    SoftwarePrefetch,
    Split,
    WeightPacking,
)

MAX_VECTOR_LANES = 64


def _leaf(state: ScheduleState, prim: str, axis: str) -> IterVar:
    """The named axis, which must still be a loop of the schedule."""
    if not isinstance(axis, str):
        raise ScheduleError(f"{prim}: expected an axis, got {axis!r}")
    if axis in state.leaves:
        return state.axis(axis)
    for rel in state.relations:
        if isinstance(rel, Split) and rel.parent == axis:
            raise ScheduleError(
                f"{prim}: axis '{axis}' no longer exists: it was split into '{rel.outer}' and '{rel.inner}'")
        if isinstance(rel, Fuse) and axis in (rel.outer, rel.inner):
            raise ScheduleError(f"{prim}: axis '{axis}' no longer exists: it was fused into '{rel.fused}'")
    raise ScheduleError(f"{prim}: '{axis}' is not an axis of this schedule (axes: {', '.join(state.leaves)})")


def _positive_int(prim: str, name: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ScheduleError(f"{prim}: {name} must be a positive int, got {v!r}")
    return v


def _not_annotated(state: ScheduleState, prim: str, axis: str) -> None:
    kind = state.annotation(axis)
    if kind != LoopKind.SERIAL:
        raise ScheduleError(f"{prim}: axis '{axis}' is already {kind.value}; {prim} it before annotating it")


def check(state: ScheduleState, prim: str) -> ScheduleState:
    """Invariants every state must satisfy after any primitive."""
    order = list(state.leaves)
    vec = state.annotated(LoopKind.VECTORIZED)
    if vec and order[-1] != vec[0]:
        raise ScheduleError(
            f"{prim}: vectorized axis '{vec[0]}' must be the innermost loop, but '{order[-1]}' is inside it")
    par = state.annotated(LoopKind.PARALLEL)
    if par:
        outer = [a.name for a in state.leaf_axes()[:order.index(par[0])] if a.extent > 1]
        if outer:
            raise ScheduleError(
                f"{prim}: parallel axis '{par[0]}' must be the outermost loop, but '{outer[0]}' is outside it; "
                "fuse the outer loops into it")
    if state.cache_at is not None:
        at = order.index(state.cache_at)
        for a in state.reduce_leaves():
            # a one-iteration loop resets nothing; a block-bound one sums its own part (split-K)
            if order.index(a.name) < at and a.extent > 1 and not state.annotation(a.name).is_gpu:
                raise ScheduleError(
                    f"{prim}: reduction axis '{a.name}' would be outside the cache_write attach point "
                    f"'{state.cache_at}'; the accumulator would be reset inside the reduction")
        for p in par + state.gpu_bound():
            if order.index(p) > at:
                raise ScheduleError(
                    f"{prim}: {state.annotation(p).value} axis '{p}' is inside the cache_write attach point "
                    f"'{state.cache_at}'; threads would share one accumulator tile")
    bound = state.gpu_bound()
    if bound:
        outer = [a.name for a in state.leaf_axes()[:order.index(bound[-1])] if a.extent > 1 and a.name not in bound]
        if outer:
            raise ScheduleError(
                f"{prim}: '{bound[-1]}' is bound to {state.annotation(bound[-1]).value}, but loop '{outer[0]}' is "
                "outside it; block and thread axes must be the outermost loops")
    for read in state.shared_reads:
        if read.at not in order:
            raise ScheduleError(f"{prim}: '{read.at}' is the cache_read attach point of {read.buffer}; "
                                "split or fuse it before cache_read")
    return state


def split(state: ScheduleState, axis: str, factor: int, prim: str = "split") -> tuple[ScheduleState, str, str]:
    """Split ``axis`` into (outer, inner) with inner extent ``factor``. A factor
    that does not divide the extent is allowed; the overhang is guarded.
    Errors name ``prim``, the primitive the user called."""
    a = _leaf(state, prim, axis)
    _positive_int(prim, "factor", factor)
    _not_annotated(state, prim, axis)
    if factor > a.extent:
        raise ScheduleError(f"{prim}: factor {factor} exceeds the extent {a.extent} of '{axis}'")
    outer = IterVar(state.fresh_name(f"{axis}_o"), -(-a.extent // factor), a.kind)
    inner = IterVar(state.fresh_name(f"{axis}_i"), factor, a.kind)
    i = state.leaves.index(axis)
    leaves = state.leaves[:i] + (outer.name, inner.name) + state.leaves[i + 1:]
    cache_at = inner.name if state.cache_at == axis else state.cache_at
    new = state.with_(
        f"split({axis}, {factor}) -> {outer.name}, {inner.name}",
        axes=state.axes + (outer, inner), leaves=leaves,
        relations=state.relations + (Split(axis, outer.name, inner.name, factor),), cache_at=cache_at)
    return check(new, prim), outer.name, inner.name


def fuse(state: ScheduleState, outer: str, inner: str) -> tuple[ScheduleState, str]:
    """Fuse two adjacent loops of the same kind into one (outer first)."""
    a, b = _leaf(state, "fuse", outer), _leaf(state, "fuse", inner)
    if a.kind != b.kind:
        raise ScheduleError(f"fuse: cannot fuse {a.kind} axis '{outer}' with {b.kind} axis '{inner}'")
    i = state.leaves.index(outer)
    if i + 1 >= len(state.leaves) or state.leaves[i + 1] != inner:
        raise ScheduleError(
            f"fuse: '{outer}' and '{inner}' are not adjacent loops with '{outer}' outside; reorder first")
    for n in (outer, inner):
        _not_annotated(state, "fuse", n)
        if state.cache_at == n:
            raise ScheduleError(f"fuse: '{n}' is the cache_write attach point; fuse before cache_write")
    fused = IterVar(state.fresh_name(f"{outer}_{inner}"), a.extent * b.extent, a.kind)
    leaves = state.leaves[:i] + (fused.name,) + state.leaves[i + 2:]
    new = state.with_(f"fuse({outer}, {inner}) -> {fused.name}", axes=state.axes + (fused,), leaves=leaves,
                      relations=state.relations + (Fuse(outer, inner, fused.name),))
    return check(new, "fuse"), fused.name


def reorder(state: ScheduleState, *axes: str, prim: str = "reorder") -> ScheduleState:
    """Put the given loops in this order, in the positions they occupy now.
    Errors name ``prim``, the primitive the user called."""
    names = [_leaf(state, prim, a).name for a in axes]
    if len(set(names)) != len(names):
        raise ScheduleError(f"{prim}: an axis is listed twice in ({', '.join(names)})")
    slots = sorted(state.leaves.index(n) for n in names)
    leaves = list(state.leaves)
    for slot, n in zip(slots, names):
        leaves[slot] = n
    new = state.with_(f"reorder({', '.join(names)})", leaves=tuple(leaves))
    return check(new, prim)


def tile(state: ScheduleState, x: str, y: str, x_factor: int,
         y_factor: int) -> tuple[ScheduleState, tuple[str, str, str, str]]:
    """Split ``x`` and ``y`` and order the four loops (x_o, y_o, x_i, y_i) in
    the positions the split loops occupy. One primitive, not three: a failure
    in any step leaves no partial split behind, and the error names ``tile``."""
    _leaf(state, "tile", x)  # checked here so errors list the caller's axes, not a half-tiled state's
    _leaf(state, "tile", y)
    if x == y:
        raise ScheduleError(f"tile: the two axes must differ, got '{x}' twice")
    tiled, xo, xi = split(state, x, x_factor, prim="tile")
    tiled, yo, yi = split(tiled, y, y_factor, prim="tile")
    tiled = reorder(tiled, xo, yo, xi, yi, prim="tile")
    record = f"tile({x}, {y}, {x_factor}, {y_factor}) -> {xo}, {yo}, {xi}, {yi}"
    return replace(tiled, trace=state.trace + (record,)), (xo, yo, xi, yi)


def _annotate(state: ScheduleState, prim: str, axis: str, kind: LoopKind) -> ScheduleState:
    a = _leaf(state, prim, axis)
    _not_annotated(state, prim, axis)
    if kind in (LoopKind.VECTORIZED, LoopKind.PARALLEL):
        if a.kind == REDUCE:
            raise ScheduleError(f"{prim}: '{axis}' is a reduction axis; only spatial axes can be {kind.value}")
        if state.annotated(kind):
            raise ScheduleError(f"{prim}: '{state.annotated(kind)[0]}' is already {kind.value}; only one loop can be")
    if kind == LoopKind.VECTORIZED and a.extent > MAX_VECTOR_LANES:
        raise ScheduleError(
            f"vectorize: '{axis}' has extent {a.extent}; split it to at most {MAX_VECTOR_LANES} lanes first")
    new = state.with_(f"{prim}({axis})", annotations=state.annotations + ((axis, kind),))
    return check(new, prim)


def unroll(state: ScheduleState, axis: str) -> ScheduleState:
    """Replicate the loop body ``extent`` times in the generated source."""
    return _annotate(state, "unroll", axis, LoopKind.UNROLLED)


def vectorize(state: ScheduleState, axis: str) -> ScheduleState:
    """Compute the innermost loop as one SIMD vector of ``extent`` lanes."""
    return _annotate(state, "vectorize", axis, LoopKind.VECTORIZED)


def parallel(state: ScheduleState, axis: str) -> ScheduleState:
    """Run the loop's iterations on all threads (Numba ``prange``)."""
    return _annotate(state, "parallel", axis, LoopKind.PARALLEL)


def cache_write(state: ScheduleState, at: str) -> ScheduleState:
    """TVM's ``cache_write`` + ``compute_at``: accumulate the output tile formed
    by the spatial loops inside ``at`` in a local buffer (registers once its
    loops are unrolled or vectorized) and write it to the output once, with
    the epilogue, after the reduction loops finish."""
    a = _leaf(state, "cache_write", at)
    if state.cache_at is not None:
        raise ScheduleError(f"cache_write: the output is already cached at '{state.cache_at}'")
    if a.kind != SPATIAL:
        raise ScheduleError(f"cache_write: attach point '{at}' is a reduction axis; attach at a spatial axis")
    return check(state.with_(f"cache_write(at={at})", cache_at=at), "cache_write")


def prefetch(state: ScheduleState, buffer: str, at: str, ahead: int = 1) -> ScheduleState:
    """Software prefetch (TVM's ``prefetch``): at the top of each iteration of
    the reduction loop ``at``, fetch what that iteration reads of ``buffer`` in
    the parallel chunk ``ahead`` chunks on. For a stream that runs from
    memory, as a model's weights do once they outgrow the cache: the chunks
    sharing a weight block read it from memory in the first and from cache
    after, and prefetching spreads the memory traffic over all of them.
    ``ahead`` is the number of consecutive chunks that read the same block;
    each fetches its share of the next block's lines."""
    a = _leaf(state, "prefetch", at)
    if a.kind != REDUCE:
        raise ScheduleError(f"prefetch: '{at}' is a spatial axis; prefetch at a reduction loop")
    if buffer not in ("data", "weight"):
        raise ScheduleError(f"prefetch: buffer must be 'data' or 'weight', got {buffer!r}")
    _positive_int("prefetch", "ahead", ahead)
    if any(p.buffer == buffer for p in state.prefetches):
        raise ScheduleError(f"prefetch: '{buffer}' is already prefetched")
    record = f"prefetch({buffer}, at={at}, ahead={ahead})"
    return state.with_(record, prefetches=state.prefetches + (SoftwarePrefetch(buffer, at, ahead),))


def pack_data(state: ScheduleState, block: int, im2col: bool = False) -> ScheduleState:
    """Copy the input, per call, into zero-padded NCHW[block]c (or the im2col
    layout): padding and channel tail are materialised so the compute loop
    needs no guards."""
    _positive_int("pack_data", "block", block)
    if state.data_packing is not None:
        raise ScheduleError("pack_data: the input is already packed")
    if not isinstance(im2col, bool):
        raise ScheduleError(f"pack_data: im2col must be a bool, got {im2col!r}")
    record = f"pack_data(block={block}{', im2col=True' if im2col else ''})"
    return state.with_(record, data_packing=DataPacking(block, im2col))


def pack_weights(state: ScheduleState, in_block: int, out_block: int) -> ScheduleState:
    """Pack the weights once, when the kernel is prepared, to
    OIHW[in_block]i[out_block]o, zero-padded to whole blocks."""
    _positive_int("pack_weights", "in_block", in_block)
    _positive_int("pack_weights", "out_block", out_block)
    if state.weight_packing is not None:
        raise ScheduleError("pack_weights: the weights are already packed")
    return state.with_(f"pack_weights(in_block={in_block}, out_block={out_block})",
                       weight_packing=WeightPacking(in_block, out_block))


def io_layout(state: ScheduleState, data: BlockedLayout | None = None, out: BlockedLayout | None = None,
              residual: BlockedLayout | None = None) -> ScheduleState:
    """Take the input, write the output, or read the residual in a blocked
    layout instead of NCHW, so a chain of convs keeps its activations in
    NCHW[x]c. An input already in the layout the schedule packs to (same
    block, a border covering the padding and the tiles' overreach) is read
    in place: the packing stage disappears; any other blocked input is
    repacked inside the kernel. A blocked output is written where the
    layout says; its border is left untouched (zero)."""
    wl = state.compute.workload
    given = {"data": data, "out": out, "residual": residual}
    tensors = {"data": wl.data_shape, "out": wl.out_shape, "residual": wl.out_shape}
    for name, layout in given.items():
        if layout is None:
            continue
        if not isinstance(layout, BlockedLayout):
            raise ScheduleError(f"io_layout: {name} must be a BlockedLayout, got {layout!r}")
        if tuple(layout.tensor) != tuple(tensors[name]):
            raise ScheduleError(f"io_layout: {name} layout is for a {layout.tensor} tensor, the workload's {name} "
                                f"is {tensors[name]}")
        if state.io_layout(name) is not None:
            raise ScheduleError(f"io_layout: {name} already has a layout ({state.io_layout(name)})")
    if residual is not None and not wl.residual:
        raise ScheduleError("io_layout: this workload has no residual input")
    chosen = tuple((n, lay) for n, lay in given.items() if lay is not None)
    record = "io_layout(" + ", ".join(f"{n}={lay}" for n, lay in chosen) + ")"
    return state.with_(record, io_layouts=state.io_layouts + chosen)
