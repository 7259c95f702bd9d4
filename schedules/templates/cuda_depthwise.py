"""Depthwise convolution on the GPU: the direct schedule with one output
channel per block, so every thread of a block reads the same input channel
and the block can stage its input window, as well as its weights, in shared
memory. Threads and register tiles span output rows and columns only."""
from __future__ import annotations

from convtune.ir.workload import Conv2D
from convtune.schedules.space import Space
from convtune.schedules.target import CudaTarget
from convtune.schedules.templates.common import one_channel_per_group
from convtune.schedules.templates.cuda_direct import schedule, tiled_space

NAME = "cuda_depthwise"

__all__ = ["NAME", "applies", "schedule", "space"]


def applies(wl: Conv2D) -> bool:
    return one_channel_per_group(wl)


def space(wl: Conv2D, target: CudaTarget) -> Space:
    return tiled_space(NAME, wl, target, ("1x1x1",), ("both", "weight", "none"))
