"""Simplify every expression with the ranges of the loops around it; fold
guards that always hold (or never do) and inline single-iteration loops."""
from __future__ import annotations

from dataclasses import replace

from convtune.codegen.passes.substitute import substitute_stmt
from convtune.ir.expr import Const, Not
from convtune.ir.loopnest import Allocate, Assign, For, IfThen, Kernel, Prefetch, Seq, Stmt, Store, seq
from convtune.ir.simplify import FALSE, TRUE, Ranges, simplify, simplify_cond


def simplify_stmt(s: Stmt, ranges: Ranges) -> Stmt | None:
    """The simplified statement, or None when it does nothing."""
    if isinstance(s, For):
        if s.extent == 1:
            return simplify_stmt(substitute_stmt(s.body, {s.var: Const(0)}), ranges)
        body = simplify_stmt(s.body, {**ranges, s.var: (0, s.extent - 1)})
        return None if body is None else replace(s, body=body)
    if isinstance(s, Seq):
        parts = [x for x in (simplify_stmt(x, ranges) for x in s.stmts) if x is not None]
        return seq(*parts) if parts else None
    if isinstance(s, IfThen):
        cond = simplify_cond(s.cond, ranges)
        orelse = None if s.orelse is None else simplify_stmt(s.orelse, ranges)
        if cond == FALSE:
            return orelse
        body = simplify_stmt(s.body, ranges)
        if cond == TRUE:
            return body
        if body is None and orelse is None:
            return None
        if body is None:
            return IfThen(Not(cond), orelse)  # type: ignore[arg-type]
        return IfThen(cond, body, orelse)
    if isinstance(s, Allocate):
        body = simplify_stmt(s.body, ranges)
        return None if body is None else replace(s, body=body)
    if isinstance(s, Store):
        return Store(s.buffer, tuple(simplify(i, ranges) for i in s.indices), simplify(s.value, ranges))
    if isinstance(s, Assign):
        return replace(s, value=simplify(s.value, ranges))
    if isinstance(s, Prefetch):
        return Prefetch(s.buffer, tuple(simplify(i, ranges) for i in s.indices))
    return s


def simplify_kernel(k: Kernel) -> Kernel:
    return k.map_stages(lambda st: simplify_stmt(st, {}))
