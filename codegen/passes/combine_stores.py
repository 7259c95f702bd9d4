"""Store combining: a tile transposed in registers instead of scattered.

After vectorizing and unrolling, a tile often ends as ``T`` vector stores to
one buffer whose indices are ``ramp(base + i, S, L)`` for ``i = 0..T-1``:
vector ``i`` holds column ``i`` of ``L`` rows that are ``S`` apart. Each such
store alone is ``L`` scalar stores. Together they write ``L`` runs of ``T``
consecutive elements, so they become one store of ``interleave(v0, ...)``:

- ``S == T`` (packing NCHW into NCHW[T]c): the runs touch, the index is one
  contiguous ramp of ``T*L`` elements;
- ``S > T`` (the output tile of a direct or GEMM conv, ``T`` pixels of one
  row by ``L`` output channels, rows ``P*Q`` apart): ``rows(base, L x T,
  stride S)``, rendered as a transpose and ``L`` (masked) row stores.

Masked stores (a tile's last channels, see ``vectorize``) combine the same
way when they share a mask: the mask then selects rows.

Tail tiles keep their guards: a run of ``if c(i): store_i`` whose conditions
are affine in ``i`` (so they hold for all ``i`` once they hold for the first
and the last) becomes ``if c(0) and c(T-1): combined else: the run``.
"""
from __future__ import annotations

from dataclasses import dataclass

from convtune.ir.expr import INT, Cmp, Const, Expr, Interleave, Masked, Ramp, Rows, conj, conjuncts, loads
from convtune.ir.loopnest import IfThen, Kernel, Seq, Stmt, Store, map_stmt, seq
from convtune.ir.simplify import linear, simplify


@dataclass(frozen=True)
class _Part:
    """One strided vector store, perhaps under a guard."""

    stmt: Stmt
    store: Store
    ramp: Ramp
    cond: Expr | None
    mask: Masked | None
    """The lanes written, when not all are (the tile's last channels)."""


def _part(s: Stmt) -> _Part | None:
    cond = None
    if isinstance(s, IfThen) and s.orelse is None:
        cond, s_inner = s.cond, s.body
    else:
        s_inner = s
    if not isinstance(s_inner, Store):
        return None
    index = s_inner.indices[0]
    mask = index if isinstance(index, Masked) else None
    ramp = index.index if isinstance(index, Masked) else index
    if isinstance(ramp, Ramp) and ramp.stride >= 2:
        return _Part(s, s_inner, ramp, cond, mask)
    return None


def _affine_run(conds: list[Expr]) -> bool:
    """Whether every conjunct is an integer comparison whose sides differ
    along the run only by a constant moving a fixed step per store: then it
    is monotone along the run, true at both ends means true throughout."""
    parts = [conjuncts(c) for c in conds]
    if any(len(p) != len(parts[0]) for p in parts):
        return False
    for k, head in enumerate(parts[0]):
        if not (isinstance(head, Cmp) and head.a.dtype == INT):
            return False
        sides = []
        for p in parts:
            if not (isinstance(p[k], Cmp) and p[k].op == head.op):  # type: ignore[attr-defined]
                return False
            sides.append(linear(simplify(p[k].a - p[k].b)))  # type: ignore[attr-defined]
        step = sides[1].const - sides[0].const
        if any(x.terms != sides[0].terms or x.const - sides[0].const != i * step for i, x in enumerate(sides)):
            return False
    return True


def _run(stmts: tuple[Stmt, ...], at: int) -> list[_Part]:
    """The longest run of stores starting at ``at`` that write consecutive
    columns of one tile."""
    first = _part(stmts[at])
    if first is None:
        return []
    run = [first]
    while at + len(run) < len(stmts) and len(run) < first.ramp.stride:
        p = _part(stmts[at + len(run)])
        if p is None or p.store.buffer != first.store.buffer or (p.cond is None) != (first.cond is None):
            break
        if (p.mask and (p.mask.lo, p.mask.hi)) != (first.mask and (first.mask.lo, first.mask.hi)):
            break
        if (p.ramp.stride, p.ramp.lanes) != (first.ramp.stride, first.ramp.lanes):
            break
        if simplify(p.ramp.base - first.ramp.base) != Const(len(run)):
            break
        run.append(p)
    return run


def _combined(run: list[_Part]) -> Stmt | None:
    """One store for the whole run (under one guard), or None."""
    if len(run) < 2:
        return None
    buffer = run[0].store.buffer
    if any(ld.buffer == buffer for p in run for ld in loads(p.store.value)):
        return None  # a value reading the buffer must see the stores before it
    conds = [p.cond for p in run]
    if conds[0] is not None and not _affine_run(conds):  # type: ignore[arg-type]
        return None
    t, ramp, mask = len(run), run[0].ramp, run[0].mask
    index: Expr = (Ramp(ramp.base, 1, t * ramp.lanes) if t == ramp.stride and t & (t - 1) == 0 and mask is None
                   else Rows(ramp.base, t, ramp.stride, ramp.lanes))
    if mask is not None:  # lane l of every vector is row l
        index = Masked(index, mask.lo, mask.hi)
    store = Store(buffer, (index,), Interleave(tuple(p.store.value for p in run)))
    if conds[0] is None:
        return store
    return IfThen(conj(conds[0], conds[-1]), store, seq(*(p.stmt for p in run)))  # type: ignore[arg-type]


def combine_stores(k: Kernel) -> Kernel:
    def visit(s: Stmt) -> Stmt | None:
        if not isinstance(s, Seq):
            return None
        out: list[Stmt] = []
        i = 0
        while i < len(s.stmts):
            run = _run(s.stmts, i)
            combined = _combined(run)
            if combined is None:
                out.append(s.stmts[i])
                i += 1
            else:
                out.append(combined)
                i += len(run)
        return seq(*out)

    return k.map_stages(lambda st: map_stmt(st, visit))
