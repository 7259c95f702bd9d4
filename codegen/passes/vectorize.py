"""Turn each vectorized loop into vector expressions (TVM's Ramp/Broadcast).

For a loop ``for v in vectorized(L)`` every access is classified by how its
flat offset depends on ``v``: not at all (a scalar, broadcast when combined
with vectors), affinely with stride 1 (a contiguous vector load/store), with
another constant stride (gather/scatter), or irregularly (lane by lane).
A guard or padding test that depends on ``v`` is evaluated lane by lane, so
masked lanes never touch memory.
"""
from __future__ import annotations

from itertools import count
from typing import Iterator

from convtune.codegen.passes.chunk_stores import run_length, run_stores
from convtune.codegen.passes.simplify import simplify_stmt
from convtune.codegen.passes.substitute import substitute_stmt
from convtune.ir.expr import (
    FLOAT,
    INT,
    BinOp,
    Broadcast,
    Call,
    Cmp,
    Const,
    Expr,
    Extract,
    Lanes,
    Load,
    Masked,
    MaskedLoad,
    Ramp,
    Select,
    Var,
    conj,
    conjuncts,
    emax,
    emin,
    fconst,
    free_vars,
    loads,
    substitute,
)
from convtune.ir.loopnest import Allocate, Assign, For, IfThen, Kernel, LoopKind, Seq, Stmt, Store, map_stmt, seq, walk
from convtune.ir.simplify import linear, simplify
from convtune.schedules.state import ScheduleError


def _at_lane(e: Expr, v: str, i: int) -> Expr:
    return simplify(substitute(e, {v: Const(i)}))


def _vector_index(off: Expr, v: str, lanes: int) -> Expr:
    """``off`` as a function of lane: Ramp when affine in v, else Lanes."""
    lin = linear(off)
    coef = lin.terms.get(Var(v), 0)
    others_use_v = any(v in free_vars(atom) for atom in lin.terms if atom != Var(v))
    if not others_use_v:
        return Ramp(_at_lane(off, v, 0), coef, lanes)
    return Lanes(tuple(_at_lane(off, v, i) for i in range(lanes)))


def _widen(e: Expr, lanes: int) -> Expr:
    return e if e.lanes > 1 else Broadcast(e, lanes)


class _Lanes:
    """The loop being vectorized: its variable, its width, the vector
    temporaries assigned in its body so far, the local buffers (which cover
    every lane), and while a masked store's value is vectorized, the lanes
    ``[lo, hi)`` it may read for."""

    def __init__(self, v: str, lanes: int, local: frozenset[str], names: Iterator[int]) -> None:
        self.v = v
        self.lanes = lanes
        self.temps: set[str] = set()
        self.local = local
        self.mask: tuple[Expr, Expr] | None = None
        self.names = names
        """Numbers for the kernel's fresh temporaries (unique across its loops)."""

    def varies(self, e: Expr) -> bool:
        fv = free_vars(e)
        return self.v in fv or bool(fv & self.temps)

    def temp(self, name: str) -> Expr:
        return Var(name, FLOAT, self.lanes)


class _Unmaskable(Exception):
    """A read under a lane mask that cannot itself be masked."""


def vectorize_expr(e: Expr, ctx: _Lanes) -> Expr:
    v, lanes = ctx.v, ctx.lanes
    if not ctx.varies(e):
        return e
    if isinstance(e, Var):
        return ctx.temp(e.name)
    if isinstance(e, Load):
        index = _vector_index(e.indices[0], v, lanes)
        if ctx.mask is None or e.buffer in ctx.local:
            return Load(e.buffer, (index,), e.dtype)
        if not (isinstance(index, Ramp) and index.stride > 0):
            raise _Unmaskable(f"{e.buffer}[{index}]")
        lo, hi = ctx.mask
        return MaskedLoad(e.buffer, index, simplify(lo * index.stride), simplify(hi * index.stride))
    if isinstance(e, Select):
        value_test = isinstance(e.cond, Cmp) and e.cond.a.dtype == FLOAT
        if v in free_vars(e.cond) and not value_test:
            if ctx.mask is not None:
                raise _Unmaskable(f"{e}")
            # An index test (e.g. padding): a masked load when the test is a
            # range of lanes, else each lane is evaluated on its own.
            masked = _masked_load(e, ctx)
            if masked is not None:
                return masked
            return Lanes(tuple(_at_lane(_lane_of_temps(e, ctx, i), v, i) for i in range(lanes)))
        cond = e.cond
        # A test the same for every lane stays scalar: rendered as Python's
        # lazy conditional, its branch that reads outside a tensor (a
        # padding test guarding a load) is never evaluated.
        if isinstance(cond, Cmp) and ctx.varies(cond):
            cond = Cmp(cond.op, _widen(vectorize_expr(cond.a, ctx), lanes), _widen(vectorize_expr(cond.b, ctx), lanes))
        return Select(cond, _widen(vectorize_expr(e.t, ctx), lanes), _widen(vectorize_expr(e.f, ctx), lanes))
    if isinstance(e, BinOp) and e.dtype == FLOAT:
        return BinOp(e.op, _widen(vectorize_expr(e.a, ctx), lanes), _widen(vectorize_expr(e.b, ctx), lanes))
    if isinstance(e, Call):
        return Call(e.fn, vectorize_expr(e.arg, ctx))
    raise ScheduleError(f"vectorize: cannot vectorize expression {e} over '{v}'")


def _masked_load(e: Select, ctx: _Lanes) -> Expr | None:
    """``select(cond, load, 0)`` with ``cond`` a conjunction of bounds on the
    load's own (affine, positive-stride) offset: a masked vector load."""
    if not (isinstance(e.t, Load) and isinstance(e.f, Const) and e.f.value == 0.0):
        return None
    index = _vector_index(e.t.indices[0], ctx.v, ctx.lanes)
    if not (isinstance(index, Ramp) and index.stride > 0):
        return None
    uniform = [c for c in conjuncts(e.cond) if ctx.v not in free_vars(c)]
    span = _offset_range([c for c in conjuncts(e.cond) if ctx.v in free_vars(c)], ctx, index.stride)
    if span is None:
        return None
    load = MaskedLoad(e.t.buffer, index, *span)
    return load if not uniform else Select(conj(*uniform), load, Broadcast(fconst(0.0), ctx.lanes))


def _offset_range(conds: list[Expr], ctx: _Lanes, stride: int) -> tuple[Expr, Expr] | None:
    """``[lo, hi)`` of the offsets ``j = lane * stride`` at which every
    condition holds, when each is an integer bound on ``stride * v`` plus
    terms free of ``v``; else None."""
    lows: list[Expr] = [Const(0)]
    highs: list[Expr] = [Const(ctx.lanes * stride)]
    for c in conds:
        if not (isinstance(c, Cmp) and c.op in ("<", "<=", ">", ">=") and c.a.dtype == INT):
            return None
        lin = linear(simplify(c.a - c.b))  # the test is  coef*v + rest  OP  0
        if lin.terms.get(Var(ctx.v)) != stride or any(
                ctx.v in free_vars(a) for a in lin.terms if a != Var(ctx.v)):
            return None
        rest = simplify(substitute(c.a - c.b, {ctx.v: Const(0)}))  # in element units j = v * stride
        bound = {">=": Const(0) - rest, ">": Const(1) - rest, "<": Const(0) - rest, "<=": Const(1) - rest}[c.op]
        (lows if c.op in (">=", ">") else highs).append(simplify(bound))
    lo, hi = lows[0], highs[0]
    for x in lows[1:]:
        lo = emax(lo, x)
    for x in highs[1:]:
        hi = emin(hi, x)
    return lo, hi


def _lane_of_temps(e: Expr, ctx: _Lanes, lane: int) -> Expr:
    """``e`` with every vector temporary replaced by its lane ``lane``."""
    return substitute(e, {t: Extract(ctx.temp(t), lane) for t in ctx.temps})


def _scalar_lanes(s: Stmt, ctx: _Lanes) -> Stmt:
    """The statement once per lane, with v replaced by the lane number."""
    copies = []
    for i in range(ctx.lanes):
        lane = {ctx.v: Const(i), **{t: Extract(ctx.temp(t), i) for t in ctx.temps}}
        copies.append(simplify_stmt(substitute_stmt(s, lane), {}))
    return seq(*(x for x in copies if x))


def _vectorize_body(s: Stmt, ctx: _Lanes) -> Stmt:
    v, lanes = ctx.v, ctx.lanes
    if isinstance(s, Seq):
        return seq(*(_vectorize_body(x, ctx) for x in s.stmts))
    if isinstance(s, Assign):
        value = vectorize_expr(s.value, ctx)
        if value.lanes == 1:
            return s
        ctx.temps.add(s.var)
        return Assign(s.var, value)
    if isinstance(s, IfThen):
        uniform = conj(*(c for c in conjuncts(s.cond) if v not in free_vars(c)))
        varying = conj(*(c for c in conjuncts(s.cond) if v in free_vars(c)))
        if varying is None:
            body = _vectorize_body(s.body, ctx)
        elif (masked := _masked_stores(s.body, conjuncts(varying), ctx)) is not None:
            body = masked
        else:
            body = _scalar_lanes(IfThen(varying, s.body), ctx)
            all_lanes = _all_lanes_pass(varying, v, lanes)
            if all_lanes is not None:
                body = IfThen(all_lanes, _vectorize_body(s.body, ctx), body)
        return body if uniform is None else IfThen(uniform, body)
    if isinstance(s, Store):
        idx = s.indices[0]
        if v not in free_vars(idx):
            raise ScheduleError(f"vectorize: every lane of '{v}' would write {s.buffer}[{idx}]")
        return Store(s.buffer, (_vector_index(idx, v, lanes),), _widen(vectorize_expr(s.value, ctx), lanes))
    if isinstance(s, For):
        raise ScheduleError(f"vectorize: loop '{v}' is not innermost: it contains loop '{s.var}'")
    raise ScheduleError(f"vectorize: cannot vectorize {type(s).__name__} inside loop '{v}'")


def _masked_stores(body: Stmt, conds: list[Expr], ctx: _Lanes) -> Stmt | None:
    """Stores guarded by bounds on the lane (the last vector of a tile that
    runs past a tensor's edge) as masked vector stores whose values read
    only the lanes they write: a few vector instructions where evaluating
    each lane on its own took a scalar copy of the whole value per lane (and
    seconds of compile time per tile). None when the guard is no lane range
    or the body is not stores whose reads can be masked."""
    stores = body.stmts if isinstance(body, Seq) else (body,)
    span = _offset_range(conds, ctx, 1)
    if span is None or not all(isinstance(x, Store) for x in stores):
        return None
    lo, hi = span
    out: list[Stmt] = []
    reads_uniform = False
    ctx.mask = span
    try:
        for x in stores:
            index = _vector_index(x.indices[0], ctx.v, ctx.lanes)  # type: ignore[attr-defined]
            run = index.lanes if isinstance(index, Ramp) else run_length(index)
            if run is None or ctx.v not in free_vars(x.indices[0]):  # type: ignore[attr-defined]
                return None
            value = _widen(vectorize_expr(x.value, ctx), ctx.lanes)  # type: ignore[attr-defined]
            reads_uniform |= any(not ctx.varies(ld) and ld.buffer not in ctx.local
                                 for ld in loads(x.value))  # type: ignore[attr-defined]
            if isinstance(index, Ramp):
                out.append(Store(x.buffer, (Masked(index, lo, hi),), value))  # type: ignore[attr-defined]
            else:  # runs of consecutive elements (a tile of kb channels into a layout of a smaller block):
                # one masked store per run; lane by lane, a 14-column tile of 32 channels into NCHW16c
                # was 900 lines of guarded scalar stores and 7 s of compile time
                out.append(run_stores(x.buffer, index, run, value, f"_runs{next(ctx.names)}",  # type: ignore
                                      (lo, hi)))
    except _Unmaskable:
        return None
    finally:
        ctx.mask = None
    # A read that is the same for every lane was only made when some lane
    # passed the guard: keep it so.
    return IfThen(Cmp("<", lo, hi), seq(*out)) if reads_uniform else seq(*out)


def _all_lanes_pass(cond: Expr, v: str, lanes: int) -> Expr | None:
    """A scalar condition under which every lane passes ``cond``, when each
    conjunct is an affine bound in ``v`` (true at its worst lane means true at
    all lanes). Tails of non-divisible splits then cost one test per vector,
    and only the last iteration goes lane by lane."""
    worst: list[Expr] = []
    for c in conjuncts(cond):
        if not (isinstance(c, Cmp) and c.op in ("<", "<=", ">", ">=") and c.a.dtype == INT):
            return None
        lin = linear(simplify(c.a - c.b))
        if any(v in free_vars(atom) for atom in lin.terms if atom != Var(v)):
            return None
        rising = lin.terms.get(Var(v), 0) >= 0
        upper = c.op in ("<", "<=")
        worst.append(_at_lane(c, v, lanes - 1 if rising == upper else 0))
    return conj(*worst)


def vectorize_kernel(k: Kernel) -> Kernel:
    def visit(s: Stmt) -> Stmt | None:
        if isinstance(s, For) and s.kind == LoopKind.VECTORIZED:
            inner = [x for x in walk(s.body) if isinstance(x, For)]
            if inner:
                raise ScheduleError(f"vectorize: loop '{s.var}' is not innermost: it contains loop '{inner[0].var}'")
            return _vectorize_body(s.body, _Lanes(s.var, s.extent, local, names))
        return None

    def stage(st: Stmt) -> Stmt:
        nonlocal local
        local = frozenset(x.buffer.name for x in walk(st) if isinstance(x, Allocate) and x.buffer.scope == "local")
        return map_stmt(st, visit)

    local: frozenset[str] = frozenset()
    names = count()
    return k.map_stages(stage)
