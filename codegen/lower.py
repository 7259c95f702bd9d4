"""Lowering: a schedule state becomes a loop-nest ``Kernel``.

A conv kernel has up to four stages, in order:

1. pack (with ``pack_data``): copy the input into zero-padded scratch, NCHW[x]c
   or im2col;
2. init (only when a reduction loop encloses a spatial loop and no tile is
   cached): zero the output;
3. compute: the scheduled loops. With ``cache_write`` (or implicitly when all
   reduction loops are innermost) each tile is accumulated in a local buffer
   and written once with the epilogue; otherwise it accumulates in ``out``;
4. finalize (only in the uncached case, when there is an epilogue).
Winograd schedules add transform stages around their GEMM
(``codegen.lower_winograd``); Toeplitz schedules pad the input and reduce
over banded weight matrices (``codegen.lower_toeplitz``); indirect schedules
read a channel-last input through an indirection table (``codegen.lower_indirect``).

Guards: a split that does not divide its axis runs past the axis's end. Those
iterations are masked by guards, except where packing makes them harmless:
packed buffers are sized to cover the whole loop domain and zero outside the
logical tensor, so reduction overhang adds 0 and spatial overhang only fills
accumulator lanes that are never written back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from convtune.codegen.passes.substitute import substitute_stmt
from convtune.ir.compute import REDUCE, SPATIAL, ComputeDef
from convtune.ir.expr import Cmp, Const, Expr, Load, Select, Var, conj, fconst
from convtune.ir.indirect import IndirectCompute
from convtune.ir.loopnest import Allocate, Buffer, For, IfThen, Kernel, LoopKind, Stmt, Store, seq
from convtune.ir.simplify import Ranges, bounds, simplify, simplify_cond
from convtune.ir.toeplitz import ToeplitzCompute
from convtune.ir.winograd import WinogradCompute
from convtune.ir.workload import Conv2D
from convtune.schedules.layout import (
    im2col_index,
    im2col_shape,
    packed_data_index,
    packed_data_shape,
    packed_weight_index,
    packed_weight_shape,
)
from convtune.schedules.gpu import split_k_axis
from convtune.schedules.state import BlockedLayout, ScheduleState

Finalize = Callable[[Expr, tuple[Expr, ...]], Expr]
"""(accumulated value, target index) -> the value to store."""


class LoweringError(ValueError):
    pass


def _guard(cond: Expr | None, body: Stmt) -> Stmt:
    return body if cond is None else IfThen(cond, body)


@dataclass(frozen=True)
class Domain:
    """What lowering knows about a schedule's loops: the range of every loop
    variable, every compute axis as an expression over them, and the guards
    of non-divisible splits."""

    state: ScheduleState
    ranges: Ranges
    ax: dict[str, Expr]
    overhang: tuple[tuple[frozenset[str], str, Expr], ...]

    @staticmethod
    def of(state: ScheduleState) -> Domain:
        ranges = {a.name: (0, a.extent - 1) for a in state.leaf_axes()}
        roots = state.root_exprs()
        return Domain(state, ranges, {a.name: simplify(roots[a.name], ranges) for a in state.compute.axes},
                      tuple((axes, kind, simplify_cond(cond, ranges)) for axes, kind, cond in state.overhang()))

    def cover(self, e: Expr, what: str) -> int:
        """One past the largest value ``e`` takes over the loop domain."""
        b = bounds(simplify(e, self.ranges), self.ranges)
        if b is None or b[0] < 0:
            raise LoweringError(f"cannot bound {what} index {e} over the loop domain")
        return b[1] + 1

    def guard(self, kinds: tuple[str, ...]) -> Expr | None:
        return conj(*(c for _, kind, c in self.overhang if kind in kinds))

    def overruns(self, axes: set[str]) -> bool:
        """Whether any of these compute axes runs past its extent somewhere."""
        return any(roots & axes for roots, _, _ in self.overhang)


def reduction_stages(d: Domain, prod: Expr, target: Buffer, target_idx: tuple[Expr, ...], finalize: Finalize,
                     reads_safe: bool) -> list[Stmt]:
    """The scheduled loops computing ``target[target_idx] = finalize(sum(prod))``.

    With ``cache_write`` (or implicitly when every reduction loop is inside
    every spatial loop) each tile accumulates in a local buffer, written once;
    otherwise ``target`` is zeroed, accumulated into, then finalized.
    ``reads_safe``: every read of ``prod`` is in bounds over the whole domain
    and past the tensors' ends reads zero (or multiplies a zero), so overhang
    iterations need no guard except where they write ``target`` (and not even
    there when ``target`` covers the whole domain, as scratch buffers do).
    No zeros make safe an overhang that lands inside the tensor (a nested
    split of a reduction axis), whatever the caller's layout: that one is
    always guarded.
    """
    state = d.state
    reads_safe = reads_safe and not state.reduction_overhang_aliases()
    order = list(state.leaves)
    kinds = {a.name: state.annotation(a.name) for a in state.leaf_axes()}
    covers = all(d.cover(i, f"{target.name} index") <= n for i, n in zip(target_idx, target.shape))
    write_guard = None if covers else d.guard((SPATIAL,))
    all_guard = d.guard((SPATIAL, REDUCE))

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
            nest(inner, _guard(None if reads_safe else all_guard, update)),
            nest(tile, _guard(write_guard,
                              Store(target.name, target_idx, finalize(Load("acc", tile_idx), target_idx)))),
        )
        return [nest(order[:at + 1], Allocate(acc, body))]
    names = tuple(f"i{n}" for n in range(len(target.shape)))
    idx = tuple(Var(n) for n in names)
    stages = [elementwise(target.shape, names, Store(target.name, idx, fconst(0.0))),
              nest(order, _guard(all_guard, Store(target.name, target_idx, Load(target.name, target_idx) + prod)))]
    final = finalize(Load(target.name, idx), idx)
    if final != Load(target.name, idx):
        stages.append(elementwise(target.shape, names, Store(target.name, idx, final)))
    return stages


def elementwise(shape: tuple[int, ...], names: tuple[str, ...], body: Stmt, fused_dims: int | None = None,
                kinds: tuple[LoopKind, ...] = ()) -> Stmt:
    """A loop nest over ``shape`` with the leading ``fused_dims`` dims (default:
    all but the last two) fused into one parallel loop: enough parallelism
    even when the batch is 1. ``kinds`` gives the kinds of the loops after
    the fused one (default: serial)."""
    lead = fused_dims or max(1, len(shape) - 2)
    fused = "_".join(names[:lead])
    total = 1
    for dim in shape[:lead]:
        total *= dim
    decomposed: dict[str, Expr] = {}
    rest: Expr = Var(fused)
    for i in reversed(range(lead)):
        decomposed[names[i]] = rest % shape[i] if i else rest
        rest = rest // shape[i]
    inner: Stmt = substitute_stmt(body, decomposed)
    loops = list(zip(names[lead:], shape[lead:]))
    kinds = kinds or (LoopKind.SERIAL,) * len(loops)
    for (name, extent), kind in reversed(list(zip(loops, kinds))):
        inner = For(name, extent, kind, inner)
    return For(fused, total, LoopKind.PARALLEL, inner)


PACK_LANES = 16
"""Vector width of the packing stages (one AVX-512 vector, two AVX2 ones).
Packed rows are padded to a multiple of it."""


def pack_width(columns: int) -> int:
    """Columns of a packed row: ``columns`` rounded up to whole vectors."""
    return -(-columns // PACK_LANES) * PACK_LANES


def blocked_copy(shape: tuple[int, ...], names: tuple[str, ...], body: Stmt) -> Stmt:
    """The loops filling a blocked buffer ``shape = (..., X, B)`` (block
    innermost) from sources contiguous along X: leading dims fused in
    parallel, then whole vectors of X, the B block unrolled, and X's lanes
    vectorized. Each vector step is then B contiguous-source loads and B
    stores of stride B, which ``codegen.passes.combine_stores`` turns into a
    register transpose and contiguous stores. ``X`` must be a multiple of
    ``PACK_LANES`` (see ``pack_width``)."""
    *lead, x, block = names
    xo, xi = f"{x}_o", f"{x}_i"
    vectors, rest = divmod(shape[-2], PACK_LANES)
    if rest:
        raise LoweringError(f"blocked copy: {shape[-2]} {x} columns are not whole vectors of {PACK_LANES}")
    body = substitute_stmt(body, {x: Var(xo) * PACK_LANES + Var(xi)})
    return elementwise((*shape[:-2], vectors, shape[-1], PACK_LANES), (*lead, xo, block, xi), body,
                       fused_dims=len(lead), kinds=(LoopKind.SERIAL, LoopKind.UNROLLED, LoopKind.VECTORIZED))


def lower(state: ScheduleState) -> Kernel:
    from convtune.codegen.passes.relayout import relayout_kernel

    if isinstance(state.compute, IndirectCompute):
        from convtune.codegen.lower_indirect import lower_indirect

        kernel = lower_indirect(state)
    elif isinstance(state.compute, WinogradCompute):
        from convtune.codegen.lower_winograd import lower_winograd

        kernel = lower_winograd(state)
    elif isinstance(state.compute, ToeplitzCompute):
        from convtune.codegen.lower_toeplitz import lower_toeplitz

        kernel = lower_toeplitz(state)
    else:
        kernel = _lower_conv(state)
    return relayout_kernel(kernel, dict(state.io_layouts))


def packed_input(state: ScheduleState) -> Buffer | None:
    """The zero-padded NCHW[x]c scratch a schedule packs its input into (row
    and column 0 are the first padding row and column), None when it packs
    to im2col or not at all."""
    if isinstance(state.compute, WinogradCompute):
        from convtune.codegen.lower_winograd import winograd_packed_input

        return winograd_packed_input(state, Domain.of(state))
    packing = state.data_packing
    if packing is None or packing.im2col:
        return None
    wl = state.compute.workload
    d = Domain.of(state)
    n, ch, h, w = state.compute.data_coords(d.ax)
    h, w = h + wl.padding[0], w + wl.padding[1]
    return Buffer("data_packed", packed_data_shape(
        packing, max(wl.N, d.cover(n, "batch")), max(wl.C, d.cover(ch, "input channel")),
        max(wl.H + wl.padding[0] + wl.padding[2], d.cover(h, "input row")),
        pack_width(max(wl.W + wl.padding[1] + wl.padding[3], d.cover(w, "input column")))))


def pointwise_layout(state: ScheduleState, d: Domain) -> BlockedLayout | None:
    """The blocked input an im2col schedule of a 1x1, stride-1, unpadded conv
    reads in place, or None for any other. Its im2col buffer (channel blocks
    of pixels in row order) is then the NCHW[cb]c tensor itself, so the conv
    before it writes that layout and the copy disappears; rows below the
    tensor (zero) hold what a pixel tile reads past the last pixel."""
    wl = state.compute.workload
    packing = state.data_packing
    if (packing is None or not packing.im2col or (wl.R, wl.S) != (1, 1) or wl.stride != (1, 1)
            or any(wl.padding)):
        return None
    n, ch = state.compute.data_coords(d.ax)[:2]
    blocks = -(-wl.C // packing.block)
    if d.cover(n, "batch") > wl.N or d.cover(ch, "input channel") > blocks * packing.block:
        return None
    pixels = max(wl.P * wl.Q, d.cover(d.ax["p"] * wl.Q + d.ax["q"], "output pixel"))
    return BlockedLayout(wl.data_shape, packing.block, 0, 0, -(-pixels // wl.W), wl.W)


def input_layout_wanted(state: ScheduleState) -> BlockedLayout | None:
    """The blocked input layout this schedule reads in place, with no packing
    stage: what the conv before it in a model should write (its ``out``
    layout). None when the schedule packs to im2col (but for a 1x1 conv,
    ``pointwise_layout``) or not at all."""
    if isinstance(state.compute, IndirectCompute):
        from convtune.codegen.lower_indirect import channel_last_layout

        return channel_last_layout(state.compute.workload)
    if state.data_packing is not None and state.data_packing.im2col:
        return pointwise_layout(state, Domain.of(state))
    packed = packed_input(state)
    if packed is None:
        return None
    wl = state.compute.workload
    n, blocks, rows, cols, block = packed.shape
    return BlockedLayout(wl.data_shape, block, wl.padding[0], wl.padding[1], rows, cols)


def packed_source(state: ScheduleState, packed: Buffer) -> tuple[str, int, int]:
    """Where the compute reads its packed input: ("data", row shift, column
    shift) when the input arrives in a blocked layout that covers ``packed``
    (the packing stage is then left out), else (``packed.name``, 0, 0)."""
    layout = state.io_layout("data")
    if layout is None:
        return packed.name, 0, 0
    wl = state.compute.workload
    dr, dc = layout.top - wl.padding[0], layout.left - wl.padding[1]
    n, blocks, rows, cols, block = packed.shape
    fits = (layout.block == block and dr >= 0 and dc >= 0 and layout.shape[0] >= n and layout.shape[1] >= blocks
            and layout.rows - dr >= rows and layout.cols - dc >= cols)
    return ("data", dr, dc) if fits else (packed.name, 0, 0)


def _lower_conv(state: ScheduleState) -> Kernel:
    cd: ComputeDef = state.compute
    wl = cd.workload
    d = Domain.of(state)
    ax = d.ax
    params: list[Buffer] = [cd.data]
    scratch: list[Buffer] = []
    stages: list[Stmt] = []

    coords = cd.data_coords(ax)
    packing = state.data_packing
    if packing is not None and packing.im2col:
        n, ch = coords[0], coords[1]
        pq = ax["p"] * wl.Q + ax["q"]
        layout = pointwise_layout(state, d)
        if layout is not None and state.io_layout("data") == layout:  # the input is its own im2col
            plane = layout.rows * layout.cols * layout.block
            data_read: Expr = Load("data", ((n * layout.shape[1] + ch // packing.block) * plane
                                            + pq * packing.block + ch % packing.block,))
        else:
            packed = Buffer("data_packed", im2col_shape(
                packing, max(wl.N, d.cover(n, "batch")), max(wl.C, d.cover(ch, "input channel")),
                max(wl.R, d.cover(ax["r"], "kernel row")),
                max(wl.S, d.cover(ax["s"], "kernel column")), max(wl.P * wl.Q, d.cover(pq, "output pixel"))))
            scratch.append(packed)
            data_read = Load(packed.name, im2col_index(packing, n, ch, ax["r"], ax["s"], pq))
            stages.append(_im2col_stage(wl, packing.block, packed))
    elif packing is not None:
        n, ch, h, w = coords
        packed = packed_input(state)
        assert packed is not None
        source, dr, dc = packed_source(state, packed)
        data_read = Load(source, packed_data_index(packing, n, ch, h + wl.padding[0] + dr, w + wl.padding[1] + dc))
        if source == packed.name:
            scratch.append(packed)
            stages.append(pack_stage(wl, packing.block, packed))
    else:
        data_read = Select(cd.in_input(coords), Load("data", coords), fconst(0.0))

    weight, weight_read = weight_operand(state, d)
    params.append(weight)
    params += [b for b in (cd.bias, cd.residual) if b is not None] + [cd.out]

    def finalize(acc: Expr, idx: tuple[Expr, ...]) -> Expr:
        return cd.finalize(acc, dict(zip("nkpq", idx)))

    # Packed weights are zero past every edge. Packed data is too; unpacked data
    # is read behind the padding test, which covers rows and columns but not
    # a batch or channel index past the end.
    reads_safe = state.weight_packing is not None and (
        state.data_packing is not None or not d.overruns({"n", "k", "c"}))
    out_idx = (ax["n"], ax["k"], ax["p"], ax["q"])
    if split_k_axis(state) is None:
        stages += reduction_stages(d, data_read * weight_read, cd.out, out_idx, finalize, reads_safe)
    else:
        from convtune.codegen.lower_split_k import split_k_stages

        partial, split = split_k_stages(d, data_read * weight_read, cd.out, out_idx, finalize, reads_safe)
        scratch.append(partial)
        stages += split
    return Kernel("conv2d", tuple(params + scratch), tuple(stages), notes=state.trace)


def weight_operand(state: ScheduleState, d: Domain) -> tuple[Buffer, Expr]:
    """The weight argument and its read at the domain's (k, c, r, s): packed
    to OIHW[i]i[o]o (covering the domain, zero past every edge) after
    ``pack_weights``, else KCRS as given."""
    wl = state.compute.workload
    wc = ComputeDef(wl).weight_coords(d.ax)
    wp = state.weight_packing
    if wp is None:
        return Buffer("weight", wl.weight_shape), Load("weight", wc)
    shape = packed_weight_shape(wp, *(
        max(full, d.cover(e, what)) for e, full, what in zip(
            wc, wl.weight_shape, ("output channel", "input channel", "kernel row", "kernel column"))))
    return Buffer("weight", shape), Load("weight", packed_weight_index(wp, *wc))


def _implicit_cache_point(state: ScheduleState) -> str | None:
    """The innermost spatial loop, when every reduction loop is inside it: the
    accumulator is then a scalar (or vector) register."""
    order = state.leaf_axes()
    last_spatial = max(i for i, a in enumerate(order) if a.kind == SPATIAL)
    first_reduce = min((i for i, a in enumerate(order) if a.kind == REDUCE), default=len(order))
    return order[last_spatial].name if last_spatial < first_reduce else None


def pack_stage(wl: Conv2D, block: int, packed: Buffer) -> Stmt:
    """data_packed[n, cb, h, w, ci] = data[n, cb*B + ci, h - pt, w - pl], zero outside."""
    n, cb, h, w, ci = (Var(x) for x in ("n", "cb", "h", "w", "ci"))
    ch, y, x = cb * block + ci, h - wl.padding[0], w - wl.padding[1]
    inside = conj(Cmp("<", n, Const(wl.N)), Cmp("<", ch, Const(wl.C)), Cmp(">=", y, Const(0)),
                  Cmp("<", y, Const(wl.H)), Cmp(">=", x, Const(0)), Cmp("<", x, Const(wl.W)))
    value = Select(inside, Load("data", (n, ch, y, x)), fconst(0.0))  # type: ignore[arg-type]
    return blocked_copy(packed.shape, ("n", "cb", "h", "w", "ci"), Store(packed.name, (n, cb, h, w, ci), value))


def _im2col_stage(wl: Conv2D, block: int, packed: Buffer) -> Stmt:
    """data_packed[n, cb, r, s, pq, ci] = input pixel read by output pixel pq at tap (r, s)."""
    n, cb, r, s, pq, ci = (Var(x) for x in ("n", "cb", "r", "s", "pq", "ci"))
    ch = cb * block + ci
    y = (pq // wl.Q) * wl.stride[0] + r * wl.dilation[0] - wl.padding[0]
    x = (pq % wl.Q) * wl.stride[1] + s * wl.dilation[1] - wl.padding[1]
    inside = conj(Cmp("<", n, Const(wl.N)), Cmp("<", ch, Const(wl.C)), Cmp("<", r, Const(wl.R)),
                  Cmp("<", s, Const(wl.S)),
                  Cmp("<", pq, Const(wl.P * wl.Q)), Cmp(">=", y, Const(0)), Cmp("<", y, Const(wl.H)),
                  Cmp(">=", x, Const(0)), Cmp("<", x, Const(wl.W)))
    value = Select(inside, Load("data", (n, ch, y, x)), fconst(0.0))  # type: ignore[arg-type]
    return elementwise(packed.shape, ("n", "cb", "r", "s", "pq", "ci"),
                       Store(packed.name, (n, cb, r, s, pq, ci), value))

