"""Convolution as products with Toeplitz (banded) matrices along the width.

One output row segment of ``lanes`` columns, for one output channel ``k``,
input channel ``c`` and kernel row ``r``, is a matrix-vector product: the
input row segment it reads (``band`` columns) times a band x lanes matrix
built from the kernel row ``w[k, c, r, :]``:

    T[k, c, r, j, l] = w[k, c, r, s]   where j = l * stride_w + s * dilation_w, else 0
    out[n, k, p, t*lanes + l] = sum_{c, r, j} T[k, c, r, j, l]
                                * x_pad[n, g*Cg + c, p*stride_h + r*dilation_h, t*lanes*stride_w + j]

with ``band = (lanes - 1) * stride_w + (S - 1) * dilation_w + 1`` and ``x_pad``
the input inside its zero padding (row and column 0 are the first padding
row and column). The matrix does not depend on the column tile ``t`` (a
Toeplitz matrix is shift-invariant), so one block per (k, c, r) serves every
tile of every row, and it is built once, when the weights are prepared.

The spatial axes are ``n, k, p`` and the column tile ``t`` with its ``l``
lanes (output columns ``t * lanes + l``; the last tile's lanes past the
output width are computed and never stored); the reduction axes are ``c``,
``r`` and the band ``j``. Vectorised over ``l``, each step is one broadcast
input pixel times a vector of matrix entries: the vector axis is the output
width, so a layer with one or three input channels (or few output channels)
still fills whole vectors, where the channel-vectorised templates cannot.
The price is the band's zeros: ``band`` multiplies per output instead of ``S``.

What it covers, and why: any stride, dilation and padding (the padding is
materialised in ``x_pad``, the stride and dilation are in the matrix) and
grouped convs (channel ``g*Cg + c``, ``g = k // Kg``, read per output channel,
never across lanes). Not depthwise (one input channel per group): the
``depthwise_w`` template vectorises the same axis in place with ``S``
multiplies per output instead of ``band``. Not ``S == 1``: the matrix is then
a diagonal and all but one of every ``lanes`` multiplies are by zero. Not
where the matrices would be large (``MAX_TOEPLITZ_FLOATS``): they hold
``band * lanes / S`` times the weights, which wide layers with many channels
cannot afford and where the channel-vectorised templates have full vectors.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convtune.ir.compute import REDUCE, SPATIAL, AlgorithmCompute, Axis
from convtune.ir.expr import Expr
from convtune.ir.workload import Conv2D

MAX_TOEPLITZ_FLOATS = 1 << 22
"""Most floats (16 MiB) the Toeplitz matrices of a layer may hold at
``WIDEST_LANES``: they are read again for every output row."""

WIDEST_LANES = 32
"""The widest column tile any target's space offers (two AVX-512 vectors)."""


def band(wl: Conv2D, lanes: int) -> int:
    """Input columns one tile of ``lanes`` output columns reads."""
    return (lanes - 1) * wl.stride[1] + (wl.S - 1) * wl.dilation[1] + 1


def toeplitz_floats(wl: Conv2D, lanes: int) -> int:
    """Size of the Toeplitz matrices of ``wl`` with tiles of ``lanes`` columns."""
    return wl.K * wl.Cg * wl.R * band(wl, lanes) * lanes


def applies(wl: Conv2D) -> bool:
    depthwise = wl.Cg == 1 and wl.groups > 1
    return not depthwise and wl.S > 1 and toeplitz_floats(wl, min(wl.Q, WIDEST_LANES)) <= MAX_TOEPLITZ_FLOATS


@dataclass(frozen=True)
class ToeplitzCompute(AlgorithmCompute):
    """The Toeplitz-matrix form of a conv with column tiles of ``lanes`` outputs."""

    lanes: int

    def __post_init__(self) -> None:
        if not 1 <= self.lanes <= self.workload.Q:
            raise ValueError(f"toeplitz: lanes={self.lanes} must be in 1..{self.workload.Q} (the output width)")
        if not applies(self.workload):
            raise ValueError(f"toeplitz: needs a conv that is not depthwise, with S > 1 and Toeplitz matrices of "
                             f"at most {MAX_TOEPLITZ_FLOATS} floats, got {self.workload.short()}")

    @property
    def band(self) -> int:
        return band(self.workload, self.lanes)

    @property
    def tiles(self) -> int:
        """Column tiles per output row."""
        return -(-self.workload.Q // self.lanes)

    @property
    def spatial(self) -> tuple[Axis, ...]:
        wl = self.workload
        return (Axis("n", wl.N, SPATIAL), Axis("k", wl.K, SPATIAL), Axis("p", wl.P, SPATIAL),
                Axis("t", self.tiles, SPATIAL), Axis("l", self.lanes, SPATIAL))

    @property
    def reduce(self) -> tuple[Axis, ...]:
        wl = self.workload
        return (Axis("c", wl.Cg, REDUCE), Axis("r", wl.R, REDUCE), Axis("j", self.band, REDUCE))

    def output_coords(self, ax: dict[str, Expr]) -> tuple[Expr, Expr, Expr, Expr]:
        """NCHW coordinates of the output element an iteration accumulates."""
        return (ax["n"], ax["k"], ax["p"], ax["t"] * self.lanes + ax["l"])

    def padded_input_coords(self, ax: dict[str, Expr]) -> tuple[Expr, Expr, Expr, Expr]:
        """Coordinates in ``x_pad`` (padding included) of the pixel an iteration reads."""
        wl = self.workload
        channel = ax["c"] if wl.groups == 1 else (ax["k"] // wl.Kg) * wl.Cg + ax["c"]
        return (ax["n"], channel, ax["p"] * wl.stride[0] + ax["r"] * wl.dilation[0],
                ax["t"] * (self.lanes * wl.stride[1]) + ax["j"])

    def toeplitz_weights(self, weight: np.ndarray) -> np.ndarray:
        """T as a [K, Cg, R, band, lanes] float32 array, from KCRS weights."""
        wl = self.workload
        t = np.zeros((wl.K, wl.Cg, wl.R, self.band, self.lanes), np.float32)
        lane = np.arange(self.lanes)
        for s in range(wl.S):
            t[:, :, :, lane * wl.stride[1] + s * wl.dilation[1], lane] = weight[:, :, :, s, None]
        return t

    def __str__(self) -> str:
        return (f"toeplitz ({self.lanes} columns a tile) of {self.workload.short()}: out[n, k, p, t*{self.lanes} + l] "
                f"= sum[c<{self.workload.Cg}, r<{self.workload.R}, j<{self.band}](T[k, c, r, j, l] * "
                f"x_pad[n, c, p*{self.workload.stride[0]} + r*{self.workload.dilation[0]}, "
                f"t*{self.lanes * self.workload.stride[1]} + j])")
