"""Helpers shared by the CUDA templates: TVM-style four-way tile splits and
the device-limit constraint on them.

A spatial axis is split as [block, vthread, thread, inner]; its knob value
is the string "VxTxI" (vthreads x threads x inner elements per thread; the
block count follows), which stays a plain JSON value in tuning logs.
"""
from __future__ import annotations

import itertools
import math

from convtune.schedules.gpu import register_limit
from convtune.schedules.schedule import Schedule
from convtune.schedules.space import Config, Constraint
from convtune.schedules.target import CudaTarget


def tile(v: int, t: int, i: int) -> str:
    return f"{v}x{t}x{i}"


def parse_tile(value: str) -> tuple[int, int, int]:
    v, t, i = (int(x) for x in value.split("x"))
    return v, t, i


def tiles(extent: int, vthreads: tuple[int, ...], threads: tuple[int, ...], inner: tuple[int, ...]) -> tuple[str, ...]:
    """Every "VxTxI" of the given choices that fits ``extent`` (a split factor
    may not exceed its axis)."""
    return tuple(tile(v, t, i) for v, t, i in itertools.product(vthreads, threads, inner) if v * t * i <= extent)


def largest(choices: tuple[int, ...], limit: int) -> int:
    return max((c for c in choices if c <= limit), default=1)


def default_threads(extents: tuple[int, ...], wanted: tuple[int, ...], limit: int) -> tuple[int, ...]:
    """Power-of-two thread counts per axis, at most ``wanted`` and the axis's
    extent, the largest halved until the block fits ``limit`` threads."""
    counts = [largest(tuple(2**e for e in range(11) if 2**e <= w), n) for n, w in zip(extents, wanted)]
    while math.prod(counts) > limit:
        counts[counts.index(max(counts))] //= 2
    return tuple(counts)


def split_tile(sch: Schedule, axis: str, value: str) -> tuple[str, str, str, str]:
    """Split ``axis`` into (block, vthread, thread, inner) loops."""
    v, t, i = parse_tile(value)
    block, rest = sch.split(axis, v * t * i)
    vthread, rest = sch.split(rest, t * i)
    thread, inner = sch.split(rest, i)
    return block, vthread, thread, inner


def bind_tiles(sch: Schedule, tiles: list[tuple[str, str, str, str]]) -> None:
    """Bind (z, y, x) tiles, already ordered blocks, threads, ...: blocks
    (outermost) first, then threads; vthreads, and inner loops unrolled."""
    for level, tag in ((0, "blockIdx"), (2, "threadIdx")):
        for t, dim in zip(tiles, "zyx"):
            sch.bind(t[level], f"{tag}.{dim}")
    for _, vthread, _, inner in tiles:
        sch.bind(vthread, "vthread")
        sch.unroll(inner)


def launch_constraint(target: CudaTarget, knobs: tuple[str, ...]) -> Constraint:
    """The threads of a block, and their register tiles, fit the device."""

    def reason(c: Config) -> str | None:
        parts = [parse_tile(c[k]) for k in knobs]
        threads = accumulators = 1
        for v, t, i in parts:
            threads *= t
            accumulators *= v * i
        if threads > target.max_threads_per_block:
            return f"{threads} threads per block exceed {target.max_threads_per_block}"
        return register_limit(target, threads, accumulators)

    return Constraint(f"threads and registers must fit the device ({target.max_threads_per_block} threads, "
                      f"{target.registers_per_block} registers a block)", lambda c: reason(c) is None)
