"""Scalar replacement: a local buffer whose every access has a literal offset
becomes named variables (vectors for ramp accesses), which LLVM keeps in
registers. Anything else stays a small heap array."""
from __future__ import annotations

from convtune.ir.expr import FLOAT, Const, Expr, Extract, Load, Ramp, Var, map_children
from convtune.ir.loopnest import Allocate, Assign, Kernel, Stmt, Store, accesses, map_stmt
from convtune.codegen.passes.substitute import map_exprs


def _slot(index: Expr) -> tuple[int, int] | None:
    """(first element, lanes) of a literal access, else None."""
    if isinstance(index, Const):
        return (int(index.value), 1)
    if isinstance(index, Ramp) and isinstance(index.base, Const) and index.stride == 1:
        return (int(index.base.value), index.lanes)
    return None


def _promotion(body: Stmt, name: str) -> dict[tuple[int, int], Expr] | None:
    """Map from each access slot to the register expression replacing it."""
    reads, writes = accesses(body, name)
    slots = {_slot(i) for i in reads + writes}
    if None in slots:
        return None
    vectors = {s for s in slots if s[1] > 1}  # type: ignore[index]
    covered: dict[int, tuple[int, int]] = {}
    for start, lanes in sorted(vectors):  # type: ignore[misc]
        for e in range(start, start + lanes):
            if e in covered:
                return None  # overlapping vector accesses at different alignments
            covered[e] = (start, lanes)
    write_slots = {_slot(i) for i in writes}
    mapping: dict[tuple[int, int], Expr] = {}
    for slot in slots:
        start, lanes = slot  # type: ignore[misc]
        if lanes > 1:
            mapping[slot] = Var(f"{name}_{start}", FLOAT, lanes)
        elif start in covered:
            if slot in write_slots:
                return None  # a lane written on its own: keep memory semantics
            vstart, vlanes = covered[start]
            mapping[slot] = Extract(Var(f"{name}_{vstart}", FLOAT, vlanes), start - vstart)
        else:
            mapping[slot] = Var(f"{name}_{start}", FLOAT)
    return mapping


def promote_registers(k: Kernel) -> Kernel:
    def visit(s: Stmt) -> Stmt | None:
        if not (isinstance(s, Allocate) and s.buffer.scope == "local"):
            return None
        name = s.buffer.name
        mapping = _promotion(s.body, name)
        if mapping is None:
            return None

        def expr(e: Expr) -> Expr:
            if isinstance(e, Load) and e.buffer == name:
                return mapping[_slot(e.indices[0])]  # type: ignore[index]
            return map_children(e, expr)

        def stmt(x: Stmt) -> Stmt | None:
            if isinstance(x, Store) and x.buffer == name:
                reg = mapping[_slot(x.indices[0])]  # type: ignore[index]
                return Assign(reg.name, x.value)  # type: ignore[union-attr]
            return None

        return map_stmt(map_exprs(s.body, expr), stmt)

    return k.map_stages(lambda st: map_stmt(st, visit))
