"""The ``numba.cuda`` kernels of a model's operators that are not convs.

The GPU counterpart of ``op_kernels``: one thread per output element (per
row for a reduction or a softmax), over flat float32 arrays, so a model's
activations stay in device memory from layer to layer. They are generic in
their shapes: sizes and strides come as scalars or a small int64 table that
the plan uploads once, so each kernel compiles once for every model (the
convs, whose speed matters, are the ones specialised per shape). Each kernel
has one signature, compiled on first use (``compiled``), which is what a
prepared launch (``codegen.cuda_launch.Launch``) marshals against.

Index tables (``meta``) for the strided kernels are
``[ndim, shape..., strides1..., strides2..., base1, base2]``: a flat index
of the iteration shape maps to ``base_g + sum(index_d * strides_g[d])`` in
operand g (1: the source or first input, 2: the destination or second input).
NaN propagates through every kernel as it does in numpy.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from numba import cuda

UNARY = {"Relu": 0, "LeakyRelu": 1, "Clip": 2, "Sigmoid": 3, "Tanh": 4, "HardSigmoid": 5, "HardSwish": 6,
         "Copy": 7}
"""Operator -> code of the ``unary`` kernel (``alpha`` and ``beta`` its parameters; Clip: lo and hi)."""
BINARY = {"Add": 0, "Sub": 1, "Mul": 2, "Div": 3}
"""Operator -> code of the ``binary`` kernel."""

F0 = np.float32(0.0)
F1 = np.float32(1.0)
NEG_INF = np.float32(-np.inf)


@cuda.jit(device=True, inline=True)
def _offset(i, meta, group):  # type: ignore[no-untyped-def]
    """Where flat index ``i`` of the iteration shape lies in operand ``group`` (1 or 2)."""
    nd = meta[0]
    rest = i
    offset = meta[3 * nd + group]
    for d in range(nd - 1, -1, -1):
        size = meta[1 + d]
        offset += (rest % size) * meta[1 + group * nd + d]
        rest //= size
    return offset


@cuda.jit(device=True, inline=True)
def _hard_sigmoid(x, alpha, beta):  # type: ignore[no-untyped-def]
    y = alpha * x + beta
    y = F0 if y < F0 else y
    return F1 if y > F1 else y


@cuda.jit(device=True, inline=True)
def _activate(x, op, alpha, beta):  # type: ignore[no-untyped-def]
    if op == 0:
        return F0 if x < F0 else x
    if op == 1:
        return x * alpha if x < F0 else x
    if op == 2:  # min(max(x, lo), hi): hi wins when lo > hi, as in onnxruntime
        y = alpha if x < alpha else x
        return beta if y > beta else y
    if op == 3:
        e = math.exp(-abs(x))  # never overflows
        return F1 / (F1 + e) if x >= F0 else e / (F1 + e)
    if op == 4:
        return math.tanh(x)
    if op == 5:
        return _hard_sigmoid(x, alpha, beta)
    if op == 6:
        return x * _hard_sigmoid(x, np.float32(1.0 / 6.0), np.float32(0.5))
    return x


@cuda.jit(device=True, inline=True)
def _combine(a, b, op):  # type: ignore[no-untyped-def]
    if op == 0:
        return a + b
    if op == 1:
        return a - b
    if op == 2:
        return a * b
    return a / b


def unary(x, out, n, op, alpha, beta):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < n:
        out[i] = _activate(x[i], op, alpha, beta)


def binary(a, b, out, meta, n, op):  # type: ignore[no-untyped-def]
    """``out`` (contiguous) = a op b, each input read through its broadcast strides."""
    i = cuda.grid(1)
    if i < n:
        out[i] = _combine(a[_offset(i, meta, 1)], b[_offset(i, meta, 2)], op)


def strided_copy(src, dst, meta, n):  # type: ignore[no-untyped-def]
    """Concat (into a slab of the output), Split and Slice (from one of the
    input), Transpose (permuted strides), a copy."""
    i = cuda.grid(1)
    if i < n:
        dst[_offset(i, meta, 2)] = src[_offset(i, meta, 1)]


def pool(x, out, meta, n, average):  # type: ignore[no-untyped-def]
    """2-D max or average pool of NCHW planes; ``meta`` = [H, W, P, Q, kh,
    kw, sh, sw, top, left, dh, dw, count_include_pad, bottom, right]."""
    i = cuda.grid(1)
    if i < n:
        H, W, P, Q = meta[0], meta[1], meta[2], meta[3]
        q = i % Q
        p = i // Q % P
        base = i // (P * Q) * H * W
        acc = F0 if average else NEG_INF
        count = 0
        for r in range(meta[4]):
            y = p * meta[6] - meta[8] + r * meta[10]
            for s in range(meta[5]):
                x_ = q * meta[7] - meta[9] + s * meta[11]
                if 0 <= y < H and 0 <= x_ < W:
                    v = x[base + y * W + x_]
                    if average:
                        acc += v
                    elif v > acc or v != v:
                        acc = v
                    count += 1
                elif meta[12] and -meta[8] <= y < H + meta[13] and -meta[9] <= x_ < W + meta[14]:
                    count += 1  # an explicit pad counted by count_include_pad
        out[i] = acc / np.float32(max(count, 1)) if average else acc


def plane_reduce(x, out, planes, size, average):  # type: ignore[no-untyped-def]
    """Mean or max of each of ``planes`` contiguous runs of ``size`` (global pools, ReduceMean)."""
    i = cuda.grid(1)
    if i < planes:
        acc = F0 if average else NEG_INF
        for j in range(i * size, (i + 1) * size):
            v = x[j]
            if average:
                acc += v
            elif v > acc or v != v:
                acc = v
        out[i] = acc / np.float32(size) if average else acc


def gemm(a, b, c, out, meta, alpha, beta):  # type: ignore[no-untyped-def]
    """out[m, n] = alpha sum_k a[m, k] b[k, n] + beta c[m, n], each operand
    through its strides; ``meta`` = [M, N, K, a_m, a_k, b_k, b_n, c_m, c_n, has_c]."""
    i = cuda.grid(1)
    if i < meta[0] * meta[1]:
        m = i // meta[1]
        col = i % meta[1]
        acc = F0
        for k in range(meta[2]):
            acc += a[m * meta[3] + k * meta[4]] * b[k * meta[5] + col * meta[6]]
        acc *= alpha
        if meta[9]:
            acc += beta * c[m * meta[7] + col * meta[8]]
        out[i] = acc


def softmax(x, out, rows, length):  # type: ignore[no-untyped-def]
    """Softmax of each of ``rows`` contiguous rows of ``length``."""
    i = cuda.grid(1)
    if i < rows:
        start = i * length
        top = NEG_INF
        for j in range(start, start + length):
            top = x[j] if x[j] > top or x[j] != x[j] else top
        total = F0
        for j in range(start, start + length):
            e = math.exp(x[j] - top)
            out[j] = e
            total += e
        for j in range(start, start + length):
            out[j] /= total


_ARRAY = "float32[::1]"
_TABLE = "int64[::1]"
SIGNATURES: dict[str, tuple[Any, str]] = {
    "unary": (unary, f"void({_ARRAY}, {_ARRAY}, int64, int64, float32, float32)"),
    "binary": (binary, f"void({_ARRAY}, {_ARRAY}, {_ARRAY}, {_TABLE}, int64, int64)"),
    "strided_copy": (strided_copy, f"void({_ARRAY}, {_ARRAY}, {_TABLE}, int64)"),
    "pool": (pool, f"void({_ARRAY}, {_ARRAY}, {_TABLE}, int64, boolean)"),
    "plane_reduce": (plane_reduce, f"void({_ARRAY}, {_ARRAY}, int64, int64, boolean)"),
    "gemm": (gemm, f"void({_ARRAY}, {_ARRAY}, {_ARRAY}, {_ARRAY}, {_TABLE}, float32, float32)"),
    "softmax": (softmax, f"void({_ARRAY}, {_ARRAY}, int64, int64)"),
}


@functools.cache
def compiled(name: str) -> Any:
    """The kernel ``name`` compiled for its one signature (numba's disk cache
    keeps it across processes)."""
    fn, signature = SIGNATURES[name]
    return cuda.jit(signature, cache=True)(fn)
