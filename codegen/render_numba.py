"""Render an optimised loop-nest kernel as Python source for ``numba.njit``.

The output is a self-contained module of serial stage functions (see
``render``): buffers arrive as flat float32 arrays,
every shape, stride and loop bound is a literal, float constants are module
globals (numba freezes them, so they cost nothing and stay float32), vector
work goes through ``codegen.intrinsics``.
"""
from __future__ import annotations

from convtune.ir.expr import (
    BOOL,
    FUNCTIONS,
    INT,
    And,
    BinOp,
    Broadcast,
    Call,
    Cmp,
    Const,
    Expr,
    Extract,
    IndexLoad,
    Interleave,
    Lanes,
    Load,
    Masked,
    MaskedLoad,
    Ramp,
    Rows,
    Select,
    Var,
    reads_memory,
)
from convtune.ir.loopnest import Allocate, Assign, Comment, For, IfThen, Kernel, LoopKind, Prefetch, Seq, Stmt, Store, walk
from convtune.ir.printer import expr_str

MAX_WIDE_STRIDE = 4
INTRINSICS = ("checked", "ld", "ldi", "st", "vld", "vldmask", "vgathermask", "vst", "vstmask", "vgather", "vscatter",
              "vsplat", "vfromtuple", "vinterleave", "vstrows", "vstrowsmask", "vget", "vadd", "vsub", "vmul", "vmin",
              "vmax", "vfma", "vselect")
MATH = tuple(f"v{fn}" for fn in FUNCTIONS)
"""``Call`` nodes, from ``codegen.math_intrinsics`` (scalar or vector alike)."""
FASTMATH = "{'contract', 'arcp', 'nsz', 'reassoc', 'afn'}"
"""LLVM fast-math flags that keep NaN/inf semantics ('nnan'/'ninf' are left
out): reassociation and contraction are what let LLVM fuse and reorder."""

_VOPS = {"+": "vadd", "-": "vsub", "*": "vmul", "min": "vmin", "max": "vmax"}


TUPLE_DISPLAY_ITEMS = 30
"""CPython builds a tuple display of more items than this through a list
(``LIST_TO_TUPLE``), an op-code numba cannot compile."""


def tuple_display(items: list[str]) -> str:
    """Python source of the tuple of ``items``: a sum of displays when it is long."""
    return " + ".join(f"({', '.join(items[i:i + TUPLE_DISPLAY_ITEMS])},)"
                      for i in range(0, len(items), TUPLE_DISPLAY_ITEMS))


class RenderError(ValueError):
    pass


class _Renderer:
    def __init__(self, check_bounds: bool) -> None:
        self.consts: dict[float, str] = {}
        self.splats: dict[tuple[str, int], str] = {}
        """The current stage's vectors of one constant, each made once at its top."""
        self.temps = 0
        self.check_bounds = check_bounds

    def at(self, buf: str, first: Expr, span: int = 1, lo: Expr | None = None, hi: Expr | None = None,
           stride: int = 1) -> str:
        """The offset of an access touching elements first..first+span-1 (of
        which, for a masked load of lanes ``stride`` apart, only those in
        lo..hi-1, lo a multiple of the stride): checked in debug builds."""
        off = self.expr(first)
        if not self.check_bounds:
            return off
        if lo is None:
            return f"checked({buf}, {off}, {off} + {span - 1})"
        lo_s, hi_s = self.expr(lo), self.expr(hi)  # type: ignore[arg-type]
        last = f"(min({hi_s}, {span}) - 1) // {stride} * {stride}"  # the last lane's element below hi
        return (f"({off} if {lo_s} >= min({hi_s}, {span}) else "
                f"checked({buf}, {off} + max({lo_s}, 0), {off} + {last}) - max({lo_s}, 0))")

    def const(self, value: float) -> str:
        if value not in self.consts:
            self.consts[value] = f"F{len(self.consts)}"
        return self.consts[value]

    def expr(self, e: Expr) -> str:
        if e.dtype in (INT, BOOL) and e.lanes == 1 and not reads_memory(e):
            return expr_str(e)
        if isinstance(e, Const):
            return self.const(float(e.value))
        if isinstance(e, Var):
            return e.name
        if isinstance(e, Load):
            return self.load(e)
        if isinstance(e, IndexLoad):
            return self.index_load(e)
        if isinstance(e, MaskedLoad):
            idx = e.index
            span = (idx.lanes - 1) * idx.stride + 1  # type: ignore[attr-defined]
            at = self.at(e.buffer, idx.base, span, e.lo, e.hi, idx.stride)  # type: ignore[attr-defined]
            load = "vldmask" if idx.stride <= MAX_WIDE_STRIDE else "vgathermask"  # type: ignore[attr-defined]
            lo, hi = self.expr(e.lo), self.expr(e.hi)
            return f"{load}({e.buffer}, {at}, {idx.stride}, {lo}, {hi}, {idx.lanes})"  # type: ignore[attr-defined]
        if isinstance(e, BinOp):
            return self.binop(e)
        if isinstance(e, Cmp):
            return f"({self.expr(e.a)} {e.op} {self.expr(e.b)})"
        if isinstance(e, And):
            return f"({self.expr(e.a)} and {self.expr(e.b)})"
        if isinstance(e, Select):
            if e.lanes > 1 and e.cond.lanes > 1:
                c = e.cond
                if not isinstance(c, Cmp):
                    raise RenderError(f"vector select needs a comparison, got {c}")
                return f"vselect({self.expr(c.a)}, '{c.op}', {self.expr(c.b)}, {self.expr(e.t)}, {self.expr(e.f)})"
            return f"({self.expr(e.t)} if {self.expr(e.cond)} else {self.expr(e.f)})"
        if isinstance(e, Call):
            return f"v{e.fn}({self.expr(e.arg)})"
        if isinstance(e, Broadcast):
            if isinstance(e.value, Const) and e.value.dtype not in (INT, BOOL):
                return self.splats.setdefault((self.const(float(e.value.value)), e.lanes), f"_s{len(self.splats)}")
            return f"vsplat({self.expr(e.value)}, {e.lanes})"
        if isinstance(e, Lanes):
            return f"vfromtuple({tuple_display([self.expr(x) for x in e.elems])})"
        if isinstance(e, Interleave):
            return f"vinterleave({self.vectors(e)})"
        if isinstance(e, Extract):
            return f"vget({self.expr(e.vec)}, {e.lane})"
        raise RenderError(f"cannot render {e!r}")

    def binop(self, e: BinOp) -> str:
        if e.lanes == 1:
            if e.op in ("min", "max"):
                return f"{e.op}({self.expr(e.a)}, {self.expr(e.b)})"
            return f"({self.expr(e.a)} {e.op} {self.expr(e.b)})"
        if e.op == "+":
            for prod, acc in ((e.b, e.a), (e.a, e.b)):
                if isinstance(prod, BinOp) and prod.op == "*":
                    return f"vfma({self.expr(prod.a)}, {self.expr(prod.b)}, {self.expr(acc)})"
        if e.op not in _VOPS:
            raise RenderError(f"no vector form of '{e.op}'")
        return f"{_VOPS[e.op]}({self.expr(e.a)}, {self.expr(e.b)})"

    def vectors(self, e: Interleave) -> str:
        """The vectors as a tuple of tuples of at most 16 (CPython turns a
        tuple display of more than 30 items into a list conversion that
        Numba cannot type)."""
        vecs = [self.expr(v) for v in e.vecs]
        parts = (f"({', '.join(vecs[i:i + 16])},)" for i in range(0, len(vecs), 16))
        return f"({', '.join(parts)},)"

    def index_load(self, e: IndexLoad) -> str:
        if e.lanes > 1:
            raise RenderError(f"an index table is read one entry at a time, not as a vector: {e}")
        return f"ldi({e.buffer}, {self.at(e.buffer, e.indices[0])})"

    def load(self, e: Load) -> str:
        idx = e.indices[0]
        if isinstance(idx, Ramp):
            span = (idx.lanes - 1) * idx.stride + 1
            at = self.at(e.buffer, idx.base, span)
            if idx.stride == 1:
                return f"vld({e.buffer}, {at}, {idx.lanes})"
            if 1 < idx.stride <= MAX_WIDE_STRIDE:  # one wide load and a shuffle beat `lanes` scalar loads
                return f"vldmask({e.buffer}, {at}, {idx.stride}, 0, {span}, {idx.lanes})"
            return f"vgather({e.buffer}, {at}, {idx.stride}, {idx.lanes})"
        if isinstance(idx, Lanes):
            return f"vfromtuple({tuple_display([f'ld({e.buffer}, {self.at(e.buffer, i)})' for i in idx.elems])})"
        return f"ld({e.buffer}, {self.at(e.buffer, idx)})"

    def stmt(self, s: Stmt, depth: int) -> list[str]:
        pad = "    " * depth
        if isinstance(s, For):
            if s.kind in (LoopKind.UNROLLED, LoopKind.VECTORIZED):
                raise RenderError(f"loop '{s.var}' is still {s.kind.value}; run the passes first")
            rng = "prange" if s.kind == LoopKind.PARALLEL else "range"
            return [f"{pad}for {s.var} in {rng}({s.extent}):", *self.stmt(s.body, depth + 1)]
        if isinstance(s, Seq):
            return [line for x in s.stmts for line in self.stmt(x, depth)]
        if isinstance(s, IfThen):
            orelse = [] if s.orelse is None else [f"{pad}else:", *self.stmt(s.orelse, depth + 1)]
            return [f"{pad}if {self.expr(s.cond)}:", *self.stmt(s.body, depth + 1), *orelse]
        if isinstance(s, Allocate):
            return [f"{pad}{s.buffer.name} = np.empty({s.buffer.size}, np.float32)", *self.stmt(s.body, depth)]
        if isinstance(s, Assign):
            return [f"{pad}{s.var} = {self.expr(s.value)}"]
        if isinstance(s, Comment):
            return [f"{pad}# {s.text}"]
        if isinstance(s, Prefetch):  # a hint: never faults, so never bounds-checked
            return [f"{pad}prefetch({s.buffer}, {self.expr(s.indices[0])})"]
        if isinstance(s, Store):
            return self.store(s, pad)
        raise RenderError(f"cannot render {s!r}")

    def store(self, s: Store, pad: str) -> list[str]:
        idx = s.indices[0]
        if isinstance(idx, Masked):
            return [f"{pad}{self.masked_store(s.buffer, idx, s.value)}"]
        if isinstance(idx, Rows):
            if not isinstance(s.value, Interleave):
                raise RenderError(f"a store of rows needs an interleaved value, got {s.value}")
            at = self.at(s.buffer, idx.base, (idx.count - 1) * idx.stride + idx.length)
            return [f"{pad}vstrows({s.buffer}, {at}, {idx.stride}, {self.vectors(s.value)})"]
        value = self.expr(s.value)
        if isinstance(idx, Ramp):
            at = self.at(s.buffer, idx.base, (idx.lanes - 1) * idx.stride + 1)
            if idx.stride == 1:
                return [f"{pad}vst({s.buffer}, {at}, {value})"]
            return [f"{pad}vscatter({s.buffer}, {at}, {idx.stride}, {value})"]
        if isinstance(idx, Lanes):
            self.temps += 1
            tmp = f"_v{self.temps}"
            return [f"{pad}{tmp} = {value}"] + [
                f"{pad}st({s.buffer}, {self.at(s.buffer, i)}, vget({tmp}, {lane}))" for lane, i in enumerate(idx.elems)]
        return [f"{pad}st({s.buffer}, {self.at(s.buffer, idx)}, {value})"]


    def masked_store(self, buf: str, m: Masked, value: Expr) -> str:
        """Lanes (of rows: rows) ``m.lo <= i < m.hi`` of a vector store."""
        idx, lo, hi = m.index, self.expr(m.lo), self.expr(m.hi)
        if isinstance(idx, Rows) and isinstance(value, Interleave):
            at = self.at(buf, idx.base, (idx.count - 1) * idx.stride + idx.length,
                         m.lo * idx.stride, (m.hi - 1) * idx.stride + idx.length)
            return f"vstrowsmask({buf}, {at}, {idx.stride}, {lo}, {hi}, {self.vectors(value)})"
        if isinstance(idx, Ramp):
            at = self.at(buf, idx.base, (idx.lanes - 1) * idx.stride + 1, m.lo * idx.stride,
                         (m.hi - 1) * idx.stride + 1)
            return f"vstmask({buf}, {at}, {idx.stride}, {lo}, {hi}, {self.expr(value)})"
        raise RenderError(f"cannot render a masked store to {buf}[{idx}] of {value}")


def _stages(k: Kernel) -> list[tuple[str, int, Stmt]]:
    """(loop variable, extent, body) per stage: a top-level parallel loop is
    the stage's index; any other stage runs once."""
    out = []
    for st in k.stages:
        if isinstance(st, For) and st.kind == LoopKind.PARALLEL:
            out.append((st.var, st.extent, st.body))
        else:
            out.append(("_", 1, st))
    return out


def render(k: Kernel, header: list[str], check_bounds: bool = False) -> str:
    """The module source; ``header`` lines become leading comments.

    Each stage becomes a serial function ``stageN(i, *buffers)``; the module's
    ``STAGES`` lists (name, extent) and ``codegen.launch.run_stages`` runs
    stage N for ``i in prange(extent)``, in order.
    """
    r = _Renderer(check_bounds)
    functions: list[str] = []
    stages = []
    for n, (var, extent, body) in enumerate(_stages(k)):
        r.splats = {}
        lines = r.stmt(body, 1)
        # Numba types and lowers every call it is given: a transform's
        # hundreds of `vsplat(F1, 8)` cost build time, one each does not.
        lines = [f"    {name} = vsplat({c}, {lanes})" for (c, lanes), name in r.splats.items()] + lines
        if any("prange(" in line for line in lines):
            raise RenderError("a parallel loop must be the outermost loop of its stage")
        functions += [
            "",
            "",
            f"@njit(fastmath={FASTMATH}, error_model='numpy', boundscheck=False, nogil=True, cache=True)",
            f"def stage{n}({var}, {', '.join(b.name for b in k.params)}):",
            *lines,
        ]
        stages.append(f"(\"stage{n}\", {extent})")
    # Only a kernel that prefetches imports it: every other kernel's source, and so its cache key, stays as it was.
    intrinsics = INTRINSICS + (("prefetch",) if any(isinstance(s, Prefetch) for s in walk(k.body)) else ())
    out = [f"# {h}" for h in header]
    out += [
        "import numpy as np",
        "from numba import njit",
        f"from convtune.codegen.intrinsics import {', '.join(intrinsics)}",
        f"from convtune.codegen.math_intrinsics import {', '.join(MATH)}",
        "",
        f"BUFFERS = ({', '.join(repr(b.name) for b in k.params)},)",
        f"CHECKED = {check_bounds}",
        f"STAGES = ({', '.join(stages)},)",
        "",
    ]
    out += [f"{name} = np.float32({value!r})" for value, name in r.consts.items()]
    return "\n".join(out + functions) + "\n"
