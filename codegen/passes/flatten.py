"""Multi-dimensional buffer indices become one flat offset with literal strides,
so the renderer works on 1-D arrays and LLVM sees constant address math."""
from __future__ import annotations

from dataclasses import replace

from convtune.ir.expr import Broadcast, Const, Expr, Extract, IndexLoad, Lanes, Load, Ramp, map_children
from convtune.ir.loopnest import Allocate, Buffer, Kernel, Stmt, Store, map_stmt, walk
from convtune.codegen.passes.substitute import map_exprs


def _offset(buf: Buffer, indices: tuple[Expr, ...]) -> Expr:
    if len(indices) == 1:  # already a flat offset (an indirect read's, say)
        return indices[0]
    if len(indices) != len(buf.shape):
        raise ValueError(f"buffer {buf.name} has {len(buf.shape)} dims, indexed with {len(indices)}")
    off: Expr = Const(0)
    for idx, stride in zip(indices, buf.strides):
        off = off + idx * stride
    return off


def flatten_kernel(k: Kernel) -> Kernel:
    buffers = {b.name: b for b in k.params}
    for s in _allocations(k.body):
        buffers[s.buffer.name] = s.buffer

    def expr(e: Expr) -> Expr:
        if isinstance(e, (Broadcast, Ramp, Lanes, Extract)):
            raise ValueError("flatten runs before vectorization")
        e = map_children(e, expr)
        if isinstance(e, Load):
            return Load(e.buffer, (_offset(buffers[e.buffer], e.indices),), e.dtype)
        if isinstance(e, IndexLoad):
            return replace(e, indices=(_offset(buffers[e.buffer], e.indices),))
        return e

    def stmt(s: Stmt) -> Stmt | None:
        if isinstance(s, Store):
            return Store(s.buffer, (_offset(buffers[s.buffer], s.indices),), s.value)
        return None

    return k.map_stages(lambda st: map_stmt(map_exprs(st, expr), stmt))


def _allocations(s: Stmt) -> list[Allocate]:
    return [x for x in walk(s) if isinstance(x, Allocate)]
