"""Toeplitz-matrix convolution, vectorised along the output width.

The conv as products with banded matrices built from the weights, one per
(output channel, input channel, kernel row) (``ir.toeplitz``): a register
tile of ``ohb`` output rows x ``nv`` column tiles of ``lanes`` output
columns x ``kb`` output channels; per step of the reduction (input channel,
kernel row, band column) ``kb`` vectors of matrix entries are loaded and
each of the ``ohb x nv`` input pixels is broadcast into an FMA with them
(the matrix is the same for every row and column tile). The vector axis is the output
width, so layers with one or a few input channels, or fewer output channels
than a vector has lanes, still run on full vectors; every output costs
``band`` multiplies instead of ``S``, which the tuner weighs against the
channel-vectorised templates.
"""
from __future__ import annotations

from convtune.ir.toeplitz import ToeplitzCompute, applies, band  # noqa: F401  (the template protocol's applicability test)
from convtune.ir.workload import Conv2D
from convtune.schedules.schedule import Schedule
from convtune.schedules.space import Config, Constraint, Knob, Space
from convtune.schedules.target import CpuTarget
from convtune.schedules.templates.common import (
    best_tile, code_size_constraint, fits_registers, fitting_default, kernel_calls, vector_blocks,
)

NAME = "toeplitz"


def space(wl: Conv2D, target: CpuTarget) -> Space:
    v = target.vector_lanes
    widths = vector_blocks(wl.Q, target, most=2)
    tiles = {lanes: -(-wl.Q // lanes) for lanes in widths}

    def vecs(c: Config) -> int:
        return -(-c["lanes"] // v)

    def accumulators(c: Config) -> int:
        return c["ohb"] * c["nv"] * c["kb"] * vecs(c)

    def calls(c: Config) -> int:
        taps = (band(wl, c["lanes"]) if c["unroll_j"] else 1) * (wl.R if c["unroll_r"] else 1)
        return kernel_calls(wl, accumulators(c), taps, 0)

    constraints = (
        Constraint(f"the register tile must fit {target.vector_registers} vector registers",
                   lambda c: fits_registers(target, accumulators(c), c["kb"] * vecs(c))),
        Constraint("the column tiles of a register tile must not exceed those of a row",
                   lambda c: c["nv"] <= tiles[c["lanes"]]),
        code_size_constraint(calls),
    )
    # Measured on narrow layers (C = 1..32, K = 1..16, 3x3): four rows x two
    # column tiles sharing each matrix vector ran 1.5-2.4x faster than one
    # row; unrolling the band or not was within noise, so the band stays a loop.
    lanes = widths[0]
    nv, ohb = min(2, tiles[lanes]), min(4, wl.P)
    vec = -(-lanes // v)
    default = {"lanes": lanes, "nv": nv, "ohb": ohb,
               "kb": best_tile(wl.K, max(1, (target.vector_registers - 1) // (vec * (ohb * nv + 1)))),
               "unroll_j": False, "unroll_r": True}
    knobs = (
        Knob("lanes", widths, "output columns per vector: the Toeplitz matrices' width"),
        Knob("nv", tuple(range(1, min(4, max(tiles.values())) + 1)), "column tiles (vectors) per register tile"),
        Knob("kb", tuple(k for k in range(1, min(wl.K, 16) + 1) if fits_registers(target, k, k)),  # one row, one vector
             "output channels per register tile"),
        Knob("ohb", tuple(h for h in (1, 2, 3, 4) if h <= wl.P), "output rows per register tile (share each matrix vector)"),
        Knob("unroll_j", (False, True), "unroll the band (input columns of a tile)"),
        Knob("unroll_r", (False, True), "unroll the kernel rows"),
    )
    return Space(NAME, knobs, constraints, fitting_default(default, constraints, "unroll_r", "kb"))


def schedule(wl: Conv2D, c: Config, target: CpuTarget) -> Schedule:
    sch = Schedule(ToeplitzCompute(wl, c["lanes"]))
    sch.pack_weights(1, c["kb"])
    ko, ki = sch.split("k", c["kb"])
    po, pi = sch.split("p", c["ohb"])
    to, ti = sch.split("t", c["nv"])
    sch.reorder("n", ko, po, to, "c", "r", "j", pi, ti, ki, "l")
    rows = sch.fuse(sch.fuse("n", ko), po)
    sch.parallel(rows)
    sch.cache_write(to)
    sch.unroll(pi)
    sch.unroll(ti)
    sch.unroll(ki)
    sch.vectorize("l")
    if c["unroll_j"]:
        sch.unroll("j")
    if c["unroll_r"]:
        sch.unroll("r")
    return sch
