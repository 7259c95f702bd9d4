"""Lowering of a Winograd schedule: pack, input transform, GEMM, output transform.

1. pack: the input into zero-padded NCHW[cb]c, covering every input tile;
2. input transform: V[e, c/cb, t, cb] = B^T d B per tile, vectorized over the
   channel block (each element a short sum of +-1/+-2/+-4-weighted loads);
3. the scheduled GEMM, M[e, k/kb, t, kb] = sum_c V * U (``reduction_stages``);
4. output transform: y = A^T M A per tile, vectorized over the output-channel
   block, with the conv's epilogue fused into the store.
Transforms are written out with the matrices' constants at lowering time, in
separable form (B^T (d B), (A^T M) A) through register temporaries, so zero
coefficients cost nothing and the generated source shows the arithmetic.
"""
from __future__ import annotations

import numpy as np

from convtune.codegen.lower import Domain, elementwise, pack_stage, pack_width, packed_source, reduction_stages
from convtune.ir.expr import FLOAT, Cmp, Const, Expr, Load, Var, conj, fconst
from convtune.ir.loopnest import Assign, Buffer, For, IfThen, Kernel, LoopKind, Stmt, Store, seq
from convtune.ir.winograd import MATRICES, WinogradCompute
from convtune.schedules.layout import ceil_div, winograd_weight_index, winograd_weight_shape
from convtune.schedules.state import DataPacking, ScheduleState, WeightPacking


def _combination(coefs: np.ndarray, terms: list[Expr]) -> Expr:
    """sum(coef * term) with zero terms dropped and +-1 as additions."""
    out: Expr | None = None
    for c, t in zip(coefs, terms):
        if c == 0:
            continue
        term = t if abs(c) == 1 else t * fconst(abs(float(c)))
        if out is None:
            out = term if c > 0 else term * fconst(-1.0)
        else:
            out = out + term if c > 0 else out - term
    return out if out is not None else fconst(0.0)


def _registers(prefix: str, values: list[Expr]) -> tuple[list[Stmt], list[Expr]]:
    """Each tile element read once into a register: (assignments, the registers)."""
    names = [f"{prefix}{i}" for i in range(len(values))]
    return [Assign(n, x) for n, x in zip(names, values)], [Var(n, FLOAT) for n in names]


def winograd_packed_input(state: ScheduleState, d: Domain) -> Buffer:
    """The zero-padded NCHW[cb]c input covering every input tile."""
    wc: WinogradCompute = state.compute
    cb = (state.data_packing or DataPacking(1)).block
    c_cover = max(wc.workload.C, d.cover(d.ax["c"], "input channel"))
    return Buffer("data_packed", (wc.workload.N, ceil_div(c_cover, cb), wc.tiles_h * wc.m + 2,
                                  pack_width(wc.tiles_w * wc.m + 2), cb))


def lower_winograd(state: ScheduleState) -> Kernel:
    wc: WinogradCompute = state.compute
    wl, m, alpha = wc.workload, wc.m, wc.alpha
    bt, _, at = MATRICES[m]
    cd = wc.conv
    d = Domain.of(state)
    dp = state.data_packing or DataPacking(1)
    wp = state.weight_packing or WeightPacking(1, 1)
    cb, ob = dp.block, wp.out_block
    th_n, tw_n = wc.tiles_h, wc.tiles_w

    c_cover = max(wl.C, d.cover(d.ax["c"], "input channel"))
    t_cover = max(wc.tiles, d.cover(d.ax["t"], "tile"))
    k_cover = max(wl.K, d.cover(d.ax["k"], "output channel"))
    packed = winograd_packed_input(state, d)
    source, dr, dc = packed_source(state, packed)
    v = Buffer("V", (alpha * alpha, ceil_div(c_cover, cb), t_cover, cb))
    mm = Buffer("M", (alpha * alpha, ceil_div(k_cover, ob), t_cover, ob))
    weight = Buffer("weight", winograd_weight_shape(wp, alpha * alpha, k_cover, c_cover))

    # Input transform: per (n, channel block, tile row), tile column and lane.
    n, co, th, tw, ci = (Var(x) for x in ("n", "co", "th", "tw", "ci"))
    t = (n * th_n + th) * tw_n + tw
    loads, d_tile = _registers("d", [Load(source, (n, co, th * m + i + dr, tw * m + j + dc, ci))
                                     for i in range(alpha) for j in range(alpha)])
    rows, d_b = _registers("db", [_combination(bt[b], d_tile[i * alpha:(i + 1) * alpha])
                                  for i in range(alpha) for b in range(alpha)])  # (d B)[i, b]
    stores = [Store(v.name, (Const(a * alpha + b), co, t, ci), _combination(bt[a], d_b[b::alpha]))
              for a in range(alpha) for b in range(alpha)]  # (B^T d B)[a, b]
    inner: Stmt = For("tw", tw_n, LoopKind.SERIAL,
                      For("ci", cb, LoopKind.VECTORIZED, seq(*loads, *rows, *stores)))
    transform_in = elementwise((wl.N, v.shape[1], th_n), ("n", "co", "th"), inner, fused_dims=3)

    # GEMM over (e, k, t) reducing c.
    ax = d.ax
    data_read = Load(v.name, (ax["e"], ax["c"] // cb, ax["t"], ax["c"] % cb))
    weight_read = Load("weight", winograd_weight_index(wp, ax["e"], ax["k"], ax["c"]))
    gemm = reduction_stages(d, data_read * weight_read, mm, (ax["e"], ax["k"] // ob, ax["t"], ax["k"] % ob),
                            lambda acc, idx: acc, reads_safe=True)

    # Output transform with the epilogue: per (n, k block, tile row), tile column, pixel, lane.
    ko, ki = Var("ko"), Var("ki")
    k = ko * ob + ki
    loads, tile_m = _registers("m", [Load(mm.name, (Const(e), ko, t, ki)) for e in range(alpha * alpha)])
    rows, at_m = _registers("am", [_combination(at[i], tile_m[b::alpha])
                                   for i in range(m) for b in range(alpha)])  # (A^T M)[i, b]
    outs = []
    for i in range(m):
        for j in range(m):
            p, q = th * m + i, tw * m + j
            y = _combination(at[j], at_m[i * alpha:(i + 1) * alpha])  # (A^T M A)[i, j]
            value = cd.finalize(y, {"n": n, "k": k, "p": p, "q": q})
            inside = conj(Cmp("<", p, Const(wl.P)), Cmp("<", q, Const(wl.Q)), Cmp("<", k, Const(wl.K)))
            outs.append(IfThen(inside, Store("out", (n, k, p, q), value)))  # type: ignore[arg-type]
    inner = For("tw", tw_n, LoopKind.SERIAL, For("ki", ob, LoopKind.VECTORIZED, seq(*loads, *rows, *outs)))
    transform_out = elementwise((wl.N, mm.shape[1], th_n), ("n", "ko", "th"), inner, fused_dims=3)

    params = [cd.data, weight] + [b for b in (cd.bias, cd.residual) if b is not None] + [cd.out]
    pack = [pack_stage(wl, cb, packed)] if source == packed.name else []
    scratch = ([packed] if pack else []) + [v, mm]
    return Kernel("conv2d_winograd", tuple(params + scratch), tuple(pack + [transform_in, *gemm, transform_out]),
                  notes=state.trace)

