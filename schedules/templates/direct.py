"""Direct convolution on packed NCHW[cb]c data and OIHW[cb]i[kb]o weights.

The seeds' NC4HW4 trick generalised: per step of the reduction, ``kb`` output
channels of weights are loaded as vectors and each of ``ohb x owb`` input
pixels is broadcast into an FMA with them; the ``ohb x owb x kb`` outputs stay
in registers for the whole reduction over (c, r, s).
"""
from __future__ import annotations

from convtune.ir.workload import Conv2D
from convtune.schedules.schedule import Schedule
from convtune.schedules.space import Config, Constraint, Knob, Space
from convtune.schedules.target import CpuTarget
from convtune.schedules.templates.common import (
    best_tile, channel_blocks, code_size_constraint, fitting_default, kernel_calls, lane_gathered,
    one_channel_per_group, register_constraint, tile_sizes, vector_blocks,
)

NAME = "direct"


def applies(wl: Conv2D) -> bool:
    return not one_channel_per_group(wl)


def space(wl: Conv2D, target: CpuTarget) -> Space:
    v = target.vector_lanes
    kbs = vector_blocks(wl.K, target)
    kb = kbs[min(1, len(kbs) - 1)]
    vecs = -(-kb // v)
    budget = target.vector_registers - vecs - 1
    owb = best_tile(wl.Q, max(1, budget // vecs))
    default = {"cb": max(b for b in channel_blocks(wl.Cg) if b <= 8) if wl.Cg > 8 else wl.Cg,
               "kb": kb, "owb": owb, "ohb": 1, "reduction_order": "c_rs", "unroll_s": False, "parallel": "nkp",
               "prefetch": False}
    knobs = (
        Knob("cb", channel_blocks(wl.Cg), "input-channel block of the packed data (innermost reduction)"),
        Knob("kb", kbs, "output-channel block: the vector axis of the register tile"),
        Knob("owb", tile_sizes(wl.Q, target), "output columns per register tile"),
        Knob("ohb", tuple(h for h in (1, 2, 3, 4) if h <= wl.P), "output rows per register tile"),
        Knob("reduction_order", ("c_rs", "rs_c"), "channel blocks outside (c_rs) or inside (rs_c) the kernel taps"),
        Knob("unroll_s", (False, True), "unroll the kernel-width loop"),
        Knob("parallel", ("nkp", "nk"), "parallel over (batch, channel block, row block) or (batch, channel block)"),
        Knob("prefetch", (False, True) if wl.groups == 1 else (False,),
             "prefetch the next chunk's weights while this one computes", absent=False),
    )
    def calls(c: Config) -> int:
        vecs = -(-c["kb"] // v)
        gathered = c["kb"] if lane_gathered(wl, c["kb"], wl.Kg) else 0
        return kernel_calls(wl, c["ohb"] * c["owb"] * vecs, wl.S if c["unroll_s"] else 1, gathered)

    # A chunk must read its weight block once, in one contiguous span per channel block; a chunk that
    # loops over several tiles would prefetch the same lines once per tile (measured 1.3x slower).
    once = Constraint("prefetch needs reduction_order c_rs, parallel nkp and a tile as wide as the output row",
                      lambda c: not c["prefetch"] or (c["reduction_order"] == "c_rs" and c["parallel"] == "nkp"
                                                      and c["owb"] >= wl.Q))
    constraints = (register_constraint(target, "owb", "kb", "ohb"), code_size_constraint(calls), once)
    return Space(NAME, knobs, constraints, fitting_default(default, constraints, "unroll_s", "owb"))


def schedule(wl: Conv2D, c: Config, target: CpuTarget) -> Schedule:
    sch = Schedule(wl)
    kb = c["kb"]
    sch.pack_data(c["cb"])
    sch.pack_weights(c["cb"], kb)
    ko, ki = sch.split("k", kb)
    po, pi = sch.split("p", c["ohb"])
    qo, qi = sch.split("q", c["owb"])
    co, ci = sch.split("c", c["cb"])
    reduction = [co, "r", "s", ci] if c["reduction_order"] == "c_rs" else ["r", "s", co, ci]
    sch.reorder("n", ko, po, qo, *reduction, pi, qi, ki)
    outer = sch.fuse("n", ko)
    if c["parallel"] == "nkp":
        outer = sch.fuse(outer, po)
    sch.parallel(outer)
    sch.cache_write(qo)
    if c["prefetch"]:
        # The row blocks of one weight block are consecutive chunks.
        sch.prefetch("weight", co, ahead=-(-wl.P // c["ohb"]))
    sch.unroll(pi)
    sch.unroll(qi)
    sch.vectorize(ki)
    if c["unroll_s"]:
        sch.unroll("s")
    return sch


