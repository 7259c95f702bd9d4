"""Give the kernel's activation arguments their blocked layouts.

Lowering writes every access of ``data``, ``out`` and ``residual`` with
logical NCHW indices (four of them). For an argument the schedule gives a
``BlockedLayout`` (``primitives.io_layout``), this pass maps those accesses
to the layout's five physical indices and gives the argument its physical
shape; the bounds proof that runs next checks the result like any access.
Accesses that lowering already wrote physically (five indices: the packed
input read in place) are left as they are.
"""
from __future__ import annotations

from dataclasses import replace

from convtune.ir.expr import Expr, Load, map_children
from convtune.ir.loopnest import Buffer, Kernel, Stmt, Store, map_stmt
from convtune.codegen.passes.substitute import map_exprs
from convtune.schedules.layout import blocked_index
from convtune.schedules.state import BlockedLayout

LOGICAL_DIMS = 4


def relayout_kernel(kernel: Kernel, layouts: dict[str, BlockedLayout]) -> Kernel:
    if not layouts:
        return kernel

    def expr(e: Expr) -> Expr:
        e = map_children(e, expr)
        if isinstance(e, Load) and e.buffer in layouts and len(e.indices) == LOGICAL_DIMS:
            return replace(e, indices=blocked_index(layouts[e.buffer], *e.indices))
        return e

    def stmt(s: Stmt) -> Stmt | None:
        if isinstance(s, Store) and s.buffer in layouts and len(s.indices) == LOGICAL_DIMS:
            return replace(s, indices=blocked_index(layouts[s.buffer], *s.indices))
        return None

    stages = tuple(map_stmt(map_exprs(st, expr), stmt) for st in kernel.stages)
    params = tuple(Buffer(b.name, layouts[b.name].shape, b.scope) if b.name in layouts else b for b in kernel.params)
    return replace(kernel, params=params, stages=stages)
