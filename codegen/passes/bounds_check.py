"""Static proof that unguarded memory accesses stay inside their buffers.

The renderer reads and writes through raw pointers (no bounds checks, no
negative-index wraparound), so lowering must be right by construction. Every
access that no guard protects is bounded with interval arithmetic over the
loop ranges; an access that may leave its buffer is a lowering bug and fails
the build instead of corrupting memory.
"""
from __future__ import annotations

from convtune.ir.expr import Expr, IndexLoad, Load, Select, children
from convtune.ir.loopnest import Allocate, Assign, For, IfThen, Kernel, Seq, Stmt, Store
from convtune.ir.simplify import Ranges, bounds, simplify


class OutOfBounds(AssertionError):
    pass


def check_bounds(k: Kernel) -> None:
    sizes = {b.name: b.size for b in k.params}

    def access(buf: str, off: Expr, ranges: Ranges) -> None:
        b = bounds(simplify(off, ranges), ranges)
        if b is None or b[0] < 0 or b[1] >= sizes[buf]:
            raise OutOfBounds(f"{buf}[{off}] may be outside [0, {sizes[buf]}) (bounds {b})")

    def expr(e: Expr, ranges: Ranges) -> None:
        if isinstance(e, Select):
            expr(e.cond, ranges)  # the branches are guarded by the condition
            return
        if isinstance(e, (Load, IndexLoad)):
            access(e.buffer, e.indices[0], ranges)
        for c in children(e):
            expr(c, ranges)

    def stmt(s: Stmt, ranges: Ranges) -> None:
        if isinstance(s, For):
            stmt(s.body, {**ranges, s.var: (0, s.extent - 1)})
        elif isinstance(s, Seq):
            for x in s.stmts:
                stmt(x, ranges)
        elif isinstance(s, Allocate):
            sizes[s.buffer.name] = s.buffer.size
            stmt(s.body, ranges)
        elif isinstance(s, Store):
            access(s.buffer, s.indices[0], ranges)
            expr(s.value, ranges)
        elif isinstance(s, Assign):
            expr(s.value, ranges)
        elif isinstance(s, IfThen):
            expr(s.cond, ranges)  # the body is guarded

    stmt(k.body, {})


