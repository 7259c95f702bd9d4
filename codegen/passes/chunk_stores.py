"""Vector stores whose lanes fall into contiguous chunks become one vector
store per chunk.

A register tile of ``kb`` output channels written into a blocked layout of
a smaller block ``B`` (a conv with kb = 32 feeding one that reads NCHW16c in
place) stores ``kb / B`` runs of ``B`` consecutive elements, one block apart.
The vectorizer sees an index that is not affine in the lane and falls back
to one scalar store per lane; this pass finds the runs (lane offsets that
differ by constants) and writes each as a contiguous store of the value's
lanes (LLVM turns the lane extracts into a subvector shuffle). The
vectorizer cuts the masked stores of a tile's ragged last vector into the
same runs (``run_stores`` with a mask).
"""
from __future__ import annotations

from dataclasses import replace
from itertools import count

from convtune.ir.expr import FLOAT, Const, Expr, Extract, Lanes, Masked, Ramp, Var, emax, emin
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


def run_length(index: Lanes) -> int | None:
    """The length of the runs of consecutive elements a per-lane store index
    is cut into (lane offsets that differ by constants), or None."""
    deltas = [simplify(e - index.elems[0]) for e in index.elems]
    if not all(isinstance(d, Const) for d in deltas):
        return None
    return chunk_length([int(d.value) for d in deltas])  # type: ignore[attr-defined]


def run_stores(buffer: str, index: Lanes, length: int, value: Expr, tmp: str,
               mask: tuple[Expr, Expr] | None = None) -> Stmt:
    """``value`` assigned to ``tmp`` once, then stored to ``index`` as one
    contiguous vector store per run of ``length`` lanes; with ``mask``
    (lo, hi), only lanes lo <= i < hi (masked stores, each run's window)."""
    lanes = len(index.elems)
    var = Var(tmp, FLOAT, lanes)
    stores: list[Stmt] = []
    for r in range(0, lanes, length):
        at: Expr = Ramp(index.elems[r], 1, length)
        if mask is not None:
            at = Masked(at, simplify(emax(mask[0] - r, Const(0))), simplify(emin(mask[1] - r, Const(length))))
        stores.append(Store(buffer, (at,), Lanes(tuple(Extract(var, r + j) for j in range(length)))))
    return seq(Assign(tmp, value), *stores)


def chunk_stores(kernel: Kernel) -> Kernel:
    names = count()

    def visit(s: Stmt) -> Stmt | None:
        if not (isinstance(s, Store) and len(s.indices) == 1 and isinstance(s.indices[0], Lanes)):
            return None
        index = s.indices[0]
        length = run_length(index)
        if length is None:
            return None
        if length == len(index.elems):
            return Store(s.buffer, (Ramp(index.elems[0], 1, length),), s.value)
        return run_stores(s.buffer, index, length, s.value, f"_chunk{next(names)}")

    return replace(kernel, stages=tuple(map_stmt(st, visit) for st in kernel.stages))
