"""Implicit-GEMM convolution on the GPU with split-K, for small batch-1 layers.

The conv is a GEMM of (output channels) x (output pixels) over (input
channels x kernel taps), computed without materialising im2col: output rows
and columns are fused into one pixel axis, so a 7x7 output fills blocks as
well as a 56x56 one, and both GEMM axes are split [block, vthread, thread,
inner]. Split-K cuts the input channels into parts, one per blockIdx.z: a
layer whose outputs alone make a handful of blocks gets ``split_k`` times as
many, and a last stage adds the parts and applies the epilogue. The weights
of each channel step can be staged in shared memory (the input cannot: its
box over fused pixels has no static bound).
"""
from __future__ import annotations

import math

from convtune.ir.workload import Conv2D
from convtune.schedules.schedule import Schedule
from convtune.schedules.space import Config, Constraint, Knob, Space
from convtune.schedules.target import CudaTarget
from convtune.schedules.templates.common import one_channel_per_group
from convtune.schedules.templates.cuda_common import (
    default_threads, largest, launch_constraint, split_tile, tile, tiles,
)

NAME = "cuda_gemm"
SPLITS = (1, 2, 4, 8)


def applies(wl: Conv2D) -> bool:
    return not one_channel_per_group(wl)


def _part(wl: Conv2D, split_k: int) -> int:
    """Input channels of one split-K part."""
    return math.ceil(wl.Cg / split_k)


def _default_split(wl: Conv2D, blocks: int, target: CudaTarget) -> int:
    """Enough parts for two blocks per multiprocessor, if the channels allow."""
    return largest(tuple(s for s in SPLITS if s <= wl.Cg), max(1, 2 * target.multiprocessors // max(blocks, 1)))


def space(wl: Conv2D, target: CudaTarget) -> Space:
    pixels = wl.P * wl.Q
    tk, tpq = default_threads((wl.K, pixels), (8, 32), target.max_threads_per_block)
    blocks = wl.N * math.ceil(wl.K / tk) * math.ceil(pixels / tpq)
    split = _default_split(wl, blocks, target)
    default = {"tile_k": tile(1, tk, 1), "tile_pq": tile(1, tpq, 1), "split_k": split,
               "tile_rc": largest((1, 2, 4), _part(wl, split)), "unroll": True, "shared": "weight"}
    knobs = (
        Knob("tile_k", tiles(wl.K, (1, 2), (1, 2, 4, 8, 16), (1, 2, 4)), "output channels: vthreads x threads x inner"),
        Knob("tile_pq", tiles(pixels, (1,), (1, 2, 4, 8, 16, 32), (1, 2, 4)), "output pixels: threads x inner"),
        Knob("split_k", tuple(s for s in SPLITS if s <= wl.Cg), "input-channel parts, one per blockIdx.z"),
        Knob("tile_rc", tuple(c for c in (1, 2, 4, 8) if c <= wl.Cg), "input channels per step"),
        Knob("unroll", (False, True), "unroll the kernel taps and channels of a step"),
        Knob("shared", ("weight", "none"), "stage each step's weights in shared memory"),
    )
    fits_part = Constraint("tile_rc must not exceed the input channels of one split-K part",
                           lambda c: c["tile_rc"] <= _part(wl, c["split_k"]))
    return Space(NAME, knobs, (launch_constraint(target, ("tile_k", "tile_pq")), fits_part), default)


def schedule(wl: Conv2D, c: Config, target: CudaTarget) -> Schedule:
    sch = Schedule(wl)
    pq = sch.fuse("p", "q")
    bk, vk, tk, ik = split_tile(sch, "k", c["tile_k"])
    bpq, _, tpq, ipq = split_tile(sch, pq, c["tile_pq"])
    ks, rest = sch.split("c", _part(wl, c["split_k"]))
    co, ci = sch.split(rest, c["tile_rc"])
    sch.reorder(ks, "n", bk, bpq, tk, tpq, co, "r", "s", ci, vk, ik, ipq)
    nk = sch.fuse("n", bk)
    if sch.extent(ks) > 1:  # one part needs no partial sums
        sch.bind(ks, "blockIdx.z")
    for axis, tag in ((nk, "blockIdx.y"), (bpq, "blockIdx.x"), (tk, "threadIdx.y"), (tpq, "threadIdx.x"),
                      (vk, "vthread")):
        sch.bind(axis, tag)
    sch.cache_write(tpq)
    sch.unroll(ik)
    sch.unroll(ipq)
    if c["shared"] == "weight":
        sch.cache_read("weight", "shared", co)
    if c["unroll"]:
        for axis in ("r", "s", ci):
            sch.unroll(axis)
    return sch
