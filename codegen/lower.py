"""Lowering: a schedule state becomes a loop-nest ``Kernel``.

The kernel has up to four stages, in order:

1. pack (with ``pack_data``): copy the input into zero-padded NCHW[x]c scratch;
2. init (only when a reduction loop encloses a spatial loop and no tile is
   cached): zero the output;
3. compute: the scheduled loops. With ``cache_write`` (or implicitly when all
   reduction loops are innermost) each tile is accumulated in a local buffer
   and written once with the epilogue; otherwise it accumulates in ``out``;
4. finalize (only in the uncached case, when there is an epilogue).

Guards: a split that does not divide its axis runs past the axis's end. Those
iterations are masked by guards, except where packing makes them harmless:
packed buffers are sized to cover the whole loop domain and zero outside the
logical tensor, so reduction overhang adds 0 and spatial overhang only fills
accumulator lanes that are never written back.
"""
from __future__ import annotations

from codegen.passes.substitute import substitute_stmt
from ir.compute import REDUCE, SPATIAL
from ir.expr import Cmp, Const, Expr, Load, Select, Var, conj, fconst
from ir.loopnest import Allocate, Buffer, For, IfThen, Kernel, LoopKind, Stmt, Store, seq
from ir.simplify import Ranges, bounds, simplify, simplify_cond
from schedules.layout import (
    im2col_index,
    im2col_shape,
    packed_data_index,
    packed_data_shape,
    packed_weight_index,
    packed_weight_shape,
)
from schedules.state import ScheduleState


class LoweringError(ValueError):
    pass


def _guard(cond: Expr | None, body: Stmt) -> Stmt:
    return body if cond is None else IfThen(cond, body)


def _cover(e: Expr, ranges: Ranges, what: str) -> int:
    """One past the largest value ``e`` takes over the loop domain."""
    b = bounds(simplify(e, ranges), ranges)
    if b is None or b[0] < 0:
        raise LoweringError(f"cannot bound {what} index {e} over the loop domain")
    return b[1] + 1


def _elementwise(shape: tuple[int, ...], names: tuple[str, ...], body: Stmt) -> Stmt:
    """A loop nest over ``shape`` with the leading dims fused into one parallel
    loop (enough parallelism even when the batch is 1)."""
    lead = max(1, len(shape) - 2)
    fused = "_".join(names[:lead])
    total = 1
    for d in shape[:lead]:
        total *= d
    decomposed: dict[str, Expr] = {}
    rest = Var(fused)
    for i in reversed(range(lead)):
        decomposed[names[i]] = rest % shape[i] if i else rest
        rest = rest // shape[i]
    inner: Stmt = substitute_stmt(body, decomposed)
    for name, extent in reversed(list(zip(names[lead:], shape[lead:]))):
        inner = For(name, extent, LoopKind.SERIAL, inner)
    return For(fused, total, LoopKind.PARALLEL, inner)


def lower(state: ScheduleState) -> Kernel:
    cd = state.compute
    wl = cd.workload
    leaves = state.leaf_axes()
    ranges: Ranges = {a.name: (0, a.extent - 1) for a in leaves}
    roots = state.root_exprs()
    ax = {a.name: simplify(roots[a.name], ranges) for a in cd.axes}
    overhang = [(kind, simplify_cond(cond, ranges)) for kind, cond in state.overhang()]

    params: list[Buffer] = [cd.data]
    scratch: list[Buffer] = []
    stages: list[Stmt] = []

    coords = cd.data_coords(ax)
    packing = state.data_packing
    if packing is not None and packing.im2col:
        n, ch = coords[0], coords[1]
        pq = ax["p"] * wl.Q + ax["q"]
        shape = im2col_shape(
            packing, wl.N, max(wl.C, _cover(ch, ranges, "input channel")), max(wl.R, _cover(ax["r"], ranges, "kernel row")),
            max(wl.S, _cover(ax["s"], ranges, "kernel column")), max(wl.P * wl.Q, _cover(pq, ranges, "output pixel")))
        packed = Buffer("data_packed", shape)
        scratch.append(packed)
        data_read: Expr = Load(packed.name, im2col_index(packing, n, ch, ax["r"], ax["s"], pq))
        stages.append(_im2col_stage(state, packed))
    elif packing is not None:
        n, ch, h, w = coords
        h, w = h + wl.padding[0], w + wl.padding[1]
        shape = packed_data_shape(
            state.data_packing, wl.N,
            max(wl.C, _cover(ch, ranges, "input channel")),
            max(wl.H + wl.padding[0] + wl.padding[2], _cover(h, ranges, "input row")),
            max(wl.W + wl.padding[1] + wl.padding[3], _cover(w, ranges, "input column")))
        packed = Buffer("data_packed", shape)
        scratch.append(packed)
        data_read = Load(packed.name, packed_data_index(packing, n, ch, h, w))
        stages.append(_pack_stage(state, packed))
    else:
        data_read = Select(cd.in_input(coords), Load("data", coords), fconst(0.0))

    wc = cd.weight_coords(ax)
    if state.weight_packing is not None:
        wp = state.weight_packing
        shape = packed_weight_shape(wp, *(
            max(full, _cover(e, ranges, what)) for e, full, what in zip(
                wc, wl.weight_shape, ("output channel", "input channel", "kernel row", "kernel column"))))
        params.append(Buffer("weight", shape))
        weight_read: Expr = Load("weight", packed_weight_index(wp, *wc))
    else:
        params.append(cd.weight)
        weight_read = Load("weight", wc)
    for extra in (cd.bias, cd.residual):
        if extra is not None:
            params.append(extra)
    params.append(cd.out)

    prod = data_read * weight_read
    out_idx = (ax["n"], ax["k"], ax["p"], ax["q"])
    spatial_guard = conj(*(c for kind, c in overhang if kind == SPATIAL))
    all_guard = conj(*(c for _, c in overhang))
    absorbed = state.data_packing is not None and state.weight_packing is not None
    order = list(state.leaves)
    kinds = {a.name: state.annotation(a.name) for a in leaves}

    def nest(axes: list[str], body: Stmt) -> Stmt:
        for name in reversed(axes):
            body = For(name, state.axis(name).extent, kinds[name], body)
        return body

    cache_at = state.cache_at or _implicit_cache_point(state)
    if cache_at is not None:
        at = order.index(cache_at)
        inner = order[at + 1:]
        tile = [n for n in inner if state.axis(n).kind == SPATIAL]
        acc = Buffer("acc", tuple(state.axis(n).extent for n in tile), scope="local")
        tile_idx = tuple(Var(n) for n in tile)
        update = Store("acc", tile_idx, Load("acc", tile_idx) + prod)
        body = seq(
            nest(tile, Store("acc", tile_idx, fconst(0.0))),
            nest(inner, _guard(None if absorbed else all_guard, update)),
            nest(tile, _guard(spatial_guard, Store("out", out_idx, cd.finalize(Load("acc", tile_idx), ax)))),
        )
        stages.append(nest(order[:at + 1], Allocate(acc, body)))
    else:
        names = ("n", "k", "p", "q")
        logical = {n: Var(n) for n in names}
        stages.append(_elementwise(wl.out_shape, names, Store("out", tuple(logical.values()), fconst(0.0))))
        update = Store("out", out_idx, Load("out", out_idx) + prod)
        stages.append(nest(order, _guard(all_guard, update)))
        if wl.bias or wl.residual or wl.activation is not None:
            final = cd.finalize(Load("out", tuple(logical.values())), logical)
            stages.append(_elementwise(wl.out_shape, names, Store("out", tuple(logical.values()), final)))

    return Kernel("conv2d", tuple(params + scratch), seq(*stages), notes=state.trace)


def _implicit_cache_point(state: ScheduleState) -> str | None:
    """The innermost spatial loop, when every reduction loop is inside it: the
    accumulator is then a scalar (or vector) register."""
    order = state.leaf_axes()
    last_spatial = max(i for i, a in enumerate(order) if a.kind == SPATIAL)
    first_reduce = min((i for i, a in enumerate(order) if a.kind == REDUCE), default=len(order))
    return order[last_spatial].name if last_spatial < first_reduce else None


def _pack_stage(state: ScheduleState, packed: Buffer) -> Stmt:
    """data_packed[n, cb, h, w, ci] = data[n, cb*B + ci, h - pt, w - pl], zero outside."""
    wl = state.compute.workload
    block = state.data_packing.block  # type: ignore[union-attr]
    n, cb, h, w, ci = (Var(x) for x in ("n", "cb", "h", "w", "ci"))
    ch, y, x = cb * block + ci, h - wl.padding[0], w - wl.padding[1]
    inside = conj(Cmp("<", ch, Const(wl.C)), Cmp(">=", y, Const(0)), Cmp("<", y, Const(wl.H)),
                  Cmp(">=", x, Const(0)), Cmp("<", x, Const(wl.W)))
    value = Select(inside, Load("data", (n, ch, y, x)), fconst(0.0))  # type: ignore[arg-type]
    return _elementwise(packed.shape, ("n", "cb", "h", "w", "ci"), Store(packed.name, (n, cb, h, w, ci), value))


def _im2col_stage(state: ScheduleState, packed: Buffer) -> Stmt:
    """data_packed[n, cb, r, s, pq, ci] = input pixel read by output pixel pq at tap (r, s)."""
    wl = state.compute.workload
    block = state.data_packing.block  # type: ignore[union-attr]
    n, cb, r, s, pq, ci = (Var(x) for x in ("n", "cb", "r", "s", "pq", "ci"))
    ch = cb * block + ci
    y = (pq // wl.Q) * wl.stride[0] + r * wl.dilation[0] - wl.padding[0]
    x = (pq % wl.Q) * wl.stride[1] + s * wl.dilation[1] - wl.padding[1]
    inside = conj(Cmp("<", ch, Const(wl.C)), Cmp("<", r, Const(wl.R)), Cmp("<", s, Const(wl.S)),
                  Cmp("<", pq, Const(wl.P * wl.Q)), Cmp(">=", y, Const(0)), Cmp("<", y, Const(wl.H)),
                  Cmp(">=", x, Const(0)), Cmp("<", x, Const(wl.W)))
    value = Select(inside, Load("data", (n, ch, y, x)), fconst(0.0))  # type: ignore[arg-type]
    return _elementwise(packed.shape, ("n", "cb", "r", "s", "pq", "ci"), Store(packed.name, (n, cb, r, s, pq, ci), value))

