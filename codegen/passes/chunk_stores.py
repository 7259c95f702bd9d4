"""Vector stores whose lanes fall into contiguous chunks become one vector
store per chunk.

A register tile of ``kb`` output channels written into a blocked layout of
a smaller block ``B`` (a conv with kb = 32 feeding one that reads NCHW16c in
place) stores ``kb / B`` runs of ``B`` consecutive elements, one block apart.
The vectorizer sees an index that is not affine in the lane and falls back
to one scalar store per lane; this pass finds the runs (lane offsets that
differ by constants) and writes each as a contiguous store of the value's
lanes (LLVM turns the lane extracts into a subvector shuffle).
"""
from __future__ import annotations

from dataclasses import replace
from itertools import count

from convtune.ir.expr import FLOAT, Const, Extract, Lanes, Ramp, Var
from convtune.ir.loopnest import Assign, Kernel, Stmt, Store, map_stmt, seq
from convtune.ir.simplify import simplify

MIN_CHUNK = 4
"""Shorter runs stay scalar stores (a vector of fewer lanes gains little)."""


def chunk_length(offsets: list[int]) -> int | None:
    """The longest power-of-two run length (at least MIN_CHUNK) that cuts
    ``offsets`` into runs of consecutive elements, or None."""
    length = len(offsets)
    while length >= MIN_CHUNK:
        if len(offsets) % length == 0 and all(
                offsets[r + j] == offsets[r] + j for r in range(0, len(offsets), length) for j in range(length)):
            return length
        length //= 2
    return None


def chunk_stores(kernel: Kernel) -> Kernel:
    names = count()

    def visit(s: Stmt) -> Stmt | None:
        if not (isinstance(s, Store) and len(s.indices) == 1 and isinstance(s.indices[0], Lanes)):
            return None
        elems = s.indices[0].elems
        deltas = [simplify(e - elems[0]) for e in elems]
        if not all(isinstance(d, Const) for d in deltas):
            return None
        length = chunk_length([int(d.value) for d in deltas])  # type: ignore[attr-defined]
        if length is None:
            return None
        if length == len(elems):
            return Store(s.buffer, (Ramp(elems[0], 1, length),), s.value)
        tmp = Var(f"_chunk{next(names)}", FLOAT, len(elems))
        stores = [Store(s.buffer, (Ramp(elems[r], 1, length),),
                        Lanes(tuple(Extract(tmp, r + j) for j in range(length))))
                  for r in range(0, len(elems), length)]
        return seq(Assign(tmp.name, s.value), *stores)

    return replace(kernel, stages=tuple(map_stmt(st, visit) for st in kernel.stages))
