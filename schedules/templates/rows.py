"""Convolution with a vector along the output row: the NCHW input read in place.

The register tile is ``ohb`` output rows x ``nv`` vectors of ``vw`` columns
(x ``kb`` output channels in ``direct_w``); each step loads the input rows
once, as vectors (masked at the borders, one wide load and a shuffle when
strided), and broadcasts one weight per output channel. There is no packing
stage and the output is stored NCHW with contiguous vectors, so in a model a
chain of such layers (mobilenet_v2's 1x1 -> depthwise -> 1x1) passes NCHW
tensors from kernel to kernel without a layout transform. That suits
layers with many pixels per row and few channels, where a channel-vector
template spends its time packing and scattering.

- ``depthwise_w`` (``templates.depthwise``): one output channel per tile,
  one input channel per output.
- ``direct_w``: ``kb`` output channels unrolled in the tile, reducing over
  every input channel of the group: the input vectors of a step serve all
  ``kb`` of them. Measured on mobilenet_v2's 1x1 layers at 56x56 and
  112x112 (16-144 channels), untuned: 1.3-1.8x faster than the best
  channel-vector config of 40 trials, warm and cold.
- ``pointwise_w``: ``direct_w`` for a 1x1, stride-1, unpadded conv, whose
  NCHW pixels are one contiguous row of P*Q: the vector runs along the
  flattened pixels, so a 14x14 or 7x7 map wastes no lanes on short rows.
  Measured on mobilenet_v2's 19 1x1 shapes (warm, NCHW in and out, best of
  a few configs): 1.0-2.7x faster than the best config of 40 trials of the
  other templates on 17 of them, 0.92x on the 7x7 320->1280 head.
"""
from __future__ import annotations

from convtune.ir.workload import Conv2D
from convtune.schedules.schedule import Schedule
from convtune.schedules.space import Config, Constraint, Knob, Space
from convtune.schedules.target import CpuTarget
from convtune.schedules.templates.common import (
    ORDER, code_size_constraint, fits_registers, fitting_default, kernel_calls, one_channel_per_group, vector_blocks,
)

DIRECT_W = "direct_w"
POINTWISE_W = "pointwise_w"
CHANNEL_UNROLLS = (1, 2, 3, 4, 6, 8, 12, 16, 24)
"""Output channels per tile in ``direct_w``: each needs its own accumulators,
so more than 24 never fit a tile of even one vector."""


GUARDED_LOAD_CALLS = 2
"""What a guard around an unrolled load or FMA adds, in calls (measured: a
``direct_w`` kernel of 840 estimated calls whose every load was guarded by
the padding made 1075 and compiled in 10.3 s cold on a 2.4 GHz Zen 3; 60
ragged-tile guards on 417 calls took 7.9 s against 2.0 s without them)."""


PARALLEL = Knob("parallel", ("nkp", "nk"), "parallel over (batch, channels, row block) or (batch, channels)")


def tail_knobs(wl: Conv2D) -> tuple[Knob, ...]:
    """Rows per tile, tap unrolling and the parallel axes (every depthwise
    and row-vector template has them)."""
    return (
        Knob("ohb", tuple(h for h in (1, 2, 3, 4) if h <= wl.P), "output rows per register tile"),
        Knob("unroll_rs", (False, True), "unroll the kernel taps"),
        PARALLEL,
    )


def row_space(name: str, wl: Conv2D, target: CpuTarget, default: Config, row: int | None = None) -> Space:
    """The knobs of ``row_schedule``: ``vw`` x ``nv`` columns, the tail knobs,
    and ``kb`` when ``default`` has it (``direct_w``); ``default``'s missing
    ``vw``/``nv`` become one vector of the narrowest width. ``row``: the
    length the vector runs along, given for ``pointwise_w``'s flattened
    pixels (then only ``parallel`` of the tail knobs: one row, one tap)."""
    v = target.vector_lanes
    flat = row is not None
    row = row if flat else wl.Q
    widths = vector_blocks(row, target, most=2)
    most = max(1, min(4, row // widths[0]))  # more vectors than fit the row are never valid
    default = {"vw": widths[0], "nv": 1, **default}
    even_row = any(row % (w * n) == 0 for w in widths for n in range(1, most + 1))
    kbs = tuple(k for k in CHANNEL_UNROLLS if k <= wl.K and (wl.K % k == 0 or even_row)
                and fits_registers(target, k, 1)) if "kb" in default else ()  # fits with one row and one vector

    def channels(c: Config) -> int:
        return c.get("kb", 1)

    def fits(c: Config) -> bool:
        vecs = -(-c["vw"] // v)
        rows = c.get("ohb", 1)
        inputs = rows * c["nv"] * vecs if "kb" in c else 1  # shared by kb channels, else used at once
        return fits_registers(target, channels(c) * rows * c["nv"] * vecs, inputs)

    def calls(c: Config) -> int:
        vecs = -(-c["vw"] // v)
        rows, accumulators = c.get("ohb", 1), channels(c) * c.get("ohb", 1) * c["nv"] * vecs
        taps = wl.R * wl.S if c.get("unroll_rs") else 1
        # An unrolled load whose input row can fall in the top or bottom
        # padding is guarded (a compare and a zero vector); a ragged row or
        # channel tile puts an ``if`` around each of its accumulators' FMAs.
        guards = int(wl.padding[0] > 0 or wl.padding[2] > 0) + int(wl.P % rows != 0 or wl.K % channels(c) != 0)
        return kernel_calls(wl, accumulators, taps, 0) + GUARDED_LOAD_CALLS * guards * accumulators * taps

    knobs = (Knob("vw", widths, "output columns per vector"),
             Knob("nv", tuple(range(1, most + 1)), "vectors per register tile along the row"),
             *((Knob("kb", kbs, "output channels per register tile (unrolled)"),) if kbs else ()),
             *((ORDER, PARALLEL) if flat else tail_knobs(wl)))
    constraints = (
        Constraint(f"the register tile must fit {target.vector_registers} vector registers", fits),
        code_size_constraint(calls),
        Constraint("the row tile must not exceed the output width", lambda c: c["vw"] * c["nv"] <= row),
        # A tile ragged along channels and along the row vectorises only in
        # part: a scalar copy with accumulators in memory, compiled in 10-65 s.
        Constraint("the channel tile must divide the output channels when the row tile is ragged",
                   lambda c: wl.K % channels(c) == 0 or row % (c["vw"] * c["nv"]) == 0),
    )
    # A flat default is chosen to fit (``pointwise_w_space``); a row one may need its unrolling or rows cut.
    return Space(name, knobs, constraints, default if flat else fitting_default(default, constraints, "unroll_rs", "ohb"))


def row_schedule(wl: Conv2D, c: Config, target: CpuTarget | None = None) -> Schedule:
    """Tiles of (``kb`` channels,) ``ohb`` rows x ``nv`` vectors, the
    reduction over input channels and taps outside the tile, channels
    (and row blocks) in parallel: ``depthwise_w``'s and ``direct_w``'s
    schedule (``target`` is the template protocol's; the tile is in ``c``).
    A config without ``ohb`` (``pointwise_w``) tiles one row, the fused
    p*Q + q pixel axis, and its pixel blocks are the parallel row blocks;
    with ``order`` pk they are outside the channel blocks, and ``parallel``
    nk spreads (batch, pixel block) over the cores, each chunk looping over
    the channel blocks."""
    sch = Schedule(wl)
    sch.pack_weights(1, 1)  # the input is read in place: masked loads at the borders
    flat = "ohb" not in c
    po, pi = (None, None) if flat else sch.split("p", c["ohb"])
    qo, qt = sch.split(sch.fuse("p", "q") if flat else "q", c["vw"] * c["nv"])
    qm, qi = sch.split(qt, c["vw"])
    outer_k, k_tile = sch.split("k", c["kb"]) if "kb" in c else ("k", None)
    channels = (k_tile,) if k_tile else ()
    rows = () if flat else (pi,)
    tile = (*channels, *rows, qm)
    if c.get("order") == "pk":  # flat only: a pixel block's input stays in cache for every channel block
        sch.reorder("n", qo, outer_k, "c", "r", "s", *tile, qi)
        return finish_tile(sch, c, sch.fuse("n", qo), outer_k, outer_k, tile, qi)
    sch.reorder("n", outer_k, *([] if flat else [po]), qo, "c", "r", "s", *tile, qi)
    return finish_tile(sch, c, sch.fuse("n", outer_k), qo if flat else po, qo, tile, qi)


def finish_tile(sch: Schedule, c: Config, outer: str, rows: str, attach: str, unrolled: tuple[str, ...],
                vector: str) -> Schedule:
    """The tail every depthwise and row-vector schedule shares: ``outer``
    (with the row blocks when ``parallel`` is nkp) in parallel, the register
    tile at ``attach`` (at the fused loop when that is ``rows``), ``unrolled``
    axes and the taps (``unroll_rs``) unrolled, ``vector`` vectorized."""
    if c["parallel"] == "nkp":
        outer = sch.fuse(outer, rows)
        attach = outer if attach == rows else attach
    sch.parallel(outer)
    sch.cache_write(attach)
    for axis in unrolled:
        sch.unroll(axis)
    sch.vectorize(vector)
    if c.get("unroll_rs"):
        sch.unroll("r")
        sch.unroll("s")
    return sch


def direct_w_applies(wl: Conv2D) -> bool:
    return not one_channel_per_group(wl)


def _channel_tile(wl: Conv2D, target: CpuTarget, row: int) -> Config:
    """``vw``, ``nv``, ``kb`` and ``parallel`` of a default tile along a row of
    ``row`` outputs: up to 3 vectors x 8 channels (the measured sweet spot on
    AVX-512; it won on 17 of mobilenet_v2's 19 1x1 shapes under
    ``pointwise_w``), as many as fit the registers."""
    vw = vector_blocks(row, target, most=2)[0]
    vecs = -(-vw // target.vector_lanes)
    nv, kb = next((nv, kb) for nv in range(max(1, min(3, row // vw)), 0, -1)
                  for kb in sorted(CHANNEL_UNROLLS, reverse=True)
                  if kb <= 8 and wl.K % kb == 0 and fits_registers(target, kb * nv * vecs, nv * vecs))
    return {"vw": vw, "nv": nv, "kb": kb, "parallel": "nk" if wl.N * (wl.K // kb) >= 4 * target.cores else "nkp"}


def direct_w_space(wl: Conv2D, target: CpuTarget) -> Space:
    default = {**_channel_tile(wl, target, wl.Q), "ohb": 1, "unroll_rs": False}
    return row_space(DIRECT_W, wl, target, default)


def pointwise_w_applies(wl: Conv2D) -> bool:
    """A 1x1, stride-1, unpadded conv (not depthwise): output pixel f reads
    input pixel f of every channel, so NCHW's flattened planes line up."""
    return ((wl.R, wl.S) == (1, 1) and wl.stride == (1, 1) and not any(wl.padding)
            and not one_channel_per_group(wl))


def pointwise_w_space(wl: Conv2D, target: CpuTarget) -> Space:
    """The default order is pk: measured on mobilenet_v2's 19 1x1 shapes
    (default tiles, caches flushed, a 2-core Zen 1) it was faster on 17,
    up to 3.7x (56x56 96->24, whose 1.2 MB input kp reads 6 times), and
    the 19 summed to 44 ms against kp's 68."""
    pixels = wl.P * wl.Q
    tile = _channel_tile(wl, target, pixels)
    # In pk order, nk parallelises (batch, pixel block): a 7x7 map's 3 blocks would leave a core idle.
    blocks = wl.N * -(-pixels // (tile["vw"] * tile["nv"]))
    default = {**tile, "order": "pk", "parallel": "nk" if blocks >= 4 * target.cores else "nkp"}
    return row_space(POINTWISE_W, wl, target, default, row=pixels)
