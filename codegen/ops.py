"""Runtime steps for the operators that are not convtune kernels.

A step is a closure with no arguments, bound at plan time to its input
arrays and its preallocated output arrays, so the execution loop does nothing
but call it. Elementwise operators write straight into their output with a
numpy ufunc; the rest evaluate the operator's numpy semantics
(``convtune.ir.op_semantics``) and copy the result into the output buffer.
Shape-only operators are not steps at all: their output is a view of their
input's buffer (``VIEW_OPS``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from convtune.ir.evaluate import evaluate
from convtune.ir.graph import Node

Step = Callable[[], None]

VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"})
"""Operators whose output is their input with another shape: no data moves."""

_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}


def _float(arrays: list[np.ndarray]) -> bool:
    return all(np.issubdtype(a.dtype, np.floating) for a in arrays)


def _ufunc_step(node: Node, ins: list[np.ndarray], out: np.ndarray) -> Step | None:
    """A step that computes straight into ``out``, where numpy can."""
    if not _float([*ins, out]):
        return None
    if node.op in _BINARY or node.op == "Div":
        fn, (a, b) = _BINARY.get(node.op, np.divide), ins
        return lambda: fn(a, b, out=out)
    if node.op == "Relu":
        (x,), zero = ins, out.dtype.type(0)
        return lambda: np.maximum(x, zero, out=out)
    if node.op == "Tanh":
        (x,) = ins
        return lambda: np.tanh(x, out=out)
    return None


def op_step(node: Node, ins: list[np.ndarray], outs: list[np.ndarray]) -> Step:
    """The step computing ``node`` from ``ins`` into ``outs``."""
    fast = _ufunc_step(node, ins, outs[0]) if len(outs) == 1 else None
    if fast is not None:
        return fast

    def run() -> None:
        for out, value in zip(outs, evaluate(node, ins)):
            np.copyto(out, value)

    return run
