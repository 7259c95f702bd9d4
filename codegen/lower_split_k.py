"""Split-K lowering (GPU): a reduction loop bound to a block index splits the
reduction over blocks. Each block accumulates its part into its own slice of
a ``partial`` scratch buffer, with no epilogue; a last stage adds the parts
in a fixed order (deterministic, no atomics) and applies the epilogue. It
gives small batch-1 layers, whose outputs alone fill few blocks, enough
blocks to occupy the GPU."""
from __future__ import annotations

from convtune.codegen.lower import Domain, Finalize, elementwise, reduction_stages
from convtune.ir.expr import Const, Expr, Load, Var
from convtune.ir.loopnest import Buffer, Stmt, Store
from convtune.schedules.gpu import split_k_axis


def split_k_stages(d: Domain, prod: Expr, out: Buffer, out_idx: tuple[Expr, ...], finalize: Finalize,
                   reads_safe: bool) -> tuple[Buffer, list[Stmt]]:
    """(the partial-sums scratch buffer, the stages computing ``out``)."""
    axis = split_k_axis(d.state)
    assert axis is not None
    parts = d.state.axis(axis).extent
    partial = Buffer("partial", (parts, *out.shape))
    stages = reduction_stages(d, prod, partial, (Var(axis), *out_idx), lambda acc, idx: acc, reads_safe)
    names = tuple(f"i{n}" for n in range(len(out.shape)))
    idx = tuple(Var(n) for n in names)
    total: Expr = Load(partial.name, (Const(0), *idx))
    for part in range(1, parts):
        total = total + Load(partial.name, (Const(part), *idx))
    stages.append(elementwise(out.shape, names, Store(out.name, idx, finalize(total, idx)), fused_dims=len(names)))
    return partial, stages
