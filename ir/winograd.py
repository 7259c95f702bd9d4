"""Winograd F(m x m, 3 x 3) as a compute definition: a batched GEMM.

For a 3x3, stride-1, undilated, ungrouped conv the output is cut into m x m
tiles; each tile needs an (m+2) x (m+2) input tile. With alpha = m + 2 and
the transforms of Lavin & Gray (2016):

    U[e, k, c] = (G g_kc G^T)[e]            weights, once at prepare time
    V[e, c, t] = (B^T d_ct B)[e]            input tiles, per call
    M[e, k, t] = sum_c U[e, k, c] V[e, c, t]  alpha^2 independent GEMMs
    y_kt       = A^T M[:, k, t] A             output tiles (+ epilogue)

The multiplies drop from 9 m^2 to alpha^2 per tile and channel pair (2.25x
for m=2, 4x for m=4). The GEMM is what a schedule transforms: spatial axes
``e`` (transform element), ``k``, ``t`` (tile) and reduction axis ``c``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convtune.ir.compute import REDUCE, SPATIAL, AlgorithmCompute, Axis
from convtune.ir.workload import Conv2D

# (B^T, G, A^T) for F(2, 3) and F(4, 3) (interpolation points 0, +-1, +-2, inf).
MATRICES: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {
    2: (
        np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
        np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64),
    ),
    4: (
        np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], np.float64),
    ),
}


def applies(wl: Conv2D) -> bool:
    return (wl.R, wl.S) == (3, 3) and wl.stride == (1, 1) and wl.dilation == (1, 1) and wl.groups == 1


@dataclass(frozen=True)
class WinogradCompute(AlgorithmCompute):
    """The batched GEMM of Winograd F(m x m, 3 x 3) for a conv workload."""

    m: int

    def __post_init__(self) -> None:
        if self.m not in MATRICES:
            raise ValueError(f"winograd: tile size m={self.m} is not one of {sorted(MATRICES)}")
        if not applies(self.workload):
            raise ValueError(f"winograd: needs a 3x3, stride-1, undilated, ungrouped conv, got {self.workload.short()}")

    @property
    def alpha(self) -> int:
        return self.m + 2

    @property
    def tiles_h(self) -> int:
        return -(-self.workload.P // self.m)

    @property
    def tiles_w(self) -> int:
        return -(-self.workload.Q // self.m)

    @property
    def tiles(self) -> int:
        return self.workload.N * self.tiles_h * self.tiles_w

    @property
    def spatial(self) -> tuple[Axis, ...]:
        return (Axis("e", self.alpha ** 2, SPATIAL), Axis("k", self.workload.K, SPATIAL),
                Axis("t", self.tiles, SPATIAL))

    @property
    def reduce(self) -> tuple[Axis, ...]:
        return (Axis("c", self.workload.C, REDUCE),)

    def transform_weights(self, weight: np.ndarray) -> np.ndarray:
        """U = G g G^T as a [K, C, alpha^2, 1] array (float64 math, float32
        result), so it packs like a KCRS weight with R = alpha^2, S = 1.
        Two matrix products over all K*C kernels at once: an einsum over the
        four indices took 1.8 s of resnet18's warm start (13 layers). A
        block of output channels at a time, so the float64 temporaries stay
        a few MB (whole, a 512x512 layer's added 100 MB to the peak)."""
        _, g, _ = MATRICES[self.m]
        k, c, r, s = weight.shape
        a = self.alpha
        out = np.empty((k, c, a * a, 1), np.float32)
        step = max(1, 2 ** 16 // (c * r))
        for k0 in range(0, k, step):
            w = weight[k0:k0 + step].astype(np.float64)
            n = w.shape[0] * c
            x = w.reshape(n * r, s) @ g.T  # [(k c i), b]
            u = g @ x.reshape(n, r, a).transpose(1, 0, 2).reshape(r, n * a)  # [a, (k c b)]
            out[k0:k0 + step] = u.reshape(a, w.shape[0], c, a).transpose(1, 2, 0, 3).reshape(-1, c, a * a, 1)
        return out

    def __str__(self) -> str:
        return (f"winograd F({self.m}x{self.m}, 3x3) of {self.workload.short()}: M[e<{self.alpha ** 2}, "
                f"k<{self.workload.K}, t<{self.tiles}] = sum[c<{self.workload.C}](U[e, k, c] * V[e, c, t])")
