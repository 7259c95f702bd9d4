"""Operators that run as compiled calls (``codegen.op_kernels``), bound at plan time.

An ``OpCall`` names a kernel of ``op_kernels``, its flat float32 arrays and
its scalar arguments. The plan's Python loop calls it directly; the plan's
compiled driver (``codegen.model_driver``) calls the same kernel, compiled
for the same arguments, through its address, so one description serves both. ``op_call`` returns None for an
operator (or a form of it) without a kernel: the plan runs its numpy step.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from convtune.codegen import op_kernels
from convtune.ir.graph import Node
from convtune.schedules.state import BlockedLayout


class OpCall:
    """``op_kernels.<name>(*arrays, *scalars)``; calling it runs the kernel."""

    def __init__(self, name: str, arrays: tuple[np.ndarray, ...], scalars: tuple[int, ...]) -> None:
        for a in arrays:
            if a.dtype != np.float32 or a.ndim != 1 or not a.flags.c_contiguous:
                raise ValueError(f"{name}: arrays must be flat C-contiguous float32, got {a.dtype} {a.shape}")
        self.name = name
        self.arrays = arrays
        self.scalars = scalars
        self._kernel = getattr(op_kernels, name)

    def __call__(self) -> None:
        self._kernel(*self.arrays, *self.scalars)


class OpSequence:
    """Several ``OpCall`` s computing one node in turn (a sub-pixel transposed
    conv's ``Interleave``: one call per phase); the compiled driver inlines them."""

    def __init__(self, calls: tuple[OpCall, ...]) -> None:
        self.calls = calls

    def __call__(self) -> None:
        for call in self.calls:
            call()


def _flat(a: np.ndarray) -> np.ndarray:
    """A flat view of a plan buffer (never a copy: the call must see the buffer)."""
    flat = a.reshape(-1)
    if not np.shares_memory(flat, a):
        raise ValueError("a plan buffer must be contiguous")
    return flat


def _max_pool(node: Node, x: np.ndarray, out: np.ndarray,
              layouts: tuple[BlockedLayout, BlockedLayout] | None) -> OpCall | None:
    """NCHW, or with ``layouts`` (input, output) blocked: ``x`` and ``out``
    the physical arrays, a pixel a channel block, the output's border untouched."""
    a = node.attrs
    window = (*a["kernel_shape"], *a["strides"], *a["pads"][:2], *a["dilations"])
    if layouts is not None:
        source, pooled = layouts
        (N, blocks, H, W, block), (P, Q) = source.shape, pooled.tensor[2:]
        return OpCall("max_pool", (_flat(x), _flat(out)),
                      (N * blocks, H, W, P, Q, *window, block, pooled.top, pooled.left, pooled.rows, pooled.cols))
    if x.ndim != 4:
        return None
    (N, C, H, W), (P, Q) = x.shape, out.shape[2:]
    return OpCall("max_pool", (_flat(x), _flat(out)), (N * C, H, W, P, Q, *window, 1, 0, 0, P, Q))


def _global_average_pool(x: np.ndarray, out: np.ndarray) -> OpCall:
    planes = x.shape[0] * x.shape[1]
    return OpCall("global_average_pool", (_flat(x), _flat(out)), (planes, x.size // planes))


def _plane_broadcast(node: Node, ins: list[np.ndarray], out: np.ndarray) -> OpCall | None:
    """Mul or Add of a tensor (N, C, ...) and one value per channel plane,
    shaped (N, C, 1, ...) or (1, C, 1, ...) or right-aligned without the
    leading ones, either operand first (both operators commute)."""
    if len(ins) != 2 or out.ndim < 3:
        return None
    for x, s in (ins, ins[::-1]):
        shape = (1,) * (x.ndim - s.ndim) + s.shape
        if x.shape == out.shape and len(shape) == x.ndim and shape[0] in (1, x.shape[0]) \
                and shape[1] == x.shape[1] and all(d == 1 for d in shape[2:]):
            planes = x.shape[0] * x.shape[1]
            return OpCall("plane_broadcast", (_flat(x), _flat(s), _flat(out)),
                          (planes, x.size // planes, s.size, int(node.op == "Mul")))
    return None


def _gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray | None, out: np.ndarray, trans_b: bool,
          alpha: float, beta: float) -> OpCall:
    """``out = alpha a b + beta c`` with the constant ``b`` (and ``c``) laid
    out once: ``b`` as N x K rows, ``c`` broadcast to M x N."""
    M, N = out.shape
    bt = np.ascontiguousarray(alpha * (b if trans_b else b.T), np.float32)
    cc = np.zeros((M, N), np.float32) if c is None else np.ascontiguousarray(
        np.broadcast_to(beta * c, (M, N)), np.float32)
    return OpCall("gemm", (_flat(a), bt.reshape(-1), cc.reshape(-1), _flat(out)), (M, N, a.shape[1]))


def _layer_norm(node: Node, ins: list[np.ndarray], out: np.ndarray) -> OpCall:
    """Y only (a node that also outputs Mean or InvStdDev has no call); the
    constant scale and bias laid out once as one row each."""
    shape = out.shape[node.attrs["axis"]:]
    row = [np.ascontiguousarray(np.broadcast_to(v, shape), np.float32).reshape(-1)
           for v in (ins[1], ins[2] if len(ins) > 2 else np.zeros(1, np.float32))]
    size = row[0].size
    eps = np.array([node.attrs["epsilon"]], np.float32)  # an array: calls take integer scalars only
    return OpCall("layer_norm", (_flat(ins[0]), *row, eps, _flat(out)), (out.size // size, size))


def _place_input(node: Node, x: np.ndarray, out: np.ndarray) -> OpCall:
    (N, C, H, W), (Hi, Wi) = x.shape, out.shape[2:]
    return OpCall("place_input", (_flat(x), _flat(out)),
                  (N * C, H, W, Hi, Wi, *node.attrs["offset"], *node.attrs["step"]))


def _interleave(node: Node, phases: list[np.ndarray], out: np.ndarray) -> OpSequence:
    a = node.attrs
    (N, K, P, Q), step = out.shape, a["step"]
    calls = [OpCall("interleave_phase", (_flat(x), _flat(out)), (N * K, *x.shape[2:], P, Q, *phase, *step))
             for phase, x in zip(a["phases"], phases)]
    fill = np.ascontiguousarray(a["fill"], np.float32).reshape(-1)
    calls += [OpCall("fill_phase", (fill, _flat(out)), (N * K, K, P, Q, *phase, *step)) for phase in a["fills"]]
    return OpSequence(tuple(calls))


def op_call(node: Node, ins: list[np.ndarray], outs: list[np.ndarray], constants: Mapping[str, np.ndarray],
            layouts: Mapping[str, BlockedLayout] | None = None) -> OpCall | OpSequence | None:
    """The compiled call computing ``node`` from the plan arrays ``ins`` into
    ``outs``, or None. Weights are laid out here, so they must be constants.
    ``layouts``: the node's tensors that the plan keeps blocked (only a
    MaxPool's, ``codegen.layout_plan``; their arrays are the physical ones)."""
    arrays = [*ins, *outs]
    if len(outs) != 1 or not all(a.dtype == np.float32 and a.flags.c_contiguous for a in arrays):
        return None
    out, named = outs[0], [t for t in node.inputs if t]
    if layouts:
        if node.op != "MaxPool" or set(layouts) != {node.inputs[0], node.outputs[0]}:
            raise ValueError(f"{node.name}: only a MaxPool runs on blocked tensors, input and output both "
                             f"(got {node.op} with {sorted(layouts)})")
        return _max_pool(node, ins[0], out, (layouts[node.inputs[0]], layouts[node.outputs[0]]))
    if node.op == "MaxPool":
        return _max_pool(node, ins[0], out, None)
    if node.op == "PlaceInput":
        return _place_input(node, ins[0], out)
    if node.op == "Interleave":
        return _interleave(node, ins, out)
    if node.op == "GlobalAveragePool" and ins[0].ndim >= 3:
        return _global_average_pool(ins[0], out)
    if node.op in ("Mul", "Add"):
        return _plane_broadcast(node, ins, out)
    const = all(t in constants for t in named[1:])
    if node.op == "Gemm" and const and not node.attrs["transA"]:
        c = ins[2] if len(ins) > 2 else None
        return _gemm(ins[0], ins[1], c, out, bool(node.attrs["transB"]), node.attrs["alpha"], node.attrs["beta"])
    if node.op == "MatMul" and const and ins[0].ndim >= 2 and ins[1].ndim == 2:  # a Linear on N-D input
        rows = ins[0].reshape(-1, ins[0].shape[-1])
        return _gemm(rows, ins[1], None, out.reshape(rows.shape[0], -1), False, 1.0, 1.0)
    if node.op in ("Erf", "Gelu"):
        tanh = (int(node.attrs["tanh"]),) if node.op == "Gelu" else ()
        return OpCall(node.op.lower(), (_flat(ins[0]), _flat(out)), (out.size, *tanh))
    if node.op == "LayerNormalization" and const:
        return _layer_norm(node, ins, out)
    return None
