"""Lowering of an indirect convolution schedule (``ir.indirect``).

1. pack (only when the input does not arrive in ``channel_last_layout``):
   the input into channel-last scratch with its zero row, vectorized along
   image rows and transposed in registers (``combine_stores``);
2. the scheduled GEMM over output pixels: per kernel tap each pixel of the
   register tile looks its input row up in the indirection table (hoisted
   out of the channel loop), then broadcasts channel after channel of it
   into FMAs with a vector of output channels' weights. No im2col copy.

The indirection table is a kernel argument built once per workload at
prepare time (``indirection_operand``), as the packed weights are.
"""
from __future__ import annotations

import numpy as np

from convtune.codegen.lower import (
    PACK_LANES, Domain, LoweringError, elementwise, reduction_stages, weight_operand,
)
from convtune.ir.expr import Cmp, Const, Expr, IndexLoad, Load, Select, Var, emin, fconst
from convtune.ir.indirect import IndirectCompute, image_size, indirection_table, zero_row_offset
from convtune.ir.loopnest import Buffer, IfThen, Kernel, LoopKind, Stmt, Store
from convtune.ir.loopnest import Kernel as LoopNest
from convtune.ir.workload import Conv2D
from convtune.schedules.state import BlockedLayout, ScheduleState

TABLE = "indirection"
"""The kernel argument holding the indirection table."""


def channel_last_layout(wl: Conv2D) -> BlockedLayout:
    """The layout an indirect kernel reads in place: NHWC, (N, 1, H + 1, W, C),
    whose row H of every image (outside the tensor, so zero) is the zero row."""
    return BlockedLayout(wl.data_shape, wl.C, 0, 0, wl.H + 1, wl.W)


def indirection_operand(state: ScheduleState, nest: LoopNest) -> np.ndarray:
    """The indirection table of a lowered indirect kernel, flat, as the
    float32 array (holding int32 bits) it is passed as."""
    pixels = next(b.shape[0] for b in nest.params if b.name == TABLE)
    return indirection_table(state.compute.workload, pixels).view(np.float32).reshape(-1)


def _pack_block(channels: int) -> int:
    """Channels transposed per vector step of the packing stage: all of them
    up to 16, else the largest power of two up to 16 dividing them (a block
    must not run past the last channel: the next pixel's would be overwritten)."""
    if channels <= PACK_LANES:
        return channels
    return max(b for b in (1, 2, 4, 8, 16) if channels % b == 0)


def channel_last_pack(wl: Conv2D, packed: Buffer) -> Stmt:
    """data_packed[n, 0, h, w, c] = data[n, c, h, w], and 0 in row H: per
    (image, channel block, row) vectors of 16 columns, the block's channels
    unrolled, so the block's strided stores combine into a register transpose."""
    block = _pack_block(wl.C)
    n, cb, h, wo, ci, wi = (Var(x) for x in ("n", "cb", "h", "wo", "ci", "wi"))
    w, ch = wo * PACK_LANES + wi, cb * block + ci
    value = Select(Cmp("<", h, Const(wl.H)), Load("data", (n, ch, h, w)), fconst(0.0))
    store: Stmt = Store(packed.name, (n, Const(0), h, w, ch), value)
    if wl.W % PACK_LANES:
        store = IfThen(Cmp("<", w, Const(wl.W)), store)
    shape = (wl.N, wl.C // block, wl.H + 1, -(-wl.W // PACK_LANES), block, PACK_LANES)
    return elementwise(shape, ("n", "cb", "h", "wo", "ci", "wi"), store, fused_dims=3,
                       kinds=(LoopKind.SERIAL, LoopKind.UNROLLED, LoopKind.VECTORIZED))


def lower_indirect(state: ScheduleState) -> Kernel:
    cd: IndirectCompute = state.compute
    wl = cd.workload
    if state.data_packing is not None:
        raise LoweringError("indirect: the input is read through the indirection table; pack_data does not apply")
    d = Domain.of(state)
    ax = d.ax
    layout = channel_last_layout(wl)
    packed = Buffer("data_packed", layout.shape)
    source = "data" if state.io_layout("data") == layout else packed.name
    table = Buffer(TABLE, (max(wl.P * wl.Q, d.cover(ax["t"], "output pixel")), wl.R, wl.S))

    # A lane past the last output channel (never stored) reads the last group's channels, not past the row.
    group = emin(ax["k"] // wl.Kg, wl.groups - 1) if d.overruns({"k"}) else ax["k"] // wl.Kg
    channel = ax["c"] if wl.groups == 1 else group * wl.Cg + ax["c"]
    row = IndexLoad(table.name, (ax["t"], ax["r"], ax["s"]), 0, zero_row_offset(wl))
    data_read = Load(source, (ax["n"] * image_size(wl) + row + channel,))
    weight, weight_read = weight_operand(state, d)

    def finalize(acc: Expr, idx: tuple[Expr, ...]) -> Expr:
        return cd.finalize(acc, dict(zip("nkpq", idx)))

    out_idx = (ax["n"], ax["k"], ax["t"] // wl.Q, ax["t"] % wl.Q)
    # Every read is in bounds over the whole domain: the table covers the
    # tiles' overhang (pointing it at the zero row), the packed weights are
    # zero past every edge, channel blocks divide the channels.
    gemm = reduction_stages(d, data_read * weight_read, cd.out, out_idx, finalize, reads_safe=True)
    params = [cd.data, weight, table] + [b for b in (cd.bias, cd.residual) if b is not None] + [cd.out]
    pack = [channel_last_pack(wl, packed)] if source == packed.name else []
    return Kernel("conv2d_indirect", tuple(params + ([packed] if pack else [])), tuple(pack + gemm),
                  notes=state.trace)
