"""Winograd F(m x m, 3 x 3) for 3x3 stride-1 layers (m = 2 or 4).

The batched GEMM M[e, k, t] = sum_c U[e, k, c] V[e, c, t] gets the same
register micro-kernel as the direct template: ``tb`` tiles x ``kb`` output
channels accumulated in registers, ``cb`` input channels per step. F(4x4)
does 4x fewer multiplies than direct but its transforms amplify rounding;
candidates whose error exceeds the 1e-4 bound are refused by the tuner's
check like any wrong kernel.
"""
from __future__ import annotations

from convtune.ir.winograd import WinogradCompute, applies  # noqa: F401  (the template protocol's applicability test)
from convtune.ir.workload import Conv2D
from convtune.schedules.schedule import Schedule
from convtune.schedules.space import Config, Knob, Space
from convtune.schedules.target import CpuTarget
from convtune.schedules.templates.common import best_tile, channel_blocks, register_constraint, tile_sizes, vector_blocks

NAME = "winograd"


def space(wl: Conv2D, target: CpuTarget) -> Space:
    v = target.vector_lanes
    kbs = vector_blocks(wl.K, target)
    kb = kbs[min(1, len(kbs) - 1)]
    vecs = -(-kb // v)
    m = 4 if min(wl.P, wl.Q) >= 28 else 2  # F(4x4) pays off once the transforms amortise
    tiles = WinogradCompute(wl, m).tiles
    # The input transform's vector: a native vector's power-of-two multiple, or within one register.
    cbs = tuple(b for b in channel_blocks(wl.C) if b <= v or b & (b - 1) == 0)
    default = {"m": m, "cb": min(v, max(cbs)), "kb": kb,
               "tb": best_tile(tiles, max(1, (target.vector_registers - vecs - 1) // vecs)), "prefetch": True}
    knobs = (
        Knob("m", (2, 4), "output tile size: F(2x2, 3x3) or F(4x4, 3x3)"),
        Knob("cb", cbs, "input-channel block (vector width of the input transform)"),
        Knob("kb", kbs, "output-channel block: the vector axis of the GEMM tile"),
        Knob("tb", tile_sizes(tiles, target), "tiles per register tile"),
        Knob("prefetch", (False, True), "prefetch the next weight block while the tiles sharing this one compute "
             "(a model streams its weights from memory)", absent=False),
    )
    return Space(NAME, knobs, (register_constraint(target, "tb", "kb"),), default)


def schedule(wl: Conv2D, c: Config, target: CpuTarget) -> Schedule:
    compute = WinogradCompute(wl, c["m"])
    sch = Schedule(compute)
    kb = c["kb"]
    sch.pack_data(c["cb"])
    sch.pack_weights(c["cb"], kb)
    ko, ki = sch.split("k", kb)
    to, ti = sch.split("t", min(c["tb"], compute.tiles))
    co, ci = sch.split("c", c["cb"])
    sch.reorder("e", ko, to, co, ci, ti, ki)
    outer = sch.fuse(sch.fuse("e", ko), to)
    sch.parallel(outer)
    sch.cache_write(outer)
    if c["prefetch"]:
        # The tile blocks of one (e, k block) read the same weight block in consecutive chunks.
        sch.prefetch("weight", co, ahead=-(-compute.tiles // min(c["tb"], compute.tiles)))
    sch.unroll(ti)
    sch.vectorize(ki)
    return sch
