"""Shared-memory staging for ``cache_read`` (GPU): at the start of each
iteration of the attach loop, the block's threads copy the box of the input
(or weights) that the iteration reads into a shared buffer, each thread a
strided share of its elements, zero where the box leaves the tensor (the
padding); a barrier follows, the body reads the shared copy, and a second
barrier keeps the next iteration's copy from overwriting what a slower
thread still reads. Runs on the lowered, multi-dimensional loop nest."""
from __future__ import annotations

import math
from dataclasses import replace

from convtune.codegen.passes.substitute import map_exprs
from convtune.ir.expr import Cmp, Const, Expr, Load, Select, Var, conj, fconst, map_children
from convtune.ir.loopnest import Allocate, Barrier, Buffer, For, IfThen, Kernel, LoopKind, Stmt, Store, map_stmt, seq
from convtune.schedules.gpu import THREADS, footprint, launch_dims
from convtune.schedules.state import ScheduleState, SharedRead


def _thread_index(state: ScheduleState) -> Expr:
    """The thread's linear index in its block (x fastest)."""
    var = {state.annotation(n): Var(n) for n in state.gpu_bound() if state.annotation(n) in THREADS}
    _, block = launch_dims(state)
    tid: Expr = Const(0)
    for kind, extent in reversed(list(zip(THREADS, block))):
        tid = tid * extent + var.get(kind, Const(0))
    return tid


def _cooperative_load(state: ScheduleState, source: Buffer, shared: Buffer, base: tuple[Expr, ...]) -> Stmt:
    """shared[j] = source[base + j] (0 outside the tensor), elements spread over the block's threads."""
    _, block = launch_dims(state)
    threads = math.prod(block)
    step = f"{shared.name}_step"
    element = Var(step) * threads + _thread_index(state)
    j: list[Expr] = []
    for stride, extent in zip(shared.strides, shared.shape):
        q = element // stride if stride > 1 else element
        j.append(Const(0) if extent == 1 else q % extent if stride * extent < shared.size else q)
    coords = tuple(b + x for b, x in zip(base, j))
    inside = conj(*(c for x, n in zip(coords, source.shape) for c in (Cmp(">=", x, Const(0)), Cmp("<", x, Const(n)))))
    store: Stmt = Store(shared.name, tuple(j), Select(inside, Load(source.name, coords), fconst(0.0)))  # type: ignore[arg-type]
    if shared.size % threads:
        store = IfThen(Cmp("<", element, Const(shared.size)), store)
    return For(step, -(-shared.size // threads), LoopKind.SERIAL, store)


def _read_shared(body: Stmt, source: str, shared: str, base: tuple[Expr, ...]) -> Stmt:
    """Reads of ``source`` (bare or behind the padding test) become reads of the shared copy."""

    def expr(e: Expr) -> Expr:
        if isinstance(e, Select) and isinstance(e.t, Load) and e.t.buffer == source and e.f == fconst(0.0):
            e = e.t
        if isinstance(e, Load) and e.buffer == source:
            return Load(shared, tuple(i - b for i, b in zip(e.indices, base)), e.dtype)
        return map_children(e, expr)

    return map_exprs(body, expr)


def stage_shared(k: Kernel, state: ScheduleState) -> Kernel:
    """Apply every ``cache_read`` of the schedule to its lowered kernel; the
    reads attached to one loop share its two barriers."""
    params = {b.name: b for b in k.params}
    at: dict[str, list[SharedRead]] = {}
    for read in state.shared_reads:
        at.setdefault(read.at, []).append(read)

    def visit(s: Stmt) -> Stmt | None:
        if not (isinstance(s, For) and s.var in at):
            return None
        loads, body, shared = [], s.body, []
        for read in at[s.var]:
            base, shape = footprint(state, read.buffer, read.at)
            buf = Buffer(f"{read.buffer}_shared", shape, scope="shared")
            loads.append(_cooperative_load(state, params[read.buffer], buf, base))
            body = _read_shared(body, read.buffer, buf.name, base)
            shared.append(buf)
        out: Stmt = replace(s, body=seq(*loads, Barrier(), body, Barrier()))
        for buf in shared:
            out = Allocate(buf, out)
        return out

    return k.map_stages(lambda st: map_stmt(st, visit))
