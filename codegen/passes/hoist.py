"""Hoist index arithmetic out of inner loops and share it between accesses.

Every flat offset is an affine sum of terms, each owned by the innermost loop
whose variable it uses. The offset is rebuilt as a chain of partial sums, one
per loop level, each assigned once at the top of its loop's body and shared
by every access with the same prefix, the innermost loop's too (hoisting
runs after unrolling, so that loop stays); the access itself keeps only a
constant, `i6 + 8` rather than `i0 + (tw * 32 + 8)`:

    for c_o ...:                      for c_o ...:
      for r ...:                        i2 = i1 + c_o * 1152
        w = weight[n // 56 * 9216        for r ...:
          + c_o * 1152 + r * 384]          i3 = i2 + r * 384
                                           w = weight[i3]

LLVM would find this too, but only after Numba has typed and lowered every
repeated subexpression; on transform-heavy kernels that dominated build time.
"""
from __future__ import annotations

from dataclasses import replace

from convtune.ir.expr import INT, Const, Expr, IndexLoad, Lanes, Load, Masked, MaskedLoad, Ramp, Rows, Var, free_vars, map_children
from convtune.ir.loopnest import Allocate, Assign, For, IfThen, Kernel, Prefetch, Seq, Stmt, Store, seq, walk
from convtune.ir.simplify import Linear, linear


class _Hoister:
    def __init__(self, taken: frozenset[str] = frozenset()) -> None:
        self.stack: list[str] = []
        self.pending: list[list[Stmt]] = []
        self.memo: dict[tuple[int, frozenset], Var] = {}
        self.count = 0
        self.taken = taken
        """Loop variables of the stage: a temporary named like one would shadow it."""

    def _level(self, atom: Expr) -> int:
        return max((self.stack.index(v) for v in free_vars(atom) if v in self.stack), default=-1)

    def offset(self, e: Expr) -> Expr:
        if e.dtype != INT or e.lanes > 1 or isinstance(e, (Const, Var)):
            return e
        lin = linear(e)
        levels: dict[int, dict[Expr, int]] = {}
        for atom, coef in lin.terms.items():
            # An index table's read is placed by its own index's loops; that
            # index is hoisted like any other (into temporaries of those loops).
            hoisted = self.expr(atom) if isinstance(atom, IndexLoad) else atom
            levels.setdefault(self._level(atom), {})[hoisted] = coef
        if max(levels, default=-1) < 0:
            return e
        prefix: Expr | None = None
        terms: dict[Expr, int] = {}
        for level in sorted(levels):
            terms.update(levels[level])
            prefix = self._partial(max(level, 0), frozenset(terms.items()), prefix, levels[level])
        assert prefix is not None
        rest = Linear({}, lin.const).to_expr()
        return prefix + rest if rest != Const(0) else prefix

    def _partial(self, level: int, key: frozenset, prev: Expr | None, new_terms: dict[Expr, int]) -> Var:
        if (level, key) not in self.memo:
            value = Linear(new_terms).to_expr()
            while f"i{self.count}" in self.taken:
                self.count += 1
            var = Var(f"i{self.count}")
            self.count += 1
            self.pending[level].append(Assign(var.name, value if prev is None else prev + value))
            self.memo[(level, key)] = var
        return self.memo[(level, key)]

    def expr(self, e: Expr) -> Expr:
        if isinstance(e, Load):
            return Load(e.buffer, tuple(self.index(i) for i in e.indices), e.dtype)
        if isinstance(e, IndexLoad):
            return replace(e, indices=tuple(self.index(i) for i in e.indices))
        if isinstance(e, MaskedLoad):
            return replace(e, index=self.index(e.index), lo=self.offset(e.lo), hi=self.offset(e.hi))
        return map_children(e, self.expr)

    def index(self, i: Expr) -> Expr:
        if isinstance(i, Masked):
            return replace(i, index=self.index(i.index), lo=self.offset(i.lo), hi=self.offset(i.hi))
        if isinstance(i, (Ramp, Rows)):
            return replace(i, base=self.offset(i.base))
        if isinstance(i, Lanes):
            return Lanes(tuple(self.offset(x) for x in i.elems))
        return self.offset(i)

    def stmt(self, s: Stmt) -> Stmt:
        if isinstance(s, For):
            self.stack.append(s.var)
            self.pending.append([])
            body = self.stmt(s.body)
            hoisted = self.pending.pop()
            level = len(self.stack) - 1
            self.stack.pop()
            self.memo = {k: v for k, v in self.memo.items() if k[0] != level}
            return replace(s, body=seq(*hoisted, body))
        if isinstance(s, Seq):
            return seq(*(self.stmt(x) for x in s.stmts))
        if isinstance(s, IfThen):
            return IfThen(self.expr(s.cond), self.stmt(s.body), None if s.orelse is None else self.stmt(s.orelse))
        if isinstance(s, Allocate):
            return replace(s, body=self.stmt(s.body))
        if isinstance(s, Store):
            return Store(s.buffer, tuple(self.index(i) for i in s.indices), self.expr(s.value))
        if isinstance(s, Assign):
            return Assign(s.var, self.expr(s.value))
        if isinstance(s, Prefetch):
            return Prefetch(s.buffer, tuple(self.index(i) for i in s.indices))
        return s


def hoist_indices(k: Kernel) -> Kernel:
    """Each stage is hoisted on its own: stages become separate functions, so
    temporaries must not cross them."""
    def stage(st: Stmt) -> Stmt:
        return _Hoister(frozenset(x.var for x in walk(st) if isinstance(x, For))).stmt(st)

    return k.map_stages(stage)
