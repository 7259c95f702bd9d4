"""The user-facing ``Schedule``: TVM-style methods over an immutable state.

Each method applies one primitive from ``schedules.primitives`` and keeps the
new state, so ``sch.state`` is always a legal schedule and ``print(sch)``
shows the primitives applied so far.
"""
from __future__ import annotations

from convtune.ir.compute import AlgorithmCompute, ComputeDef
from convtune.ir.workload import Conv2D
from convtune.schedules import gpu
from convtune.schedules import primitives as prim
from convtune.schedules.state import BlockedLayout, ScheduleState


class Schedule:
    """How to compute a conv2d workload; build it with ``codegen.build``.

    Axes are referred to by name. The initial loops are the compute's axes:
    for a conv, spatial ``n, k, p, q`` (batch, output channel, output row,
    output column) and reduction ``c, r, s`` (input channel within the group,
    kernel row, kernel column); for ``Schedule(WinogradCompute(wl, m))``, the
    batched GEMM's spatial ``e, k, t`` (transform element, output channel,
    tile) and reduction ``c``; for ``Schedule(ToeplitzCompute(wl, lanes))``,
    spatial ``n, k, p, t, l`` (column tile and lane) and reduction ``c, r, j``
    (the band). ``split`` and ``fuse`` return the new axes.
    """

    def __init__(self, compute: Conv2D | ComputeDef | AlgorithmCompute) -> None:
        if isinstance(compute, Conv2D):
            compute = ComputeDef(compute)
        self.workload = compute.workload
        self.state = ScheduleState.initial(compute)

    @property
    def axes(self) -> tuple[str, ...]:
        """The current loops, outermost first."""
        return self.state.leaves

    def extent(self, axis: str) -> int:
        return self.state.axis(axis).extent

    def split(self, axis: str, factor: int) -> tuple[str, str]:
        self.state, outer, inner = prim.split(self.state, axis, factor)
        return outer, inner

    def tile(self, x: str, y: str, x_factor: int, y_factor: int) -> tuple[str, str, str, str]:
        """Split two axes and order them (x_o, y_o, x_i, y_i); all or nothing."""
        self.state, axes = prim.tile(self.state, x, y, x_factor, y_factor)
        return axes

    def fuse(self, outer: str, inner: str) -> str:
        self.state, fused = prim.fuse(self.state, outer, inner)
        return fused

    def reorder(self, *axes: str) -> None:
        self.state = prim.reorder(self.state, *axes)

    def unroll(self, axis: str) -> None:
        self.state = prim.unroll(self.state, axis)

    def vectorize(self, axis: str) -> None:
        self.state = prim.vectorize(self.state, axis)

    def parallel(self, axis: str) -> None:
        self.state = prim.parallel(self.state, axis)

    def cache_write(self, at: str) -> None:
        self.state = prim.cache_write(self.state, at)

    def prefetch(self, buffer: str, at: str, ahead: int = 1) -> None:
        """CPU: fetch ``buffer``'s next block into cache ahead of its use (see ``primitives.prefetch``)."""
        self.state = prim.prefetch(self.state, buffer, at, ahead)

    def bind(self, axis: str, tag: str) -> None:
        """GPU: the loop becomes a block or thread index ('blockIdx.x', ...,
        'threadIdx.z') or a vthread (see ``schedules.gpu``)."""
        self.state = gpu.bind(self.state, axis, tag)

    def cache_read(self, buffer: str, scope: str, at: str) -> None:
        """GPU: stage what each iteration of ``at`` reads of 'data' or 'weight' in 'shared' memory."""
        self.state = gpu.cache_read(self.state, buffer, scope, at)

    def pack_data(self, block: int, im2col: bool = False) -> None:
        self.state = prim.pack_data(self.state, block, im2col)

    def pack_weights(self, in_block: int, out_block: int) -> None:
        self.state = prim.pack_weights(self.state, in_block, out_block)

    def io_layout(self, data: BlockedLayout | None = None, out: BlockedLayout | None = None,
                  residual: BlockedLayout | None = None) -> None:
        """Input / output / residual in NCHW[x]c with a zero border (see ``BlockedLayout``)."""
        self.state = prim.io_layout(self.state, data, out, residual)

    def __str__(self) -> str:
        steps = "\n".join(f"  {t}" for t in self.state.trace) or "  (default loop order)"
        return f"schedule for {self.workload.short()}:\n{steps}\n  loops: {', '.join(self.axes)}"


def default_schedule(workload: Conv2D) -> Schedule:
    """A correct schedule for any workload: the compute's loop order with the
    batch and output-channel loops fused and run in parallel. Slow but total;
    the templates in this package are what make convolutions fast."""
    sch = Schedule(workload)
    nk = sch.fuse("n", "k")
    sch.parallel(nk)
    return sch
