"""Expression nodes shared by the compute definition and the loop-nest IR.

Expressions are immutable and hashable so passes can rewrite them freely and
use them as dictionary keys. Index arithmetic is integer (int64 at run time);
tensor values are float32. Vector forms (``Ramp``, ``Broadcast``) only appear
after the vectorize pass, mirroring TVM's TIR.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Callable, Union

INT = "int"
FLOAT = "float"
BOOL = "bool"


class Expr:
    """Base class; the operators build new nodes so templates read like math."""

    dtype: str = INT
    lanes: int = 1

    def __add__(self, other: ExprLike) -> Expr:
        return BinOp("+", self, as_expr(other))

    def __radd__(self, other: ExprLike) -> Expr:
        return BinOp("+", as_expr(other), self)

    def __sub__(self, other: ExprLike) -> Expr:
        return BinOp("-", self, as_expr(other))

    def __rsub__(self, other: ExprLike) -> Expr:
        return BinOp("-", as_expr(other), self)

    def __mul__(self, other: ExprLike) -> Expr:
        return BinOp("*", self, as_expr(other))

    def __rmul__(self, other: ExprLike) -> Expr:
        return BinOp("*", as_expr(other), self)

    def __floordiv__(self, other: ExprLike) -> Expr:
        return BinOp("//", self, as_expr(other))

    def __mod__(self, other: ExprLike) -> Expr:
        return BinOp("%", self, as_expr(other))

    def __lt__(self, other: ExprLike) -> Expr:  # type: ignore[override]
        return Cmp("<", self, as_expr(other))

    def __le__(self, other: ExprLike) -> Expr:  # type: ignore[override]
        return Cmp("<=", self, as_expr(other))

    def __gt__(self, other: ExprLike) -> Expr:  # type: ignore[override]
        return Cmp(">", self, as_expr(other))

    def __ge__(self, other: ExprLike) -> Expr:  # type: ignore[override]
        return Cmp(">=", self, as_expr(other))

    def __str__(self) -> str:
        from convtune.ir.printer import expr_str

        return expr_str(self)


ExprLike = Union[Expr, int, float]


@dataclass(frozen=True, eq=True)
class Const(Expr):
    value: Union[int, float]
    dtype: str = INT

    def __post_init__(self) -> None:
        if self.dtype == INT and not isinstance(self.value, int):
            raise TypeError(f"integer constant expected, got {self.value!r}")


@dataclass(frozen=True, eq=True)
class Var(Expr):
    """A loop variable, or (with ``lanes`` > 1) a vector register variable."""

    name: str
    dtype: str = INT
    lanes: int = 1


@dataclass(frozen=True, eq=True)
class BinOp(Expr):
    """Arithmetic: + - * // % min max. Floats and ints never mix implicitly."""

    op: str
    a: Expr
    b: Expr

    @property
    def dtype(self) -> str:  # type: ignore[override]
        return self.a.dtype

    @property
    def lanes(self) -> int:  # type: ignore[override]
        return max(self.a.lanes, self.b.lanes)


@dataclass(frozen=True, eq=True)
class Cmp(Expr):
    op: str
    a: Expr
    b: Expr
    dtype: str = BOOL

    @property
    def lanes(self) -> int:  # type: ignore[override]
        return max(self.a.lanes, self.b.lanes)


@dataclass(frozen=True, eq=True)
class And(Expr):
    a: Expr
    b: Expr
    dtype: str = BOOL

    @property
    def lanes(self) -> int:  # type: ignore[override]
        return max(self.a.lanes, self.b.lanes)


@dataclass(frozen=True, eq=True)
class Not(Expr):
    a: Expr
    dtype: str = BOOL

    @property
    def lanes(self) -> int:  # type: ignore[override]
        return self.a.lanes


@dataclass(frozen=True, eq=True)
class Select(Expr):
    """``t if cond else f``; both branches are evaluated (they must be safe)."""

    cond: Expr
    t: Expr
    f: Expr

    @property
    def dtype(self) -> str:  # type: ignore[override]
        return self.t.dtype

    @property
    def lanes(self) -> int:  # type: ignore[override]
        return max(self.cond.lanes, self.t.lanes, self.f.lanes)


@dataclass(frozen=True, eq=True)
class Load(Expr):
    """Read of ``buffer`` at ``indices`` (one per dimension, or one flat offset)."""

    buffer: str
    indices: tuple[Expr, ...]
    dtype: str = FLOAT

    @property
    def lanes(self) -> int:  # type: ignore[override]
        return max(i.lanes for i in self.indices)


@dataclass(frozen=True, eq=True)
class IndexLoad(Expr):
    """An integer read from the index table ``buffer`` at ``indices``: an
    indirect (load-of-a-load) index such as the indirect convolution's input
    offsets. The table is built once, before any call, by code that
    guarantees every entry lies in ``[lo, hi]``; that range is what the
    bounds proof and the simplifier know of the value."""

    buffer: str
    indices: tuple[Expr, ...]
    lo: int
    hi: int
    dtype: str = INT

    @property
    def lanes(self) -> int:  # type: ignore[override]
        return max(i.lanes for i in self.indices)


@dataclass(frozen=True, eq=True)
class MaskedLoad(Expr):
    """A vector read at ``index`` (a Ramp) in which only the lanes whose element
    offset ``j = lane * stride`` satisfies ``lo <= j < hi`` touch memory; the
    others are 0. What a padding test becomes when it is affine in the lane."""

    buffer: str
    index: Expr
    lo: Expr
    hi: Expr
    dtype: str = FLOAT

    @property
    def lanes(self) -> int:  # type: ignore[override]
        return self.index.lanes


@dataclass(frozen=True, eq=True)
class Ramp(Expr):
    """The vector ``base + stride * [0, 1, ..., lanes-1]`` (an index vector)."""

    base: Expr
    stride: int
    lanes: int


@dataclass(frozen=True, eq=True)
class Rows(Expr):
    """``count`` runs of ``length`` consecutive indices, ``stride`` apart:
    lane ``r * length + j`` is ``base + r * stride + j`` (the index of a
    transposed tile store: one row of the tile per output channel)."""

    base: Expr
    length: int
    stride: int
    count: int

    @property
    def lanes(self) -> int:  # type: ignore[override]
        return self.length * self.count


@dataclass(frozen=True, eq=True)
class Masked(Expr):
    """A store index (a Ramp, or Rows) of which only lanes (of Rows: rows)
    ``lo <= i < hi`` are written: the last vector of a tile that runs past a
    tensor's edge, one masked store instead of a scalar store per lane."""

    index: Expr
    lo: Expr
    hi: Expr

    @property
    def lanes(self) -> int:  # type: ignore[override]
        return self.index.lanes


@dataclass(frozen=True, eq=True)
class Broadcast(Expr):
    value: Expr
    lanes: int

    @property
    def dtype(self) -> str:  # type: ignore[override]
        return self.value.dtype


@dataclass(frozen=True, eq=True)
class Lanes(Expr):
    """A vector assembled lane by lane (irregular gathers, per-lane guards)."""

    elems: tuple[Expr, ...]

    @property
    def dtype(self) -> str:  # type: ignore[override]
        return self.elems[0].dtype

    @property
    def lanes(self) -> int:  # type: ignore[override]
        return len(self.elems)


@dataclass(frozen=True, eq=True)
class Interleave(Expr):
    """Vectors zipped lane by lane: lane ``j * len(vecs) + i`` is lane ``j`` of
    ``vecs[i]``. Storing it is the transpose that blocked layouts need
    (channel rows in, channel-innermost blocks out)."""

    vecs: tuple[Expr, ...]

    @property
    def dtype(self) -> str:  # type: ignore[override]
        return self.vecs[0].dtype

    @property
    def lanes(self) -> int:  # type: ignore[override]
        return sum(v.lanes for v in self.vecs)


@dataclass(frozen=True, eq=True)
class Extract(Expr):
    """Lane ``lane`` of a vector."""

    vec: Expr
    lane: int

    @property
    def dtype(self) -> str:  # type: ignore[override]
        return self.vec.dtype


FUNCTIONS = ("exp", "sigmoid", "tanh")
"""The float functions a ``Call`` may apply: what the fused epilogue's
activations need beyond arithmetic and min/max."""


@dataclass(frozen=True, eq=True)
class Call(Expr):
    """``fn(arg)`` lane-wise, ``fn`` one of ``FUNCTIONS``."""

    fn: str
    arg: Expr
    dtype: str = FLOAT

    def __post_init__(self) -> None:
        if self.fn not in FUNCTIONS:
            raise ValueError(f"call: {self.fn!r} is not one of {', '.join(FUNCTIONS)}")

    @property
    def lanes(self) -> int:  # type: ignore[override]
        return self.arg.lanes


def as_expr(x: ExprLike) -> Expr:
    if isinstance(x, Expr):
        return x
    if isinstance(x, bool):
        raise TypeError("booleans are not expressions")
    if isinstance(x, int):
        return Const(x)
    if isinstance(x, float):
        return Const(x, FLOAT)
    raise TypeError(f"cannot make an expression from {x!r}")


def fconst(x: float) -> Const:
    return Const(float(x), FLOAT)


def emin(a: ExprLike, b: ExprLike) -> Expr:
    return BinOp("min", as_expr(a), as_expr(b))


def emax(a: ExprLike, b: ExprLike) -> Expr:
    return BinOp("max", as_expr(a), as_expr(b))


def conj(*conds: Expr) -> Expr | None:
    """AND of the given conditions, or None when there are none."""
    out: Expr | None = None
    for c in conds:
        out = c if out is None else And(out, c)
    return out


def conjuncts(c: Expr) -> list[Expr]:
    """The parts of a conjunction (``a and b and c`` -> [a, b, c])."""
    return conjuncts(c.a) + conjuncts(c.b) if isinstance(c, And) else [c]


def children(e: Expr) -> tuple[Expr, ...]:
    out: list[Expr] = []
    for f in fields(e):  # type: ignore[arg-type]
        v = getattr(e, f.name)
        if isinstance(v, Expr):
            out.append(v)
        elif isinstance(v, tuple):
            out.extend(x for x in v if isinstance(x, Expr))
    return tuple(out)


def map_children(e: Expr, fn: Callable[[Expr], Expr]) -> Expr:
    """``e`` rebuilt with ``fn`` applied to each child expression."""
    changes: dict[str, object] = {}
    for f in fields(e):  # type: ignore[arg-type]
        v = getattr(e, f.name)
        if isinstance(v, Expr):
            changes[f.name] = fn(v)
        elif isinstance(v, tuple) and v and isinstance(v[0], Expr):
            changes[f.name] = tuple(fn(x) for x in v)
    return replace(e, **changes) if changes else e  # type: ignore[type-var]


def free_vars(e: Expr) -> set[str]:
    if isinstance(e, Var):
        return {e.name}
    out: set[str] = set()
    for c in children(e):
        out |= free_vars(c)
    return out


def substitute(e: Expr, mapping: dict[str, Expr]) -> Expr:
    """Replace variables by expressions (no simplification)."""
    if isinstance(e, Var):
        return mapping.get(e.name, e)
    return map_children(e, lambda c: substitute(c, mapping))


def reads_memory(e: Expr) -> bool:
    """Whether evaluating ``e`` reads a buffer (a tensor or an index table)."""
    return isinstance(e, (Load, MaskedLoad, IndexLoad)) or any(reads_memory(c) for c in children(e))


def loads(e: Expr) -> list[Load]:
    """All loads in ``e`` (outermost first)."""
    out: list[Load] = [e] if isinstance(e, Load) else []
    for c in children(e):
        out.extend(loads(c))
    return out
