"""Indirect convolution (Dukhan, 2019) as a compute definition.

On channel-last input every (pixel, kernel tap) pair reads one contiguous
row of C channels. An indirection table holds, per output pixel ``t = p*Q + q``
and tap (r, s), the offset of that row in one image of the flattened input,
padding taps pointing at a row of zeros; the conv is then a GEMM over output
pixels whose reduction reads input rows through the table, with no im2col
copy:

    out[n, k, t] = sum_{c, r, s} data[n*image + ind[t, r, s] + g*Cg + c] * weight[k, c, r, s]

with ``g = k // Kg``. Stride, padding (any, asymmetric) and dilation only
change the table, so one kernel covers them all. The input layout it reads
is channel-last, [N, H + 1, W, C] (``codegen.lower_indirect.channel_last_layout``,
a ``BlockedLayout`` whose block is all C channels): NHWC with one extra
image row below each image, all zeros, which is the zero row the padding
taps point at.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convtune.ir.compute import SPATIAL, Axis, ComputeDef
from convtune.ir.expr import Expr
from convtune.ir.workload import Conv2D


def image_size(wl: Conv2D) -> int:
    """Elements of one image of the channel-last input: H + 1 rows (the last
    the zero row) of W pixels of C channels."""
    return (wl.H + 1) * wl.W * wl.C


def zero_row_offset(wl: Conv2D) -> int:
    """Offset, within an image of the channel-last input, of its zero row."""
    return wl.H * wl.W * wl.C


def indirection_table(wl: Conv2D, pixels: int) -> np.ndarray:
    """int32 [pixels, R, S]: the offset within an image of the channel-last
    input of the row output pixel ``t`` reads at tap (r, s), or of the zero row
    when that tap falls in the padding. Pixels from ``P*Q`` up to ``pixels``
    (a register tile's overhang past the last pixel) read the zero row too."""
    t = np.arange(pixels)
    p, q = t // wl.Q, t % wl.Q
    r, s = np.arange(wl.R), np.arange(wl.S)
    y = (p * wl.stride[0] - wl.padding[0])[:, None, None] + (r * wl.dilation[0])[None, :, None]
    x = (q * wl.stride[1] - wl.padding[1])[:, None, None] + (s * wl.dilation[1])[None, None, :]
    inside = (y >= 0) & (y < wl.H) & (x >= 0) & (x < wl.W) & (t < wl.P * wl.Q)[:, None, None]
    table = np.where(inside, (y * wl.W + x) * wl.C, zero_row_offset(wl))
    return np.ascontiguousarray(table, np.int32)


@dataclass(frozen=True)
class IndirectCompute(ComputeDef):
    """The conv (its buffers, reduction and epilogue) over the pixel axis the
    table is indexed by: spatial ``n, k, t`` (batch, output channel, output
    pixel ``p*Q + q``), reduction ``c, r, s``."""

    @property
    def spatial(self) -> tuple[Axis, ...]:
        w = self.workload
        return (Axis("n", w.N, SPATIAL), Axis("k", w.K, SPATIAL), Axis("t", w.P * w.Q, SPATIAL))

    def data_coords(self, ax: dict[str, Expr]) -> tuple[Expr, Expr, Expr, Expr]:
        return super().data_coords({**ax, "p": ax["t"] // self.workload.Q, "q": ax["t"] % self.workload.Q})

    def __str__(self) -> str:
        w = self.workload
        return (f"indirect {w.short()}: out[n<{w.N}, k<{w.K}, t<{w.P * w.Q}] = sum[c<{w.Cg}, r<{w.R}, s<{w.S}]"
                f"(data[n, ind[t, r, s] + c] * weight[k, c, r, s])")
