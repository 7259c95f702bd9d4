"""Indirect convolution (Dukhan, 2019) on channel-last input.

A GEMM over output pixels like ``gemm``, but the input is never unfolded:
per kernel tap each of the ``tb`` pixels of a register tile reads its input
row (C contiguous channels) through the indirection table built at prepare
time, padding taps reading a zero row. Any stride, padding and dilation is
just a different table. Grouped convs read their group's channels of the row
(lane by lane when a vector of output channels spans groups). Inside a model
the conv before it writes the channel-last layout, so nothing is copied per
call; called on NCHW data it transposes the input to channel-last once.
"""
from __future__ import annotations

from convtune.ir.indirect import IndirectCompute
from convtune.ir.workload import Conv2D
from convtune.schedules.schedule import Schedule
from convtune.schedules.space import Config, Space
from convtune.schedules.target import CpuTarget
from convtune.schedules.templates.common import channel_blocks, one_channel_per_group
from convtune.schedules.templates.gemm import pixel_tile, pixel_tile_space

NAME = "indirect"

TABLE_READ_CALLS = 2
"""Calls per pixel and unrolled tap to look its input row up in the table."""


def applies(wl: Conv2D) -> bool:
    return not one_channel_per_group(wl)


def channel_splits(channels: int) -> tuple[int, ...]:
    """Channel blocks that divide the channels (a block past the last channel
    would read the next pixel's row), and all of them (no split)."""
    return tuple(sorted({b for b in channel_blocks(channels) if channels % b == 0} | {channels}))


def space(wl: Conv2D, target: CpuTarget) -> Space:
    # Taps outermost, all channels of a row in one run: the paper's order.
    return pixel_tile_space(NAME, wl, target, channel_splits(wl.Cg), {"cb": wl.Cg, "reduction_order": "rs_c"},
                            TABLE_READ_CALLS)


def schedule(wl: Conv2D, c: Config, target: CpuTarget) -> Schedule:
    sch = Schedule(IndirectCompute(wl))
    sch.pack_weights(c["cb"], c["kb"])
    pixel_tile(sch, "t", c)
    return sch
