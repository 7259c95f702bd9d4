"""Apply an expression rewrite to every expression of a statement tree."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from convtune.ir.expr import Expr, substitute
from convtune.ir.loopnest import Assign, IfThen, Prefetch, Stmt, Store, map_stmt


def map_exprs(s: Stmt, fn: Callable[[Expr], Expr]) -> Stmt:
    def visit(x: Stmt) -> Stmt | None:
        if isinstance(x, Store):
            return Store(x.buffer, tuple(fn(i) for i in x.indices), fn(x.value))
        if isinstance(x, IfThen):
            return replace(x, cond=fn(x.cond))
        if isinstance(x, Assign):
            return replace(x, value=fn(x.value))
        if isinstance(x, Prefetch):
            return Prefetch(x.buffer, tuple(fn(i) for i in x.indices))
        return None

    return map_stmt(s, visit)


def substitute_stmt(s: Stmt, mapping: dict[str, Expr]) -> Stmt:
    return map_exprs(s, lambda e: substitute(e, mapping))
