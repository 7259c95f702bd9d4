"""Depthwise convolution (one input channel per group), two vectorizations.

- ``depthwise_c``: data in NCHW[kb]c, a vector of ``kb`` channels per output
  pixel; weights are vectors too. Any stride costs the same.
- ``depthwise_w``: the NCHW input read in place, a vector along the output
  row, one weight broadcast per tap; border lanes are masked loads, strided
  rows one wide load and a shuffle, stores contiguous. No copy of the input
  (``templates.rows``, shared with ``direct_w``).

Depthwise layers do ~9 FMAs per output, so reads and writes, not FMAs, bound
them; the two layouts trade those differently and tuning picks.
"""
from __future__ import annotations

from convtune.ir.workload import Conv2D
from convtune.schedules.schedule import Schedule
from convtune.schedules.space import Config, Knob, Space
from convtune.schedules.target import CpuTarget
from convtune.schedules.templates.common import (
    best_tile, code_size_constraint, fitting_default, kernel_calls, one_channel_per_group, register_constraint,
    tile_sizes, vector_blocks,
)
from convtune.schedules.templates.rows import finish_tile, row_space, tail_knobs

CHANNELS = "depthwise_c"
WIDTH = "depthwise_w"


def applies(wl: Conv2D) -> bool:
    return one_channel_per_group(wl)


def channels_space(wl: Conv2D, target: CpuTarget) -> Space:
    kbs = vector_blocks(wl.K, target)
    kb = kbs[0]
    vecs = -(-kb // target.vector_lanes)
    owb = best_tile(wl.Q, max(1, (target.vector_registers - vecs - 1) // vecs))
    default = {"kb": kb, "owb": owb, "ohb": 1, "unroll_rs": True, "parallel": "nkp"}
    knobs = (Knob("kb", kbs, "channels per vector (block of the packed data)"),
             Knob("owb", tile_sizes(wl.Q, target), "output columns per register tile"),
             *tail_knobs(wl))
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
    return finish_tile(sch, c, sch.fuse("n", ko), po, qo, (pi, qi), ki)


def width_space(wl: Conv2D, target: CpuTarget) -> Space:
    # Measured on mobilenetv2's six depthwise layers: a 4-row, 1-vector tile with
    # one task per channel ran 1.4-3.3x faster than 1 row x 4 vectors per task
    # (threads starved on row-sized tasks), within a quarter of 150 TPE trials.
    default = {"ohb": min(4, wl.P), "unroll_rs": True,
               "parallel": "nk" if wl.N * wl.K >= 4 * target.cores else "nkp"}
    return row_space(WIDTH, wl, target, default)
