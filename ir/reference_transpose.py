"""A float64 numpy reference for transposed convolution (``ConvTranspose2D``, ONNX ConvTranspose).

Written from the definition, independently of the lowerings to ``Conv2D``
(``ir.conv_transpose_lowering``): each input pixel scatters the kernel into
the output, one batched matmul per kernel tap, so a mistake in a lowering's
index arithmetic cannot hide in the reference too.
"""
from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from convtune.ir.reference import activation_reference
from convtune.ir.workload_transpose import ConvTranspose2D


def scatter_transposed(x: np.ndarray, w: np.ndarray, groups: int, strides: Sequence[int],
                       dilations: Sequence[int], begins: Sequence[int], out: Sequence[int]) -> np.ndarray:
    """The transposed convolution of ``x`` (N, C, *spatial) with ``w`` (C,
    K/groups, *kernel) over any number of spatial axes, in float64: the full
    scatter, cropped by ``begins`` at the start of each axis to the size
    ``out`` (zero where ``out`` reaches past the scatter: ONNX's output
    padding and larger explicit output shapes)."""
    nd = x.ndim - 2
    N, C, spatial = x.shape[0], x.shape[1], x.shape[2:]
    kernel, Kg = w.shape[2:], w.shape[1]
    full = [max((i - 1) * s + (k - 1) * d + 1, b + o)
            for i, s, k, d, b, o in zip(spatial, strides, kernel, dilations, begins, out)]
    y = np.zeros((N, groups, Kg, *full))
    xg = x.astype(np.float64).reshape(N, groups, C // groups, -1)
    wg = w.astype(np.float64).reshape(groups, C // groups, Kg, *kernel)
    for tap in itertools.product(*(range(k) for k in kernel)):
        part = np.einsum("ngcp,gck->ngkp", xg, wg[(Ellipsis, *tap)]).reshape(N, groups, Kg, *spatial)
        where = tuple(slice(t * d, t * d + (i - 1) * s + 1, s) for t, d, i, s in zip(tap, dilations, spatial, strides))
        y[(slice(None),) * 3 + where] += part
    crop = tuple(slice(b, b + o) for b, o in zip(begins, out))
    return y[(slice(None),) * 3 + crop].reshape(N, groups * Kg, *out[:nd])


def conv2d_transpose_reference(wl: ConvTranspose2D, data: np.ndarray, weight: np.ndarray,
                               bias: np.ndarray | None = None) -> np.ndarray:
    """``act(conv_transpose(data, weight) + bias)`` in float64, NCHW."""
    y = scatter_transposed(data, weight, wl.groups, wl.stride, wl.dilation, wl.padding[:2], (wl.P, wl.Q))
    if wl.bias:
        y = y + np.asarray(bias, np.float64)[None, :, None, None]
    return y if wl.activation is None else activation_reference(wl.activation, y)
