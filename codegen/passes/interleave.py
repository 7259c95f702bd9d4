"""Store combining: ``B`` vector stores to one buffer with indices
``ramp(base + i, B, L)``, ``i = 0..B-1``, together fill the contiguous run
``base .. base + B*L - 1``. They become one store of ``interleave(v0, ...)``:
a transpose in registers (B * log2(B) two-vector shuffles) and ``B``
contiguous vector stores, where each scatter alone costs ``L`` scalar stores.
This is the NCHW -> NCHW[x]c packing of every blocked template.
"""
from __future__ import annotations

from ir.expr import Const, Interleave, Ramp, loads
from ir.loopnest import Kernel, Seq, Stmt, Store, map_stmt, seq
from ir.simplify import simplify


def _scatter(s: Stmt) -> Ramp | None:
    """The index of a store of a vector with a power-of-two stride >= 2."""
    if isinstance(s, Store) and isinstance(s.indices[0], Ramp):
        r = s.indices[0]
        if r.stride >= 2 and r.stride & (r.stride - 1) == 0:
            return r
    return None


def _group(stmts: tuple[Stmt, ...], at: int) -> Store | None:
    """The combined store of ``stmts[at : at + B]``, if they form a group."""
    first = stmts[at]
    ramp = _scatter(first)
    if ramp is None or at + ramp.stride > len(stmts):
        return None
    group = stmts[at:at + ramp.stride]
    for i, s in enumerate(group):
        r = _scatter(s)
        if r is None or s.buffer != first.buffer or (r.stride, r.lanes) != (ramp.stride, ramp.lanes):  # type: ignore[attr-defined]
            return None
        if simplify(r.base - ramp.base) != Const(i):
            return None
        if any(ld.buffer == first.buffer for ld in loads(s.value)):  # type: ignore[attr-defined]
            return None  # a value that reads the buffer must see the earlier stores
    values = tuple(s.value for s in group)  # type: ignore[attr-defined]
    return Store(first.buffer, (Ramp(ramp.base, 1, ramp.stride * ramp.lanes),), Interleave(values))  # type: ignore[attr-defined]


def interleave_stores(k: Kernel) -> Kernel:
    def visit(s: Stmt) -> Stmt | None:
        if not isinstance(s, Seq):
            return None
        out: list[Stmt] = []
        i = 0
        while i < len(s.stmts):
            combined = _group(s.stmts, i)
            if combined is None:
                out.append(s.stmts[i])
                i += 1
            else:
                out.append(combined)
                i += combined.indices[0].lanes // s.stmts[i].indices[0].lanes  # type: ignore[attr-defined]
        return seq(*out)

    return k.map_stages(lambda st: map_stmt(st, visit))
