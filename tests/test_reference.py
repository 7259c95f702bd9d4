"""The float64 reference every kernel is checked against is itself checked:
against a direct sum over the convolution's definition (no padded copy, no
matmul per tap: each output pixel sums its window, skipping taps that fall in
the padding) and against onnxruntime's Conv, over groups, depthwise,
dilation, stride, asymmetric padding and odd sizes."""
from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convtune.ir import conv2d, conv2d_reference, relative_error
from convtune.ir.workload import Conv2D
from convtune.tuner.peers import onnxruntime_conv
from test_property import workloads


def direct_sum(wl: Conv2D, data: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
               residual: np.ndarray | None) -> np.ndarray:
    """``conv + bias + residual`` from the definition: output pixel (p, q)
    sums, per group, input pixel (p*stride - pad_begin + r*dilation, ...) times
    weight tap (r, s) over the taps that land inside the image."""
    (sh, sw), (dh, dw), (top, left, _, _) = wl.stride, wl.dilation, wl.padding
    x = data.astype(np.float64).reshape(wl.N, wl.groups, wl.Cg, wl.H, wl.W)
    w = weight.astype(np.float64).reshape(wl.groups, wl.Kg, wl.Cg, wl.R, wl.S)
    out = np.zeros((wl.N, wl.groups, wl.Kg, wl.P, wl.Q))
    for p in range(wl.P):
        for q in range(wl.Q):
            for r in range(wl.R):
                for s in range(wl.S):
                    h, v = p * sh - top + r * dh, q * sw - left + s * dw
                    if 0 <= h < wl.H and 0 <= v < wl.W:
                        out[:, :, :, p, q] += np.einsum("ngc,gkc->ngk", x[:, :, :, h, v], w[:, :, :, r, s])
    y = out.reshape(wl.out_shape)
    if bias is not None:
        y += bias[None, :, None, None]
    if residual is not None:
        y += residual
    return y


def random_inputs(wl: Conv2D, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Data, weight, bias and residual in [-1, 1), float32 (what kernels take)."""
    rng = np.random.default_rng(seed)
    shapes = wl.data_shape, wl.weight_shape, (wl.K,), wl.out_shape
    return tuple(rng.uniform(-1, 1, shape).astype(np.float32) for shape in shapes)  # type: ignore[return-value]


@settings(max_examples=60)
@given(workloads(), st.integers(0, 2**32 - 1))
def test_reference_is_the_direct_sum(wl, seed):
    wl = dataclasses.replace(wl, activation=None)  # activations are checked on their own (test_activations)
    x, w, b, res = random_inputs(wl, seed)
    bias, residual = (b if wl.bias else None), (res if wl.residual else None)
    ref = conv2d_reference(wl, x, w, bias, residual)
    assert ref.shape == wl.out_shape and ref.dtype == np.float64
    assert relative_error(ref, direct_sum(wl, x, w, bias, residual)) < 1e-12


def test_direct_sum_by_hand():
    """The direct sum itself, on a layer small enough to work out: one input
    channel of ones, 2x2 kernel of ones, stride 2, padding only at the top and
    left: each output counts the taps inside the 3x3 image."""
    wl = conv2d(1, 1, 3, 3, 1, 2, stride=2, padding=(1, 1, 0, 0))
    ones = np.ones((1, 1, 3, 3), np.float32), np.ones((1, 1, 2, 2), np.float32)
    expected = np.array([[1.0, 2.0], [2.0, 4.0]])
    assert np.array_equal(direct_sum(wl, *ones, None, None)[0, 0], expected)
    assert np.array_equal(conv2d_reference(wl, *ones)[0, 0], expected)


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")
@settings(max_examples=40)
@given(workloads(), st.integers(0, 2**32 - 1))
def test_reference_agrees_with_onnxruntime(wl, seed):
    wl = dataclasses.replace(wl, bias=False, residual=False, activation=None)  # ONNX Conv has no epilogue
    x, w, _, _ = random_inputs(wl, seed)
    assert relative_error(onnxruntime_conv(wl, x, w, threads=1)(), conv2d_reference(wl, x, w)) < 1e-5
