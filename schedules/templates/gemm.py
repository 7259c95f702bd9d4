"""Convolution as a blocked GEMM over output pixels.

The input is packed per call into the im2col layout, every kernel tap's
pixels in output-pixel order and blocked by ``cb`` channels; the compute is
then a GEMM ``out[k, pq] = sum_{c,r,s} W[k, c, r, s] * cols[c, r, s, pq]``
with a register tile of ``tb`` pixels x ``kb`` output channels. Fusing the
output rows and columns into one pixel axis tiles small layers (7x7, 14x14)
without a ragged column tail. For a 1x1 kernel there is no im2col at all: the
packing only blocks the channels (and subsamples when strided), a plain
blocked GEMM.
"""
from __future__ import annotations

from convtune.ir.workload import Conv2D
from convtune.schedules.schedule import Schedule
from convtune.schedules.space import Config, Knob, Space
from convtune.schedules.target import CpuTarget
from convtune.schedules.templates.common import (
    best_tile, channel_blocks, code_size_constraint, fitting_default, kernel_calls, lane_gathered,
    one_channel_per_group, register_constraint, tile_sizes, vector_blocks,
)

NAME = "gemm"


def applies(wl: Conv2D) -> bool:
    return not one_channel_per_group(wl)


def space(wl: Conv2D, target: CpuTarget) -> Space:
    v = target.vector_lanes
    kbs = vector_blocks(wl.K, target)
    kb = kbs[min(1, len(kbs) - 1)]
    vecs = -(-kb // v)
    pixels = wl.P * wl.Q
    default = {"cb": max(b for b in channel_blocks(wl.Cg) if b <= 8) if wl.Cg > 8 else wl.Cg, "kb": kb,
               "tb": best_tile(pixels, max(1, (target.vector_registers - vecs - 1) // vecs)),
               "reduction_order": "c_rs", "unroll_s": False}
    knobs = (
        Knob("cb", channel_blocks(wl.Cg), "input-channel block (innermost reduction)"),
        Knob("kb", kbs, "output-channel block: the vector axis of the register tile"),
        Knob("tb", tile_sizes(pixels, target), "output pixels per register tile"),
        Knob("reduction_order", ("c_rs", "rs_c"), "channel blocks outside or inside the kernel taps"),
        Knob("unroll_s", (False, True), "unroll the kernel-width loop"),
    )
    def calls(c: Config) -> int:
        vecs = -(-c["kb"] // v)
        gathered = c["kb"] if lane_gathered(wl, c["kb"], wl.Kg) else 0
        return kernel_calls(wl, c["tb"] * vecs, wl.S if c["unroll_s"] else 1, gathered)

    constraints = (register_constraint(target, "tb", "kb"), code_size_constraint(calls))
    return Space(NAME, knobs, constraints, fitting_default(default, constraints, "unroll_s", "tb"))


def schedule(wl: Conv2D, c: Config, target: CpuTarget) -> Schedule:
    sch = Schedule(wl)
    kb = c["kb"]
    sch.pack_data(c["cb"], im2col=True)
    sch.pack_weights(c["cb"], kb)
    pq = sch.fuse("p", "q")
    ko, ki = sch.split("k", kb)
    to, ti = sch.split(pq, c["tb"])
    co, ci = sch.split("c", c["cb"])
    reduction = [co, "r", "s", ci] if c["reduction_order"] == "c_rs" else ["r", "s", co, ci]
    sch.reorder("n", ko, to, *reduction, ti, ki)
    outer = sch.fuse(sch.fuse("n", ko), to)
    sch.parallel(outer)
    sch.cache_write(outer)
    sch.unroll(ti)
    sch.vectorize(ki)
    if c["unroll_s"]:
        sch.unroll("s")
    return sch
