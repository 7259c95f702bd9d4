"""What the spatial ONNX operators compute: convolutions, pools, Pad, Resize.

Numpy, written for clarity; the runtime uses these for everything but the
fused 2-D convolution (which runs convtune's kernels). Pads are ONNX's
``(begin_0, ..., begin_n, end_0, ..., end_n)`` over the spatial axes (for
Pad: over every axis), already resolved from ``auto_pad`` by the frontend.
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import Any, Iterator, Sequence

import numpy as np

from convtune.ir.op_semantics import evaluator
from convtune.ir.reference import conv2d_reference
from convtune.ir.reference_transpose import conv2d_transpose_reference, scatter_transposed
from convtune.ir.workload import Activation, Conv2D, conv2d
from convtune.ir.workload_transpose import ConvTranspose2D, conv2d_transpose


def conv_workload(attrs: dict[str, Any], data_shape: Sequence[int], weight_shape: Sequence[int], *,
                  bias: bool = False, residual: bool = False, activation: Activation | None = None) -> Conv2D:
    """The ``Conv2D`` of a 2-D ONNX Conv node with these input shapes."""
    N, C, H, W = data_shape
    K, _, R, S = weight_shape
    top, left, bottom, right = attrs["pads"]
    return conv2d(N, C, H, W, K, R, S, stride=tuple(attrs["strides"]), padding=(top, left, bottom, right),
                  dilation=tuple(attrs["dilations"]), groups=attrs["group"], bias=bias, residual=residual,
                  activation=activation)


@evaluator("Conv")
def conv(attrs: dict[str, Any], x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    wl = conv_workload(attrs, x.shape, w.shape, bias=b is not None)
    return conv2d_reference(wl, x, w, b).astype(x.dtype)


@evaluator("FusedConv")
def fused_conv(attrs: dict[str, Any], x: np.ndarray, w: np.ndarray, *rest: np.ndarray) -> np.ndarray:
    wl: Conv2D = attrs["workload"]
    bias = rest[0] if wl.bias else None
    residual = rest[-1] if wl.residual else None
    return conv2d_reference(wl, x, w, bias, residual).astype(x.dtype)


@evaluator("ConvTranspose")
def conv_transpose(attrs: dict[str, Any], x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Any number of spatial axes (the 2-D float32 ones with constant weights
    become ``FusedConvTranspose`` nodes and run convtune's kernels)."""
    nd = x.ndim - 2
    y = scatter_transposed(x, w, attrs["group"], attrs["strides"], attrs["dilations"], attrs["pads"][:nd],
                           attrs["output_shape"])
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * nd)
    return y.astype(x.dtype)


def conv_transpose_workload(attrs: dict[str, Any], data_shape: Sequence[int], weight_shape: Sequence[int], *,
                            bias: bool = False, activation: Activation | None = None) -> ConvTranspose2D:
    """The ``ConvTranspose2D`` of a 2-D ONNX ConvTranspose node (normalised
    attributes: begin pads and the output shape, any output padding in it)."""
    N, C, H, W = data_shape
    _, Kg, R, S = weight_shape
    top, left = attrs["pads"][:2]
    return conv2d_transpose(N, C, H, W, Kg * attrs["group"], R, S, stride=tuple(attrs["strides"]),
                            padding=(top, left, 0, 0), output_shape=tuple(attrs["output_shape"]),
                            dilation=tuple(attrs["dilations"]), groups=attrs["group"], bias=bias,
                            activation=activation)


@evaluator("FusedConvTranspose")
def fused_conv_transpose(attrs: dict[str, Any], x: np.ndarray, w: np.ndarray, *rest: np.ndarray) -> np.ndarray:
    wl: ConvTranspose2D = attrs["workload"]
    return conv2d_transpose_reference(wl, x, w, rest[0] if wl.bias else None).astype(x.dtype)


@evaluator("PlaceInput")
def place_input(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """A zero plane of ``shape`` with ``x[..., i, j]`` at ``offset + (i, j) * step``
    (what falls outside is dropped): a transposed conv's stride-dilated,
    re-padded or cropped input (``ir.conv_transpose_lowering``)."""
    (oh, ow), (sh, sw), (Hi, Wi) = attrs["offset"], attrs["step"], attrs["shape"]
    H, W = x.shape[2:]
    y = np.zeros((*x.shape[:2], Hi, Wi), x.dtype)
    rows = [i for i in range(H) if 0 <= oh + i * sh < Hi]
    cols = [j for j in range(W) if 0 <= ow + j * sw < Wi]
    if rows and cols:
        y[:, :, oh + rows[0] * sh:oh + rows[-1] * sh + 1:sh, ow + cols[0] * sw:ow + cols[-1] * sw + 1:sw] = \
            x[:, :, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return y


@evaluator("Interleave")
def interleave(attrs: dict[str, Any], *phases: np.ndarray) -> np.ndarray:
    """The output whose pixels ``[ph::sh, pw::sw]`` are phase input ``k`` for
    ``attrs["phases"][k] == (ph, pw)``, and ``attrs["fill"]`` (per channel) at
    the ``attrs["fills"]`` phases: sub-pixel transposed conv's last step."""
    (sh, sw), (N, K, P, Q) = attrs["step"], attrs["shape"]
    y = np.empty((N, K, P, Q), phases[0].dtype if phases else np.float32)
    for (ph, pw), part in zip(attrs["phases"], phases):
        y[:, :, ph::sh, pw::sw] = part
    for ph, pw in attrs["fills"]:
        y[:, :, ph::sh, pw::sw] = attrs["fill"].reshape(1, K, 1, 1)
    return y


def pool_output_size(size: int, kernel: int, stride: int, dilation: int, begin: int, end: int, ceil: bool) -> int:
    """ONNX's (and PyTorch's) rule: with ``ceil_mode`` the last window may
    run past the padding, but must start inside the input or its left pad."""
    span = size + begin + end - ((kernel - 1) * dilation + 1)
    out = (math.ceil if ceil else math.floor)(span / stride) + 1
    if ceil and (out - 1) * stride >= size + begin:
        out -= 1
    return out


def _taps(x: np.ndarray, attrs: dict[str, Any], fill: float, out: Sequence[int]) -> Iterator[np.ndarray]:
    """For each kernel tap, the input pixels it sees at every output position
    (``x`` padded with ``fill``): reducing over taps is one vector op each."""
    nd = len(attrs["kernel_shape"])
    spatial, pads, strides, dilations = x.shape[-nd:], attrs["pads"], attrs["strides"], attrs["dilations"]
    ends = [(o - 1) * s + (k - 1) * d + 1 - i - b
            for o, s, k, d, i, b in zip(out, strides, attrs["kernel_shape"], dilations, spatial, pads[:nd])]
    widths = [(0, 0)] * (x.ndim - nd) + list(zip(pads[:nd], [max(e, 0) for e in ends]))
    padded = np.pad(x, widths, constant_values=fill)
    for tap in itertools.product(*(range(k) for k in attrs["kernel_shape"])):
        yield padded[(Ellipsis, *(slice(t * d, t * d + (o - 1) * s + 1, s)
                                  for t, d, o, s in zip(tap, dilations, out, strides)))]


def _pool_shape(attrs: dict[str, Any], spatial: Sequence[int]) -> list[int]:
    nd = len(spatial)
    return [pool_output_size(i, k, s, d, b, e, attrs["ceil_mode"])
            for i, k, s, d, b, e in zip(spatial, attrs["kernel_shape"], attrs["strides"], attrs["dilations"],
                                        attrs["pads"][:nd], attrs["pads"][nd:])]


@evaluator("MaxPool")
def max_pool(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    nd = len(attrs["kernel_shape"])
    lowest = -np.inf if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).min
    return functools.reduce(np.maximum, _taps(x, attrs, lowest, _pool_shape(attrs, x.shape[-nd:])))


@evaluator("AveragePool")
def average_pool(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """The divisor counts the real pixels of a window, or with
    ``count_include_pad`` also the explicit pads (never ceil_mode's overhang)."""
    nd = len(attrs["kernel_shape"])
    spatial = x.shape[-nd:]
    out = _pool_shape(attrs, spatial)
    total = functools.reduce(np.add, _taps(x.astype(np.float64), attrs, 0.0, out))
    counted = np.ones(spatial)
    if attrs["count_include_pad"]:
        counted = np.pad(counted, list(zip(attrs["pads"][:nd], attrs["pads"][nd:])), constant_values=1.0)
        attrs = {**attrs, "pads": [0] * (2 * nd)}
    count = functools.reduce(np.add, _taps(counted, attrs, 0.0, out))
    return (total / count).astype(x.dtype)


@evaluator("Pad")
def pad(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Negative pads crop; the rest is ``np.pad`` (its modes are ONNX's)."""
    pads, nd = attrs["pads"], x.ndim
    crop = tuple(slice(max(-b, 0), x.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(zip(pads[:nd], pads[nd:])))
    widths = [(max(b, 0), max(e, 0)) for b, e in zip(pads[:nd], pads[nd:])]
    if attrs["mode"] == "constant":
        return np.pad(x[crop], widths, constant_values=attrs["value"])
    return np.pad(x[crop], widths, mode=attrs["mode"])


def _source_coordinates(mode: str, out_len: int, in_len: int, scale: float) -> np.ndarray:
    """Where each output pixel samples the input (ONNX Resize's
    ``coordinate_transformation_mode``)."""
    x = np.arange(out_len, dtype=np.float64)
    if mode == "asymmetric":
        return x / scale
    if mode == "align_corners":
        return x * (in_len - 1) / (out_len - 1) if out_len > 1 else np.zeros(out_len)
    if mode == "pytorch_half_pixel" and out_len == 1:
        return np.zeros(out_len)
    offset = 0.0
    if mode == "half_pixel_symmetric":
        offset = in_len / 2 * (1 - out_len / (scale * in_len))
    return offset + (x + 0.5) / scale - 0.5


_NEAREST = {
    "round_prefer_floor": lambda c: np.ceil(c - 0.5),
    "round_prefer_ceil": lambda c: np.floor(c + 0.5),
    "floor": np.floor,
    "ceil": np.ceil,
}


@evaluator("Resize")
def resize(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Separable: one axis at a time (nearest picks, linear blends two)."""
    y = x.astype(np.float64) if attrs["mode"] == "linear" else x
    for axis, (in_len, out_len, scale) in enumerate(zip(x.shape, attrs["sizes"], attrs["scales"])):
        if in_len == out_len and scale == 1:
            continue
        coords = _source_coordinates(attrs["coordinate_transformation_mode"], out_len, in_len, scale)
        if attrs["mode"] == "nearest":
            index = np.clip(_NEAREST[attrs["nearest_mode"]](coords), 0, in_len - 1).astype(np.int64)
            y = np.take(y, index, axis=axis)
            continue
        low = np.floor(coords)
        frac = (coords - low).reshape((-1,) + (1,) * (x.ndim - axis - 1))
        i0 = np.clip(low, 0, in_len - 1).astype(np.int64)
        i1 = np.clip(low + 1, 0, in_len - 1).astype(np.int64)
        y = np.take(y, i0, axis=axis) * (1 - frac) + np.take(y, i1, axis=axis) * frac
    return y.astype(x.dtype, copy=False)
