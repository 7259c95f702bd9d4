"""Software prefetch of a stream that runs from memory (``primitives.prefetch``).

In a model a layer's weights come from memory, not cache. A stage's parallel
chunks that share one weight block read it in turn: the first from memory
(stalled on it: one core's share of the bandwidth is less than its FMAs
consume) and the rest from cache, at full speed. With ``ahead`` = d such
chunks, each inserts at the top of every iteration of the reduction loop
``at`` prefetches of its 1/d share of the lines that the same iteration of
chunk ``j + d`` will read, so the next block streams in while the current
one is computed on. Measured on resnet18's 7x7x512 Winograd layer with caches
flushed, in three runs: 0.61-0.76 ms without, 0.40-0.54 ms with.

The lines an iteration reads are found from the flat offsets of its loads:
each is ``base + sum(coef * v)`` over the loops inside ``at``, so the span is
known at lowering time and ``base`` is rewritten for chunk ``j + d``.
"""
from __future__ import annotations

from dataclasses import replace

from convtune.ir.expr import Cmp, Const, Expr, Var, free_vars, substitute
from convtune.ir.loopnest import For, IfThen, Kernel, LoopKind, Prefetch, Stmt, accesses, map_stmt, seq, walk
from convtune.ir.simplify import linear, simplify
from convtune.schedules.state import ScheduleError, ScheduleState, SoftwarePrefetch

LINE_FLOATS = 16
"""float32 elements per 64-byte cache line."""


def insert_prefetches(k: Kernel, state: ScheduleState) -> Kernel:
    """The kernel with each of the schedule's prefetches inserted in the stage
    holding its loop. Simplification inlines a loop of one iteration; then
    the whole chunk is that iteration, and the stages reading the buffer get
    the prefetches at the top of their chunk."""
    for p in state.prefetches:
        stages = [st for st in k.stages if _find(st, p.at)] or [st for st in k.stages if accesses(st, p.buffer)[0]]
        k = k.map_stages(lambda st, p=p: _stage(st, p) if any(st is x for x in stages) else st)
    return k


def _find(st: Stmt, var: str) -> bool:
    return any(isinstance(s, For) and s.var == var for s in walk(st))


def _stage(st: Stmt, p: SoftwarePrefetch) -> Stmt:
    if not isinstance(st, For) or st.kind != LoopKind.PARALLEL:
        return st  # one chunk (its loop inlined) or none in parallel: no next chunk to fetch for
    if st.var == p.at:
        raise ScheduleError(f"prefetch: loop '{p.at}' must be inside its stage's parallel loop")
    chunk, chunks = Var(st.var), st.extent
    guard = Cmp("<", chunk + p.ahead, Const(chunks))

    def hinted(loop: For) -> For:
        hints = _hints(loop, p, chunk)
        return replace(loop, body=seq(IfThen(guard, seq(*hints)), loop.body)) if hints else loop

    if not _find(st, p.at):
        return hinted(st)
    return map_stmt(st, lambda s: hinted(s) if isinstance(s, For) and s.var == p.at else None)


def _hints(loop: For, p: SoftwarePrefetch, chunk: Var) -> list[Stmt]:
    """Chunk ``j``'s share of the lines chunk ``j + ahead`` reads in this iteration."""
    extents = {s.var: s.extent for s in walk(loop.body) if isinstance(s, For)}
    base: Expr | None = None
    lo = hi = 0
    for offset in accesses(loop.body, p.buffer)[0]:
        lin = linear(offset)
        inner = {a: c for a, c in lin.terms.items() if isinstance(a, Var) and a.name in extents}
        this_base = simplify(substitute(offset, {v: Const(0) for v in extents}), {})
        if any(free_vars(a) & set(extents) for a in lin.terms if a not in inner):
            raise ScheduleError(f"prefetch: {p.buffer}[{offset}] is not affine in the loops inside '{p.at}'")
        if base is not None and this_base != base:
            raise ScheduleError(f"prefetch: the reads of {p.buffer} inside '{p.at}' do not share one block")
        first = sum(min(0, c * (extents[a.name] - 1)) for a, c in inner.items())
        last = sum(max(0, c * (extents[a.name] - 1)) for a, c in inner.items())
        lo, hi = (first, last) if base is None else (min(lo, first), max(hi, last))
        base = this_base
    if base is None:
        return []
    lines = -(-(hi - lo + 1) // LINE_FLOATS)
    share = -(-lines // p.ahead)
    ahead = simplify(substitute(base, {chunk.name: chunk + p.ahead}), {})
    mine = (chunk % p.ahead) * share if p.ahead > 1 else Const(0)
    return [Prefetch(p.buffer, (ahead + (lo + i * LINE_FLOATS) + mine * LINE_FLOATS,)) for i in range(share)]

