"""Human-readable text for expressions and loop nests (never fed to a compiler)."""
from __future__ import annotations

from convtune.ir.expr import (And, BinOp, Broadcast, Call, Cmp, Const, Expr, Extract, IndexLoad, Interleave, Lanes, Load,
                              Masked, MaskedLoad, Not, Ramp, Rows, Select, Var)
from convtune.ir.loopnest import Allocate, Assign, Barrier, Comment, For, IfThen, Kernel, LoopKind, Prefetch, Seq, Stmt, Store

_PREC = {"+": 1, "-": 1, "*": 2, "//": 2, "%": 2}


def expr_str(e: Expr, parent_prec: int = 0) -> str:
    if isinstance(e, Const):
        if e.dtype == "bool":
            return "True" if e.value else "False"
        return repr(e.value)
    if isinstance(e, Var):
        return e.name
    if isinstance(e, BinOp) and e.op in _PREC:
        p = _PREC[e.op]
        # Right operand of a non-commutative op needs parentheses at equal precedence.
        text = f"{expr_str(e.a, p)} {e.op} {expr_str(e.b, p + 1)}"
        return f"({text})" if p < parent_prec else text
    if isinstance(e, BinOp):
        return f"{e.op}({expr_str(e.a)}, {expr_str(e.b)})"
    if isinstance(e, Cmp):
        text = f"{expr_str(e.a, 1)} {e.op} {expr_str(e.b, 1)}"
        return f"({text})" if parent_prec > 0 else text
    if isinstance(e, And):
        return f"{expr_str(e.a, 1)} and {expr_str(e.b, 1)}"
    if isinstance(e, Not):
        return f"not ({expr_str(e.a)})"
    if isinstance(e, Call):
        return f"{e.fn}({expr_str(e.arg)})"
    if isinstance(e, Select):
        return f"select({expr_str(e.cond)}, {expr_str(e.t)}, {expr_str(e.f)})"
    if isinstance(e, (Load, IndexLoad)):
        return f"{e.buffer}[{', '.join(expr_str(i) for i in e.indices)}]"
    if isinstance(e, MaskedLoad):
        return f"{e.buffer}[{expr_str(e.index)} where {expr_str(e.lo)} <= j < {expr_str(e.hi)}]"
    if isinstance(e, Ramp):
        return f"ramp({expr_str(e.base)}, {e.stride}, {e.lanes})"
    if isinstance(e, Masked):
        return f"{expr_str(e.index)} where {expr_str(e.lo)} <= lane < {expr_str(e.hi)}"
    if isinstance(e, Rows):
        return f"rows({expr_str(e.base)}, {e.count} x {e.length}, stride {e.stride})"
    if isinstance(e, Broadcast):
        return f"x{e.lanes}({expr_str(e.value)})"
    if isinstance(e, Lanes):
        return f"lanes({', '.join(expr_str(x) for x in e.elems)})"
    if isinstance(e, Interleave):
        return f"interleave({', '.join(expr_str(x) for x in e.vecs)})"
    if isinstance(e, Extract):
        return f"{expr_str(e.vec, 3)}[lane {e.lane}]"
    return repr(e)


def _lines(s: Stmt, depth: int) -> list[str]:
    pad = "  " * depth
    if isinstance(s, For):
        kind = "" if s.kind == LoopKind.SERIAL else f"{s.kind.value} "
        return [f"{pad}{kind}for {s.var} in range({s.extent}):", *_lines(s.body, depth + 1)]
    if isinstance(s, Seq):
        return [line for x in s.stmts for line in _lines(x, depth)]
    if isinstance(s, Store):
        idx = ", ".join(expr_str(i) for i in s.indices)
        return [f"{pad}{s.buffer}[{idx}] = {expr_str(s.value)}"]
    if isinstance(s, IfThen):
        orelse = [] if s.orelse is None else [f"{pad}else:", *_lines(s.orelse, depth + 1)]
        return [f"{pad}if {expr_str(s.cond)}:", *_lines(s.body, depth + 1), *orelse]
    if isinstance(s, Allocate):
        shape = ", ".join(str(d) for d in s.buffer.shape)
        return [f"{pad}{s.buffer.name} = {s.buffer.scope} float32[{shape}]", *_lines(s.body, depth)]
    if isinstance(s, Assign):
        return [f"{pad}{s.var} = {expr_str(s.value)}"]
    if isinstance(s, Comment):
        return [f"{pad}# {s.text}"]
    if isinstance(s, Barrier):
        return [f"{pad}barrier()"]
    if isinstance(s, Prefetch):
        return [f"{pad}prefetch {s.buffer}[{', '.join(expr_str(i) for i in s.indices)}]"]
    return [f"{pad}{s!r}"]


def stmt_str(s: Stmt) -> str:
    return "\n".join(_lines(s, 0))


def kernel_str(k: Kernel) -> str:
    params = ", ".join(f"{b.name}: float32[{', '.join(map(str, b.shape))}]" for b in k.params)
    head = [f"# {n}" for n in k.notes] + [f"kernel {k.name}({params}):"]
    return "\n".join(head + _lines(k.body, 1))
