"""Depthwise convolution (one input channel per group), two vectorizations.

- ``depthwise_c``: data in NCHW[kb]c, a vector of ``kb`` channels per output
  pixel; weights are vectors too. Any stride costs the same.
- ``depthwise_w``: the NCHW input read in place, a vector along the output
  row, one weight broadcast per tap; border lanes are masked loads, strided
  rows one wide load and a shuffle, stores contiguous. No copy of the input.

Depthwise layers do ~9 FMAs per output, so reads and writes, not FMAs, bound
them; the two layouts trade those differently and tuning picks.
"""
from __future__ import annotations

from convtune.ir.workload import Conv2D
from convtune.schedules.schedule import Schedule
from convtune.schedules.space import Config, Constraint, Knob, Space
from convtune.schedules.target import CpuTarget
from convtune.schedules.templates.common import (
    best_tile, code_size_constraint, fits_registers, fitting_default, kernel_calls, one_channel_per_group,
    register_constraint, tile_sizes, vector_blocks,
)

CHANNELS = "depthwise_c"
WIDTH = "depthwise_w"


def applies(wl: Conv2D) -> bool:
    return one_channel_per_group(wl)


def _tail_knobs(wl: Conv2D) -> tuple[Knob, ...]:
    return (
        Knob("ohb", tuple(h for h in (1, 2, 3, 4) if h <= wl.P), "output rows per register tile"),
        Knob("unroll_rs", (False, True), "unroll the kernel taps"),
        Knob("parallel", ("nkp", "nk"), "parallel over (batch, channels, row block) or (batch, channels)"),
    )


def channels_space(wl: Conv2D, target: CpuTarget) -> Space:
    kbs = vector_blocks(wl.K, target)
    kb = kbs[0]
    vecs = -(-kb // target.vector_lanes)
    owb = best_tile(wl.Q, max(1, (target.vector_registers - vecs - 1) // vecs))
    default = {"kb": kb, "owb": owb, "ohb": 1, "unroll_rs": True, "parallel": "nkp"}
    knobs = (Knob("kb", kbs, "channels per vector (block of the packed data)"),
             Knob("owb", tile_sizes(wl.Q, target), "output columns per register tile"),
             *_tail_knobs(wl))
    def calls(c: Config) -> int:  # a channel multiplier reads input channel k // Kg: lane by lane
        vecs = -(-c["kb"] // target.vector_lanes)
        gathered = c["kb"] if wl.Kg > 1 else 0
        return kernel_calls(wl, c["ohb"] * c["owb"] * vecs, wl.R * wl.S if c["unroll_rs"] else 1, gathered)

    constraints = (register_constraint(target, "owb", "kb", "ohb"), code_size_constraint(calls))
    return Space(CHANNELS, knobs, constraints, fitting_default(default, constraints, "unroll_rs", "owb"))


def channels_schedule(wl: Conv2D, c: Config, target: CpuTarget) -> Schedule:
    sch = Schedule(wl)
    kb = c["kb"]
    sch.pack_data(kb)
    sch.pack_weights(1, kb)
    ko, ki = sch.split("k", kb)
    po, pi = sch.split("p", c["ohb"])
    qo, qi = sch.split("q", c["owb"])
    sch.reorder("n", ko, po, qo, "c", "r", "s", pi, qi, ki)
    return _finish(sch, c, sch.fuse("n", ko), po, qo, (pi, qi), ki)


def width_space(wl: Conv2D, target: CpuTarget) -> Space:
    v = target.vector_lanes
    widths = vector_blocks(wl.Q, target, most=2)
    most = max(1, min(4, wl.Q // widths[0]))  # more vectors than fit the row are never valid
    # Measured on mobilenetv2's six depthwise layers: a 4-row, 1-vector tile with
    # one task per channel ran 1.4-3.3x faster than 1 row x 4 vectors per task
    # (threads starved on row-sized tasks), within a quarter of 150 TPE trials.
    default = {"vw": widths[0], "nv": 1, "ohb": min(4, wl.P), "unroll_rs": True,
               "parallel": "nk" if wl.N * wl.K >= 4 * target.cores else "nkp"}

    def fits(c: Config) -> bool:
        vecs = -(-c["vw"] // v)
        return fits_registers(target, c["ohb"] * c["nv"] * vecs, 1)

    knobs = (Knob("vw", widths, "output columns per vector"),
             Knob("nv", tuple(range(1, most + 1)), "vectors per register tile along the row"),
             *_tail_knobs(wl))

    def calls(c: Config) -> int:
        vecs = -(-c["vw"] // v)
        return kernel_calls(wl, c["ohb"] * c["nv"] * vecs, wl.R * wl.S if c["unroll_rs"] else 1, 0)

    constraints = (
        Constraint(f"the register tile must fit {target.vector_registers} vector registers", fits),
        code_size_constraint(calls),
        Constraint("the row tile must not exceed the output width", lambda c: c["vw"] * c["nv"] <= wl.Q),
    )
    return Space(WIDTH, knobs, constraints, fitting_default(default, constraints, "unroll_rs", "ohb"))


def width_schedule(wl: Conv2D, c: Config, target: CpuTarget) -> Schedule:
    sch = Schedule(wl)
    sch.pack_weights(1, 1)  # the input is read in place: masked loads at the borders
    po, pi = sch.split("p", c["ohb"])
    qo, qt = sch.split("q", c["vw"] * c["nv"])
    qm, qi = sch.split(qt, c["vw"])
    sch.reorder("n", "k", po, qo, "c", "r", "s", pi, qm, qi)
    return _finish(sch, c, sch.fuse("n", "k"), po, qo, (pi, qm), qi)


def _finish(sch: Schedule, c: Config, outer: str, rows: str, attach: str, unrolled: tuple[str, ...],
            vector: str) -> Schedule:
    if c["parallel"] == "nkp":
        outer = sch.fuse(outer, rows)
    sch.parallel(outer)
    sch.cache_write(attach)
    for axis in unrolled:
        sch.unroll(axis)
    sch.vectorize(vector)
    if c["unroll_rs"]:
        sch.unroll("r")
        sch.unroll("s")
    return sch
