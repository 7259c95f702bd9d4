"""Lowering of a Toeplitz schedule: pad the input, then the banded products.

1. pack: the input into zero-padded scratch (``x_pad``: NCHW with a border, one
   channel per block), wide enough for every column tile's band, so the
   compute reads it with no padding test;
2. the scheduled reduction (``reduction_stages``): per step one ``x_pad``
   pixel, broadcast, times a vector of Toeplitz entries (weights prepared
   once, ``schedules.layout.toeplitz_weight_index``), accumulated into the
   register tile and stored once with the conv's epilogue. The last column
   tile's lanes past the output width are masked off at the store.
"""
from __future__ import annotations

from convtune.codegen.lower import Domain, pack_stage, pack_width, reduction_stages
from convtune.ir.expr import Cmp, Const, Expr, Load
from convtune.ir.loopnest import Buffer, IfThen, Kernel, Stmt, Store, map_stmt
from convtune.ir.toeplitz import ToeplitzCompute
from convtune.schedules.layout import toeplitz_weight_index, toeplitz_weight_shape
from convtune.schedules.state import ScheduleState, WeightPacking


def _padded_input(tc: ToeplitzCompute, d: Domain, coords: tuple[Expr, ...]) -> Buffer:
    """``x_pad`` covering the logical padded input and every read of the loop domain."""
    wl = tc.workload
    n, ch, row, col = coords
    return Buffer("data_packed", (
        max(wl.N, d.cover(n, "batch")), max(wl.C, d.cover(ch, "input channel")),
        max(wl.H + wl.padding[0] + wl.padding[2], d.cover(row, "input row")),
        pack_width(max(wl.W + wl.padding[1] + wl.padding[3], d.cover(col, "input column"))), 1))


def _mask_columns(stage: Stmt, column: int, width: int) -> Stmt:
    """Each store to ``out`` guarded by its column index being below ``width``."""
    def guard(s: Stmt) -> Stmt | None:
        if isinstance(s, Store) and s.buffer == "out":
            return IfThen(Cmp("<", s.indices[column], Const(width)), s)
        return None

    return map_stmt(stage, guard)


def lower_toeplitz(state: ScheduleState) -> Kernel:
    tc: ToeplitzCompute = state.compute
    wl, cd = tc.workload, tc.conv
    d = Domain.of(state)
    ax = d.ax
    wp = state.weight_packing or WeightPacking(1, 1)

    coords = tc.padded_input_coords(ax)
    packed = _padded_input(tc, d, coords)
    data_read = Load(packed.name, (*coords, Const(0)))
    weight = Buffer("weight", toeplitz_weight_shape(wp, max(wl.K, d.cover(ax["k"], "output channel")), wl.Cg, wl.R,
                                                    tc.band, tc.lanes))
    weight_read = Load(weight.name, toeplitz_weight_index(wp, ax["k"], ax["c"], ax["r"], ax["j"], ax["l"]))

    def finalize(acc: Expr, idx: tuple[Expr, ...]) -> Expr:
        return cd.finalize(acc, dict(zip("nkpq", idx)))

    # Both reads are in bounds over the whole domain (scratch and packed
    # weights cover it, zero past the tensors): only stores need guards.
    stages = reduction_stages(d, data_read * weight_read, cd.out, tc.output_coords(ax), finalize, reads_safe=True)
    if tc.tiles * tc.lanes > wl.Q:
        stages = [_mask_columns(s, 3, wl.Q) for s in stages]
    params = [cd.data, weight] + [b for b in (cd.bias, cd.residual) if b is not None] + [cd.out, packed]
    return Kernel("conv2d_toeplitz", tuple(params), (pack_stage(wl, 1, packed), *stages), notes=state.trace)
