"""What each supported ONNX operator computes, written once in numpy.

Constant folding evaluates nodes with these functions and the runtime runs
every operator but the fused convolution with them, so the frontend, the
passes and the runtime cannot disagree about an operator's meaning.
Attributes arrive normalised by the frontend (see ``convtune.ir.graph``):
the functions never look at an opset. Spatial operators (convolutions,
pools, padding, resizing) are in ``op_semantics_spatial``.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

Evaluator = Callable[[dict[str, Any], list[np.ndarray]], list[np.ndarray]]
EVALUATORS: dict[str, Evaluator] = {}


def evaluator(*ops: str, multi: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn(attrs, *inputs)`` for ``ops``; it returns an array, or a
    list of them when ``multi``; the registry always hands back a list."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(attrs: dict[str, Any], inputs: list[np.ndarray]) -> list[np.ndarray]:
            result = fn(attrs, *inputs)
            return [np.asarray(r) for r in result] if multi else [np.asarray(result)]

        for op in ops:
            EVALUATORS[op] = run
        return fn

    return register


def _like(x: np.ndarray, value: Any) -> np.ndarray:
    """``value`` in ``x``'s dtype (numpy would widen float32 by a float64 scalar)."""
    return np.asarray(value).astype(x.dtype, copy=False)


# -- elementwise --------------------------------------------------------------
@evaluator("Relu")
def relu(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    return np.maximum(x, _like(x, 0))


@evaluator("LeakyRelu")
def leaky_relu(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, x, x * _like(x, attrs["alpha"]))


@evaluator("Clip")
def clip(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    # min(max(x, lo), hi): hi wins when lo > hi, as in onnxruntime
    y = x if attrs["min"] is None else np.maximum(x, _like(x, attrs["min"]))
    return y if attrs["max"] is None else np.minimum(y, _like(x, attrs["max"]))


@evaluator("Sigmoid")
def sigmoid(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    # 1/(1+exp(-x)) overflows exp for large negative x; this form does not
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


@evaluator("Tanh")
def tanh(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


@evaluator("HardSigmoid")
def hard_sigmoid(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    return np.clip(x * _like(x, attrs["alpha"]) + _like(x, attrs["beta"]), _like(x, 0), _like(x, 1))


@evaluator("HardSwish")
def hard_swish(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    return x * hard_sigmoid({"alpha": 1 / 6, "beta": 0.5}, x)


_ERF = np.frompyfunc(math.erf, 1, 1)
"""numpy has no erf; element by element in float64 serves constant folding
and the reference (the runtime has a compiled kernel, ``op_kernels.erf``)."""


@evaluator("Erf")
def erf(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    return _ERF(x.astype(np.float64)).astype(x.dtype)


@evaluator("Gelu")
def gelu(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    if attrs["tanh"]:
        inner = np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64 ** 3))
    else:
        inner = _ERF(x64 / math.sqrt(2)).astype(np.float64)
    return (0.5 * x64 * (1 + inner)).astype(x.dtype)


@evaluator("Add")
def add(attrs: dict[str, Any], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.add(a, b, dtype=a.dtype)


@evaluator("Sub")
def sub(attrs: dict[str, Any], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.subtract(a, b, dtype=a.dtype)


@evaluator("Mul")
def mul(attrs: dict[str, Any], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.multiply(a, b, dtype=a.dtype)


@evaluator("Div")
def div(attrs: dict[str, Any], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer):  # ONNX (like C) truncates toward zero
        q = np.abs(a) // np.abs(b)
        return np.where((a < 0) != (b < 0), -q, q).astype(a.dtype)
    return np.divide(a, b, dtype=a.dtype)


@evaluator("Identity", "Dropout")
def identity(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    return x


@evaluator("Cast")
def cast(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    return x.astype(attrs["to"])


@evaluator("BatchNormalization")
def batch_norm(attrs: dict[str, Any], x: np.ndarray, scale: np.ndarray, b: np.ndarray, mean: np.ndarray,
               var: np.ndarray) -> np.ndarray:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    factor = scale / np.sqrt(var + _like(var, attrs["epsilon"]))
    return ((x - mean.reshape(shape)) * factor.reshape(shape) + b.reshape(shape)).astype(x.dtype, copy=False)


@evaluator("LayerNormalization", multi=True)
def layer_norm(attrs: dict[str, Any], x: np.ndarray, scale: np.ndarray, b: np.ndarray | None = None
               ) -> list[np.ndarray]:
    """Y, and the Mean and InvStdDev outputs (shape: x's, 1 on the normalised axes)."""
    axes = tuple(range(attrs["axis"], x.ndim))
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=axes, keepdims=True)
    inv = 1 / np.sqrt(((x64 - mean) ** 2).mean(axis=axes, keepdims=True) + attrs["epsilon"])
    y = (x64 - mean) * inv * scale + (0 if b is None else b)
    return [y.astype(x.dtype), mean.astype(x.dtype), inv.astype(x.dtype)]


@evaluator("Softmax")
def softmax(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    axes = tuple(attrs["axes"])
    e = np.exp(x - np.max(x, axis=axes, keepdims=True))
    return e / np.sum(e, axis=axes, keepdims=True)


# -- shapes and data movement -------------------------------------------------
@evaluator("Shape")
def shape(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    return np.array(x.shape[attrs["start"]:attrs["end"]], np.int64)


@evaluator("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """All four are a reshape to the output shape the frontend computed."""
    return x.reshape(attrs["shape"])


@evaluator("Transpose")
def transpose(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    return np.transpose(x, attrs["perm"])


@evaluator("Concat")
def concat(attrs: dict[str, Any], *xs: np.ndarray) -> np.ndarray:
    return np.concatenate(xs, axis=attrs["axis"])


@evaluator("Split", multi=True)
def split(attrs: dict[str, Any], x: np.ndarray) -> list[np.ndarray]:
    return np.split(x, np.cumsum(attrs["split"])[:-1], axis=attrs["axis"])


@evaluator("Slice")
def slice_(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    return x[tuple(slice(*s) for s in attrs["slices"])]


@evaluator("Gather")
def gather(attrs: dict[str, Any], x: np.ndarray, indices: np.ndarray) -> np.ndarray:
    return np.take(x, indices.astype(np.int64), axis=attrs["axis"])


@evaluator("Constant", "ConstantOfShape")  # both normalised to their value
def constant(attrs: dict[str, Any]) -> np.ndarray:
    return attrs["value"]


# -- reductions and linear algebra --------------------------------------------
@evaluator("ReduceMean")
def reduce_mean(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    if not attrs["axes"]:
        return x.copy()
    return np.mean(x, axis=tuple(attrs["axes"]), keepdims=attrs["keepdims"], dtype=x.dtype)


@evaluator("GlobalAveragePool")
def global_average_pool(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    return np.mean(x, axis=tuple(range(2, x.ndim)), keepdims=True, dtype=x.dtype)


@evaluator("GlobalMaxPool")
def global_max_pool(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    return np.max(x, axis=tuple(range(2, x.ndim)), keepdims=True)


@evaluator("MatMul")
def matmul(attrs: dict[str, Any], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.matmul(a, b)


@evaluator("Gemm")
def gemm(attrs: dict[str, Any], a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
    a = a.T if attrs["transA"] else a
    b = b.T if attrs["transB"] else b
    y = (a @ b) * _like(a, attrs["alpha"])
    return y if c is None else y + c * _like(a, attrs["beta"])
