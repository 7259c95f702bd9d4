"""Replicate unrolled loops in the IR, so each copy has literal indices (what
lets the register pass give every accumulator element a name)."""
from __future__ import annotations

from convtune.codegen.passes.simplify import simplify_stmt
from convtune.codegen.passes.substitute import substitute_stmt
from convtune.ir.expr import Const
from convtune.ir.loopnest import For, Kernel, LoopKind, Stmt, map_stmt, seq, walk
from convtune.schedules.state import ScheduleError

MAX_UNROLLED_STATEMENTS = 4096
"""Past this Numba's type inference dominates build time (seconds per kernel)."""


def unroll_kernel(k: Kernel) -> Kernel:
    def visit(s: Stmt) -> Stmt | None:
        if not (isinstance(s, For) and s.kind == LoopKind.UNROLLED):
            return None
        size = len(walk(s.body)) * s.extent
        if size > MAX_UNROLLED_STATEMENTS:
            raise ScheduleError(
                f"unroll: unrolling '{s.var}' would emit about {size} statements (limit {MAX_UNROLLED_STATEMENTS}); "
                "unroll fewer or shorter loops")
        copies = (simplify_stmt(substitute_stmt(s.body, {s.var: Const(i)}), {}) for i in range(s.extent))
        return seq(*(c for c in copies if c is not None))

    return k.map_stages(lambda st: map_stmt(st, visit))
