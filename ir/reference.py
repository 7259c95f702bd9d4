"""A float64 numpy reference for conv2d, the ground truth every kernel is checked against."""
from __future__ import annotations

import numpy as np

from convtune.ir.workload import Activation, Conv2D


def conv2d_reference(
    wl: Conv2D,
    data: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    residual: np.ndarray | None = None,
) -> np.ndarray:
    """``act(conv(data, weight) + bias + residual)`` in float64, NCHW.

    Written independently of the IR (padding by ``np.pad``, one batched matmul
    per kernel tap) so a bug in the compute definition cannot hide in both.
    """
    top, left, bottom, right = wl.padding
    x = np.pad(data.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    w = weight.astype(np.float64).reshape(wl.groups, wl.Kg, wl.Cg, wl.R, wl.S)
    (sh, sw), (dh, dw), P, Q = wl.stride, wl.dilation, wl.P, wl.Q
    out = np.zeros((wl.N, wl.groups, wl.Kg, P * Q))
    for r in range(wl.R):
        for s in range(wl.S):
            tap = x[:, :, r * dh: r * dh + (P - 1) * sh + 1: sh, s * dw: s * dw + (Q - 1) * sw + 1: sw]
            tap = tap.reshape(wl.N, wl.groups, wl.Cg, P * Q)
            out += w[None, :, :, :, r, s] @ tap
    y = out.reshape(wl.N, wl.K, P, Q)
    if wl.bias:
        y = y + np.asarray(bias, np.float64)[None, :, None, None]
    if wl.residual:
        y = y + np.asarray(residual, np.float64)
    return y if wl.activation is None else activation_reference(wl.activation, y)


def _sigmoid(y: np.ndarray) -> np.ndarray:
    """Without overflow warnings: exp of a non-positive number only."""
    e = np.exp(-np.abs(y))
    return np.where(y >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def activation_reference(act: Activation, y: np.ndarray) -> np.ndarray:
    """``act(y)`` in float64, from the definitions (ONNX's for the hard ones)."""
    if act.kind == "relu":
        return np.maximum(y, 0.0)
    if act.kind == "clip":
        return np.clip(y, act.lo, act.hi)
    if act.kind == "leaky_relu":
        return np.where(y > 0, y, y * act.alpha)
    if act.kind == "sigmoid":
        return _sigmoid(y)
    if act.kind == "hardsigmoid":
        return np.maximum(0.0, np.minimum(1.0, act.alpha * y + act.beta))
    if act.kind == "hardswish":
        return y * np.clip(y + 3.0, 0.0, 6.0) / 6.0
    if act.kind == "silu":
        return y * _sigmoid(y)
    if act.kind == "tanh":
        return np.tanh(y)
    raise ValueError(f"activation: no reference for kind {act.kind!r}")


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    """``max|got - ref| / max|ref|``: a norm-wise error that stays meaningful
    where single outputs are near zero. NaN (an unwritten, poisoned output)
    gives infinity."""
    diff = np.abs(got.astype(np.float64) - ref)
    if not np.all(np.isfinite(diff)):
        return float("inf")
    scale = max(float(np.max(np.abs(ref))), np.finfo(np.float32).tiny)
    return float(np.max(diff)) / scale
