"""Helpers shared by the CPU templates: block candidates and register budgets."""
from __future__ import annotations

from typing import Callable

from convtune.ir.workload import Conv2D
from convtune.schedules.space import Config, Constraint, Knob
from convtune.schedules.target import CpuTarget


ORDER = Knob("order", ("kp", "pk"), "channel blocks outside the pixel blocks (kp: the input is read once per "
             "channel block) or inside them (pk: the weights are read once per pixel block)", absent="kp")
"""Which operand a tile's neighbours in the parallel loop share; records
without it were tuned with kp."""


def one_channel_per_group(wl: Conv2D) -> bool:
    """Depthwise (and depthwise with a channel multiplier): the depthwise
    templates' case. The channel-blocked templates would reduce over one
    input channel per output, a block of one, and never win there."""
    return wl.Cg == 1 and wl.groups > 1


def channel_blocks(channels: int, largest: int = 32) -> tuple[int, ...]:
    """Powers of two up to ``largest`` (and the channel count itself when it is
    small and odd, e.g. 3 input channels): the input-channel block sizes."""
    blocks = {b for b in (1, 2, 4, 8, 16, 32, 64) if b <= min(channels, largest)}
    if channels <= largest:
        blocks.add(channels)
    return tuple(sorted(blocks))


def vector_blocks(channels: int, target: CpuTarget, most: int = 4) -> tuple[int, ...]:
    """1, 2 or 4 vectors, never more lanes than ``channels`` (a split's factor
    may not exceed its extent; the last block's missing lanes are masked), or
    ``channels`` lanes when that is less than one vector. So a vector is
    either a power-of-two count of native vectors or fits one register: LLVM
    legalises odd multi-register widths such as <24 x float> slowly (once
    measured at 136 s for a kernel)."""
    v = target.vector_lanes
    if channels < v:
        return (channels,)
    return tuple(m * v for m in (1, 2, 4) if m <= most and m * v <= channels)


def fits_registers(target: CpuTarget, accumulators: int, vectors_per_step: int) -> bool:
    """Accumulators plus the operand vectors of one step, plus a broadcast,
    must fit the vector register file or LLVM spills them to the stack."""
    return accumulators + vectors_per_step + 1 <= target.vector_registers


def register_constraint(target: CpuTarget, tile: str, block: str, rows: str | None = None) -> Constraint:
    """The register tile (rows x tile x block/lanes accumulators) fits."""
    v = target.vector_lanes

    def holds(c: Config) -> bool:
        vecs = -(-c[block] // v)
        return fits_registers(target, c[tile] * (c[rows] if rows else 1) * vecs, vecs)

    return Constraint(f"the register tile must fit {target.vector_registers} vector registers", holds)


def tile_sizes(extent: int, target: CpuTarget) -> tuple[int, ...]:
    """Candidate register-tile lengths: up to what one vector of accumulators
    per element leaves of the register file (14 on AVX2, 30 on AVX-512), and
    never past the extent being tiled. The register constraint prunes the
    lengths too big for wider output-channel blocks."""
    return tuple(range(1, min(extent, target.vector_registers - 2) + 1))


def best_tile(extent: int, limit: int) -> int:
    """The tile size <= limit with the most useful elements per tile (a big
    tile reuses each loaded operand more; a ragged last tile wastes work).
    Ties go to the larger tile."""
    return max(range(1, min(limit, extent) + 1), key=lambda t: (extent / -(-extent // t), t))


MAX_KERNEL_CALLS = 1200
"""Most calls (intrinsics and index arithmetic) the generated kernel may make
in its source. Numba types and lowers each call on its own, which dominates
a cold compile; see ``kernel_calls``."""


def lane_gathered(wl: Conv2D, kb: int, per_group: int) -> bool:
    """Whether a vector of ``kb`` output channels reads its input lane by lane:
    its lanes read different input channels unless every block lies within
    one group of ``per_group`` outputs reading one input channel (grouped
    convs, depthwise with a channel multiplier)."""
    return per_group > 1 and wl.groups > 1 and not (kb <= per_group and per_group % kb == 0)


def kernel_calls(wl: Conv2D, accumulators: int, taps: int, gathered_lanes: int) -> int:
    """An estimate of the calls in a kernel's source: per unrolled tap, an FMA,
    a broadcast and a load per accumulator (plus ``GATHERED_LANE_CALLS`` per lane when the
    input is gathered lane by lane), then the epilogue's store per
    accumulator, twice when a guarded tail keeps a second copy."""
    epilogue = 2 + int(wl.bias) + int(wl.residual) + int(wl.activation is not None)
    gathers = GATHERED_LANE_CALLS * gathered_lanes
    return KERNEL_BASE_CALLS + accumulators * taps * (3 + gathers) + 2 * accumulators * epilogue


GATHERED_LANE_CALLS = 10
"""What a lane gathered on its own costs, in calls: its load and its own
division and modulo of the channel index, which LLVM then works through
(measured: a grouped direct kernel of 240 calls, 6 unrolled taps of a
32-lane gather, took 12.9 s cold; without unrolling 1.8 s)."""

KERNEL_BASE_CALLS = 60
"""The packing stage, loop set-up and index arithmetic of any kernel."""


def code_size_constraint(calls: Callable[[Config], int]) -> Constraint:
    """The kernel compiles in seconds: ``calls(config)`` (``kernel_calls``)
    must stay under ``MAX_KERNEL_CALLS``."""
    return Constraint(f"the generated kernel must make fewer than {MAX_KERNEL_CALLS} calls (compile time)",
                      lambda c: calls(c) <= MAX_KERNEL_CALLS)


def fitting_default(preferred: Config, constraints: tuple[Constraint, ...], unroll: str, tile: str) -> Config:
    """``preferred``, or when it breaks a constraint (a big tile of an
    unrolled kernel), the same config without unrolling, then with ever
    shorter ``tile``: every space has a valid default."""
    candidates = [preferred, {**preferred, unroll: False}]
    candidates += [{**preferred, unroll: False, tile: t} for t in range(preferred[tile] - 1, 0, -1)]
    return next(c for c in candidates if all(k.holds(c) for k in constraints))
