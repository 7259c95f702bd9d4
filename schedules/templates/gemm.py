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
from convtune.schedules.space import Config, Constraint, Knob, Space
from convtune.schedules.target import CpuTarget
from convtune.schedules.templates.common import (
    ORDER, best_tile, channel_blocks, code_size_constraint, fitting_default, kernel_calls, lane_gathered,
    one_channel_per_group, register_constraint, tile_sizes, vector_blocks,
)

NAME = "gemm"


def applies(wl: Conv2D) -> bool:
    return not one_channel_per_group(wl)


def space(wl: Conv2D, target: CpuTarget) -> Space:
    cb = max(b for b in channel_blocks(wl.Cg) if b <= 8) if wl.Cg > 8 else wl.Cg
    return pixel_tile_space(NAME, wl, target, channel_blocks(wl.Cg), {"cb": cb, "reduction_order": "c_rs"})


def pixel_tile_space(name: str, wl: Conv2D, target: CpuTarget, cbs: tuple[int, ...], preferred: Config,
                     calls_per_pixel_tap: int = 0) -> Space:
    """The knobs of ``pixel_tile`` (``gemm``, ``indirect``): channel blocks
    ``cbs``, ``preferred`` values of ``cb`` and ``reduction_order`` in the
    default; ``calls_per_pixel_tap`` is what a kernel adds to the code-size
    estimate per pixel of the tile and unrolled tap (the indirect kernel's
    table reads)."""
    v = target.vector_lanes
    kbs = vector_blocks(wl.K, target)
    kb = kbs[min(1, len(kbs) - 1)]
    vecs = -(-kb // v)
    pixels = wl.P * wl.Q
    default = {"cb": preferred["cb"], "kb": kb,
               "tb": best_tile(pixels, max(1, (target.vector_registers - vecs - 1) // vecs)),
               "reduction_order": preferred["reduction_order"], "unroll_s": False, "prefetch": False, "order": "kp"}
    knobs = (
        Knob("cb", cbs, "input-channel block (innermost reduction)"),
        Knob("kb", kbs, "output-channel block: the vector axis of the register tile"),
        Knob("tb", tile_sizes(pixels, target), "output pixels per register tile"),
        Knob("reduction_order", ("c_rs", "rs_c"), "channel blocks outside or inside the kernel taps"),
        Knob("unroll_s", (False, True), "unroll the kernel-width loop"),
        Knob("prefetch", (False, True) if wl.groups == 1 else (False,), "prefetch the next channel block's weights while the pixel tiles sharing "
             "this one compute", absent=False),
        ORDER,
    )
    def calls(c: Config) -> int:
        vecs = -(-c["kb"] // v)
        taps = wl.S if c["unroll_s"] else 1
        gathered = c["kb"] if lane_gathered(wl, c["kb"], wl.Kg) else 0
        return kernel_calls(wl, c["tb"] * vecs, taps, gathered) + calls_per_pixel_tap * c["tb"] * taps

    contiguous = Constraint("prefetch needs a channel block's taps in one contiguous span of weights: reduction_order "
                            "c_rs, a 1x1 kernel or one channel block",
                            lambda c: not c["prefetch"] or c["reduction_order"] == "c_rs" or wl.R == wl.S == 1
                            or c["cb"] >= wl.Cg)
    # The weight prefetch is sized for consecutive chunks that share a weight block.
    shared = Constraint("prefetch needs order kp", lambda c: not c["prefetch"] or c["order"] == "kp")
    constraints = (register_constraint(target, "tb", "kb"), code_size_constraint(calls), contiguous, shared)
    return Space(name, knobs, constraints, fitting_default(default, constraints, "unroll_s", "tb"))


def schedule(wl: Conv2D, c: Config, target: CpuTarget) -> Schedule:
    sch = Schedule(wl)
    sch.pack_data(c["cb"], im2col=True)
    sch.pack_weights(c["cb"], c["kb"])
    pixel_tile(sch, sch.fuse("p", "q"), c)
    return sch


def pixel_tile(sch: Schedule, pixels: str, c: Config) -> None:
    """The GEMM micro-kernel over output pixels (``gemm``, ``indirect``):
    ``tb`` pixels x ``kb`` output channels accumulated in registers over the
    reduction in ``reduction_order``, tiles of (batch, channel block, pixel
    block) in parallel, the pixel blocks outermost with ``order`` pk."""
    ko, ki = sch.split("k", c["kb"])
    to, ti = sch.split(pixels, c["tb"])
    co, ci = sch.split("c", c["cb"])
    reduction = [co, "r", "s", ci] if c["reduction_order"] == "c_rs" else ["r", "s", co, ci]
    tiles = (to, ko) if c.get("order") == "pk" else (ko, to)
    sch.reorder("n", *tiles, *reduction, ti, ki)
    outer = sch.fuse(sch.fuse("n", tiles[0]), tiles[1])
    sch.parallel(outer)
    sch.cache_write(outer)
    if c["prefetch"]:
        # The pixel tiles of one weight block are consecutive chunks.
        sch.prefetch("weight", co, ahead=sch.state.axis(to).extent)
    sch.unroll(ti)
    sch.vectorize(ki)
    if c["unroll_s"]:
        sch.unroll("s")
