"""Direct convolution on the GPU, in the manner of TVM's conv2d_nchw for CUDA.

Output channels, rows and columns are each split [block, vthread, thread,
inner]: a block computes a (f x y x x) tile of the output, each thread a
register tile of (vthread x inner) elements per axis, vthreads a thread-tile
apart so neighbouring threads touch neighbouring addresses. The reduction is
split (rc, ry, rx) outer x inner; per outer step the block stages the input
window and the weights it needs in shared memory and every thread
accumulates from there, the inner reduction optionally unrolled. Grouped and
depthwise convolutions stage only the weights (each thread's input channels
differ); depthwise convolutions have their own template
(``cuda_depthwise``). Sizes are baked into the kernel as literals.
"""
from __future__ import annotations

from convtune.ir.workload import Conv2D
from convtune.schedules.schedule import Schedule
from convtune.schedules.space import Config, Knob, Space
from convtune.schedules.target import CudaTarget
from convtune.schedules.templates.common import one_channel_per_group
from convtune.schedules.templates.cuda_common import (
    bind_tiles, default_threads, largest, launch_constraint, split_tile, tile, tiles,
)

NAME = "cuda_direct"
THREADS = (1, 2, 4, 8, 16)


def applies(wl: Conv2D) -> bool:
    return not one_channel_per_group(wl)


def _inner_windows(wl: Conv2D) -> tuple[str, ...]:
    return ("1x1", f"{wl.R}x{wl.S}") if wl.R * wl.S > 1 else ("1x1",)


def space(wl: Conv2D, target: CudaTarget) -> Space:
    shared = ("both",) if wl.groups == 1 else ("weight", "none")
    return tiled_space(NAME, wl, target, tiles(wl.K, (1, 2), THREADS, (1, 2, 4)), shared)


def tiled_space(name: str, wl: Conv2D, target: CudaTarget, f_tiles: tuple[str, ...],
                shared: tuple[str, ...]) -> Space:
    """The knobs of this schedule with the given output-channel tiles and
    shared-memory choices (the depthwise template narrows both)."""
    tf, ty, tx = default_threads((wl.K, wl.P, wl.Q), (8, 4, 8), target.max_threads_per_block)
    default_f = tile(1, tf, largest((1, 2), wl.K // tf))
    default = {
        "tile_f": default_f if default_f in f_tiles else f_tiles[0], "tile_y": tile(1, ty, 1), "tile_x": tile(1, tx, 1),
        "tile_rc": largest((1, 2, 4), wl.Cg), "tile_r": _inner_windows(wl)[-1], "unroll": True, "shared": shared[0],
    }
    knobs = (
        Knob("tile_f", f_tiles, "output channels: vthreads x threads x per thread"),
        Knob("tile_y", tiles(wl.P, (1,), (1, 2, 4, 8), (1, 2)), "output rows: vthreads x threads x per thread"),
        Knob("tile_x", tiles(wl.Q, (1, 2), THREADS, (1, 2)), "output columns: vthreads x threads x per thread"),
        Knob("tile_rc", tuple(c for c in (1, 2, 4, 8) if c <= wl.Cg), "input channels per shared-memory step"),
        Knob("tile_r", _inner_windows(wl), "kernel taps per shared-memory step (rows x columns)"),
        Knob("unroll", (False, True), "unroll the reduction inside a shared-memory step"),
        Knob("shared", shared, "what is staged in shared memory"),
    )
    return Space(name, knobs, (launch_constraint(target, ("tile_f", "tile_y", "tile_x")),), default)


def schedule(wl: Conv2D, c: Config, target: CudaTarget) -> Schedule:
    sch = Schedule(wl)
    f = split_tile(sch, "k", c["tile_f"])
    y = split_tile(sch, "p", c["tile_y"])
    x = split_tile(sch, "q", c["tile_x"])
    ry, rx = (int(n) for n in c["tile_r"].split("x"))
    rco, rci = sch.split("c", c["tile_rc"])
    ryo, ryi = sch.split("r", ry)
    rxo, rxi = sch.split("s", rx)
    sch.reorder("n", f[0], y[0], x[0], f[2], y[2], x[2], rco, ryo, rxo, rci, ryi, rxi,
                f[1], y[1], x[1], f[3], y[3], x[3])
    nf = sch.fuse("n", f[0])
    bind_tiles(sch, [(nf, *f[1:]), y, x])
    sch.cache_write(x[2])
    if c["shared"] in ("both", "weight"):
        sch.cache_read("weight", "shared", rxo)
    if c["shared"] == "both":
        sch.cache_read("data", "shared", rxo)
    if c["unroll"]:
        for axis in (rci, ryi, rxi):
            sch.unroll(axis)
    return sch
