"""Integer index simplification over affine forms with interval bounds.

Lowering produces index expressions such as ``(co*8 + ci) // 8`` (a blocked
layout read through a split axis). Knowing ``0 <= ci < 8`` this is ``co``; the
generated loops are only fast when such terms fold away, so the simplifier
works like TVM's canonical simplifier: expressions are rewritten into sums of
``coefficient * atom`` and floor division / modulo by a constant are resolved
whenever the bounds of the non-divisible remainder allow it.
"""
from __future__ import annotations

from math import gcd
from typing import Optional

from convtune.ir.expr import (
    BOOL,
    INT,
    And,
    BinOp,
    Cmp,
    Const,
    Expr,
    IndexLoad,
    Not,
    Select,
    Var,
    conj,
    conjuncts,
    map_children,
)

Ranges = dict[str, tuple[int, int]]
"""Inclusive bounds (lo, hi) of loop variables."""

Bounds = Optional[tuple[int, int]]

TRUE = Const(1, BOOL)
FALSE = Const(0, BOOL)


class Linear:
    """``const + sum(coef * atom)``; atoms are expressions that are not sums."""

    __slots__ = ("terms", "const")

    def __init__(self, terms: dict[Expr, int] | None = None, const: int = 0) -> None:
        self.terms = {a: c for a, c in (terms or {}).items() if c != 0}
        self.const = const

    def __add__(self, other: Linear) -> Linear:
        terms = dict(self.terms)
        for a, c in other.terms.items():
            terms[a] = terms.get(a, 0) + c
        return Linear(terms, self.const + other.const)

    def scale(self, k: int) -> Linear:
        return Linear({a: c * k for a, c in self.terms.items()}, self.const * k)

    def to_expr(self) -> Expr:
        # Largest coefficients first: reads like a row-major offset.
        ordered = sorted(self.terms.items(), key=lambda t: (-abs(t[1]), str(t[0])))
        out: Expr | None = None
        for atom, coef in ordered:
            mag = abs(coef)
            term = atom if mag == 1 else BinOp("*", atom, Const(mag))
            if out is None:
                out = term if coef > 0 else BinOp("*", atom, Const(coef))
            else:
                out = BinOp("+" if coef > 0 else "-", out, term)
        if out is None:
            return Const(self.const)
        if self.const > 0:
            return BinOp("+", out, Const(self.const))
        if self.const < 0:
            return BinOp("-", out, Const(-self.const))
        return out


def linear(e: Expr) -> Linear:
    """The affine form of an (already simplified) integer expression."""
    if isinstance(e, Const):
        return Linear(const=int(e.value))
    if isinstance(e, BinOp) and e.op in "+-":
        rhs = linear(e.b)
        return linear(e.a) + (rhs if e.op == "+" else rhs.scale(-1))
    if isinstance(e, BinOp) and e.op == "*":
        if isinstance(e.b, Const):
            return linear(e.a).scale(int(e.b.value))
        if isinstance(e.a, Const):
            return linear(e.b).scale(int(e.a.value))
    return Linear({e: 1})


def merge_divmod(lin: Linear) -> Linear:
    """``(x // c) * c * k + (x % c) * k`` is ``x * k``: what indexing a fused
    axis (p*Q + q with p = f // Q, q = f % Q) turns into."""
    for atom, coef in lin.terms.items():
        if isinstance(atom, BinOp) and atom.op == "%" and isinstance(atom.b, Const):
            div = BinOp("//", atom.a, atom.b)
            if lin.terms.get(div) == coef * int(atom.b.value):
                rest = {a: c for a, c in lin.terms.items() if a not in (atom, div)}
                return merge_divmod(Linear(rest, lin.const) + linear(atom.a).scale(coef))
    return lin


def bounds(e: Expr, ranges: Ranges) -> Bounds:
    """Inclusive integer interval of ``e`` given variable ranges, or None."""
    if isinstance(e, Const):
        return (int(e.value), int(e.value))
    if isinstance(e, Var):
        return ranges.get(e.name)
    if isinstance(e, IndexLoad):
        return (e.lo, e.hi)
    if not isinstance(e, BinOp) or e.dtype != INT:
        return None
    a, b = bounds(e.a, ranges), bounds(e.b, ranges)
    if e.op == "%" and isinstance(e.b, Const) and e.b.value > 0:
        m = int(e.b.value)
        if a is not None and 0 <= a[0] and a[1] < m:
            return a
        return (0, m - 1)
    if a is None or b is None:
        return None
    if e.op == "+":
        return (a[0] + b[0], a[1] + b[1])
    if e.op == "-":
        return (a[0] - b[1], a[1] - b[0])
    if e.op == "*":
        products = [x * y for x in a for y in b]
        return (min(products), max(products))
    if e.op == "//" and b[0] > 0:
        quotients = [x // y for x in a for y in b]
        return (min(quotients), max(quotients))
    if e.op == "min":
        return (min(a[0], b[0]), min(a[1], b[1]))
    if e.op == "max":
        return (max(a[0], b[0]), max(a[1], b[1]))
    return None


def _linear_bounds(lin: Linear, ranges: Ranges) -> Bounds:
    lo = hi = lin.const
    for atom, coef in lin.terms.items():
        b = bounds(atom, ranges)
        if b is None:
            return None
        lo += min(coef * b[0], coef * b[1])
        hi += max(coef * b[0], coef * b[1])
    return (lo, hi)


def _factor_out(lin: Linear, c: int, ranges: Ranges) -> tuple[int, Linear, Linear] | None:
    """``lin`` as ``f * a + b`` with ``f`` a proper divisor of ``c`` (the
    largest that is some coefficient's common factor with ``c``) dividing the
    coefficients of ``a``, and ``0 <= b < f``; then
    ``lin // c == a // (c / f)`` and ``lin % c == (a % (c / f)) * f + b``.
    What a vector of ``f`` output channels within a group of ``c`` gives:
    ``(k_o * 16 + k_i) // 32`` is ``k_o // 2``."""
    for f in sorted({gcd(c, k) for k in lin.terms.values()} - {1, c}, reverse=True):
        big = {a: k for a, k in lin.terms.items() if k % f == 0}
        small = Linear({a: k for a, k in lin.terms.items() if k % f}, lin.const)
        sb = _linear_bounds(small, ranges)
        if sb is not None and sb[0] >= 0 and sb[1] < f:
            return f, Linear({a: k // f for a, k in big.items()}), small
    return None


def _divmod(lin: Linear, c: int, ranges: Ranges) -> tuple[Expr, Expr]:
    """Floor division and modulo of an affine form by a positive constant."""
    quot = Linear({a: k // c for a, k in lin.terms.items() if k % c == 0}, lin.const // c)
    rest = Linear({a: k for a, k in lin.terms.items() if k % c != 0}, lin.const % c)
    rb = _linear_bounds(rest, ranges)
    if rb is not None and rb[0] // c == rb[1] // c:
        k = rb[0] // c
        return (quot + Linear(const=k)).to_expr(), (rest + Linear(const=-k * c)).to_expr()
    scaled = _factor_out(rest, c, ranges)
    if scaled is not None:  # rest = f * a + b with f | c and 0 <= b < f
        f, a, b = scaled
        div, mod = _divmod(a, c // f, ranges)
        return (quot + linear(div)).to_expr(), (linear(mod).scale(f) + b).to_expr()
    rest_e = rest.to_expr()
    # (x // d) // c == x // (d * c) for positive d, c.
    if isinstance(rest_e, BinOp) and rest_e.op == "//" and isinstance(rest_e.b, Const):
        inner_div = BinOp("//", rest_e.a, Const(int(rest_e.b.value) * c))
    else:
        inner_div = BinOp("//", rest_e, Const(c))
    div = (quot + Linear({inner_div: 1})).to_expr()
    return div, BinOp("%", rest_e, Const(c))


def _fold(op: str, x: int | float, y: int | float) -> int | float:
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    if op == "//":
        return x // y
    if op == "%":
        return x % y
    if op == "min":
        return min(x, y)
    return max(x, y)


_CMP = {
    "<": lambda x, y: x < y,
    "<=": lambda x, y: x <= y,
    ">": lambda x, y: x > y,
    ">=": lambda x, y: x >= y,
    "==": lambda x, y: x == y,
    "!=": lambda x, y: x != y,
}


def _decide(op: str, a: Bounds, b: Bounds) -> Optional[bool]:
    """Whether ``a op b`` holds for all / no values in the intervals."""
    if a is None or b is None:
        return None
    if op == "<":
        return True if a[1] < b[0] else False if a[0] >= b[1] else None
    if op == "<=":
        return True if a[1] <= b[0] else False if a[0] > b[1] else None
    if op == ">":
        return _decide("<", b, a)
    if op == ">=":
        return _decide("<=", b, a)
    return None


def _undivided(op: str, a: Expr, b: Expr) -> Cmp | None:
    """``x // c + k  op  d`` as a comparison of ``x`` itself (``c > 0``, floor
    division, so ``x // c < d`` is ``x < c*d`` for every integer ``x``).

    The tail guard of a fused pixel axis (a 1x1 conv's p*Q + q) compares the
    row ``f // Q`` with ``P``; undivided it is affine in the vector lane, so
    the vectorizer masks one load instead of guarding each lane's."""
    lin = linear(a)
    if not isinstance(b, Const) or len(lin.terms) != 1:
        return None
    (atom, coef), = lin.terms.items()
    if coef != 1 or not (isinstance(atom, BinOp) and atom.op == "//" and isinstance(atom.b, Const)
                         and int(atom.b.value) > 0):
        return None
    c, d = int(atom.b.value), int(b.value) - lin.const
    bound = {"<": ("<", c * d), "<=": ("<", c * (d + 1)), ">=": (">=", c * d), ">": (">=", c * (d + 1))}.get(op)
    if bound is None:
        return None
    x = linear(atom.a)  # its constant joins the bound: f + 8 < 168 reads f < 160
    return Cmp(bound[0], Linear(x.terms).to_expr(), Const(bound[1] - x.const))


def simplify(e: Expr, ranges: Ranges | None = None) -> Expr:
    """Rewrite ``e`` into canonical form; ``ranges`` bound the free variables."""
    r = ranges or {}
    if isinstance(e, (Const, Var)):
        return e
    if isinstance(e, BinOp):
        return _simplify_binop(e, r)
    if isinstance(e, Cmp):
        a, b = simplify(e.a, r), simplify(e.b, r)
        if isinstance(a, Const) and isinstance(b, Const):
            return TRUE if _CMP[e.op](a.value, b.value) else FALSE
        if a.dtype == INT:
            verdict = _decide(e.op, bounds(a, r), bounds(b, r))
            if verdict is not None:
                return TRUE if verdict else FALSE
            undivided = _undivided(e.op, a, b)
            if undivided is not None:
                return simplify(undivided, r)
        return Cmp(e.op, a, b)
    if isinstance(e, And):
        a, b = simplify(e.a, r), simplify(e.b, r)
        if a == FALSE or b == FALSE:
            return FALSE
        if a == TRUE:
            return b
        if b == TRUE:
            return a
        return And(a, b)
    if isinstance(e, Not):
        a = simplify(e.a, r)
        return FALSE if a == TRUE else TRUE if a == FALSE else Not(a)
    if isinstance(e, Select):
        cond = simplify(e.cond, r)
        if cond == TRUE:
            return simplify(e.t, r)
        if cond == FALSE:
            return simplify(e.f, r)
        return Select(cond, simplify(e.t, r), simplify(e.f, r))
    return map_children(e, lambda c: simplify(c, r))


def _simplify_binop(e: BinOp, r: Ranges) -> Expr:
    a, b = simplify(e.a, r), simplify(e.b, r)
    if isinstance(a, Const) and isinstance(b, Const) and a.lanes == b.lanes == 1:
        if e.op in ("//", "%") and b.value == 0:
            raise ZeroDivisionError(f"division by zero in {e}")
        return Const(_fold(e.op, a.value, b.value), a.dtype)
    if a.dtype != INT or a.lanes > 1 or b.lanes > 1:
        return _simplify_float(e.op, a, b)
    if e.op in ("+", "-", "*"):
        lin = merge_divmod(linear(BinOp(e.op, a, b)))
        if e.op != "*" or isinstance(a, Const) or isinstance(b, Const):
            return lin.to_expr()
        return BinOp("*", a, b)
    if e.op in ("//", "%") and isinstance(b, Const) and b.value > 0:
        div, mod = _divmod(linear(a), int(b.value), r)
        return div if e.op == "//" else mod
    if e.op in ("min", "max"):
        ba, bb = bounds(a, r), bounds(b, r)
        if ba is not None and bb is not None:
            if ba[1] <= bb[0]:
                return a if e.op == "min" else b
            if bb[1] <= ba[0]:
                return b if e.op == "min" else a
    return BinOp(e.op, a, b)


def _simplify_float(op: str, a: Expr, b: Expr) -> Expr:
    """Only identities that are exact in IEEE arithmetic."""
    if op == "*" and isinstance(b, Const) and b.value == 1:
        return a
    if op == "*" and isinstance(a, Const) and a.value == 1:
        return b
    return BinOp(op, a, b)


def simplify_cond(e: Expr, ranges: Ranges | None = None) -> Expr:
    """Simplify a condition; splits conjunctions so each part folds separately."""
    kept: list[Expr] = []
    for p in conjuncts(e):
        s = simplify(p, ranges)
        if s == FALSE:
            return FALSE
        if s != TRUE and s not in kept:
            kept.append(s)
    return conj(*kept) or TRUE
