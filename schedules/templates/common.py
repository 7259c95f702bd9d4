"""Helpers shared by the CPU templates: block candidates and register budgets."""
from __future__ import annotations

from convtune.ir.workload import Conv2D
from convtune.schedules.space import Config, Constraint
from convtune.schedules.target import CpuTarget


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
    """1, 2 or 4 vectors (a power-of-two lane count: LLVM legalises odd vector
    widths such as <24 x float> slowly, once measured at 136 s for a kernel),
    capped at the channel count rounded up to a vector."""
    v = target.vector_lanes
    if channels < v:
        return (channels,)
    cap = -(-channels // v) * v
    return tuple(m * v for m in (1, 2, 4) if m <= most and m * v <= cap)


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
