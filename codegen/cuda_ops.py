"""Which of a model's operators run on the GPU, and their prepared launches.

``device_launches`` says, from a node's attributes and its tensors' shapes
and dtypes alone, which kernels of ``codegen.cuda_op_kernels`` compute it
(``LaunchSpec``: a kernel, its thread count, its arguments), or raises a
``GraphError`` naming the node, the operator and what the GPU lacks. The
CUDA plan calls it for every node before anything compiles, so a model the
GPU cannot run fails at once, never halfway through building. ``DeviceOp``
then binds the specs to the plan's device arrays and prepares the launches
once (``codegen.cuda_launch.Launch``): a run only calls them.

There is no host fallback: a run copies its inputs in and its outputs out
and nothing in between, so an operator without a device kernel is an error
(the CPU target runs the model instead).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from convtune.codegen.cuda_launch import CudaStage, Launch
from convtune.codegen.cuda_op_kernels import BINARY, UNARY, compiled
from convtune.codegen.render_cuda import linear_launch
from convtune.codegen.ops import VIEW_OPS
from convtune.ir.graph import GraphError, Node, TensorInfo



@dataclass(frozen=True)
class Operand:
    """The node's ``index``-th array: its (non-empty) inputs, then its outputs."""

    index: int


Arg = Operand | np.ndarray | int | float | bool
"""A kernel argument: a node array, an index table (uploaded once), a scalar."""


@dataclass(frozen=True)
class LaunchSpec:
    kernel: str
    """A kernel of ``cuda_op_kernels.SIGNATURES``."""
    threads: int
    args: tuple[Arg, ...]


def _strides(shape: Sequence[int]) -> list[int]:
    """Element strides of a C-contiguous array of ``shape``."""
    out, step = [], 1
    for d in reversed(shape):
        out.append(step)
        step *= d
    return out[::-1]


def _broadcast_strides(shape: Sequence[int], to: Sequence[int]) -> list[int]:
    """Strides reading a contiguous ``shape`` as if broadcast to ``to`` (0 on broadcast axes)."""
    pad = len(to) - len(shape)
    full = [1] * pad + list(shape)
    return [0 if n == 1 else s for n, s in zip(full, [0] * pad + _strides(shape))]


def _table(shape: Sequence[int], strides1: Sequence[int], strides2: Sequence[int], base1: int = 0,
           base2: int = 0) -> np.ndarray:
    """An index table of ``cuda_op_kernels`` (the iteration ``shape``, two operands' strides and bases)."""
    return np.array([len(shape), *shape, *strides1, *strides2, base1, base2], np.int64)


class _Form(GraphError):
    """A form of a supported operator the GPU kernels do not cover."""


Builder = Callable[[Node, list[TensorInfo], list[TensorInfo]], list[LaunchSpec]]


def _unary(node: Node, ins: list[TensorInfo], outs: list[TensorInfo]) -> list[LaunchSpec]:
    a = node.attrs
    alpha, beta = {
        "LeakyRelu": lambda: (a["alpha"], 0.0),
        "Clip": lambda: (-math.inf if a["min"] is None else a["min"], math.inf if a["max"] is None else a["max"]),
        "HardSigmoid": lambda: (a["alpha"], a["beta"]),
    }.get(node.op, lambda: (0.0, 0.0))()
    n = math.prod(outs[0].shape)
    code = UNARY.get(node.op, UNARY["Copy"])
    return [LaunchSpec("unary", n, (Operand(0), Operand(1), n, code, float(alpha), float(beta)))]


def _binary(node: Node, ins: list[TensorInfo], outs: list[TensorInfo]) -> list[LaunchSpec]:
    shape = outs[0].shape
    table = _table(shape, _broadcast_strides(ins[0].shape, shape), _broadcast_strides(ins[1].shape, shape))
    n = math.prod(shape)
    return [LaunchSpec("binary", n, (Operand(0), Operand(1), Operand(2), table, n, BINARY[node.op]))]


def _pool(node: Node, ins: list[TensorInfo], outs: list[TensorInfo]) -> list[LaunchSpec]:
    if len(ins[0].shape) != 4:
        raise _Form(f"the cuda target pools 2-D (NCHW) inputs only, not {list(ins[0].shape)}")
    a, (N, C, H, W) = node.attrs, ins[0].shape
    if len(outs) != 1:
        raise _Form("the cuda target has no MaxPool Indices output")
    P, Q = outs[0].shape[2:]
    top, left, bottom, right = a["pads"]
    table = np.array([H, W, P, Q, *a["kernel_shape"], *a["strides"], top, left, *a["dilations"],
                      int(a.get("count_include_pad", 0)), bottom, right], np.int64)
    n = N * C * P * Q
    return [LaunchSpec("pool", n, (Operand(0), Operand(1), table, n, node.op == "AveragePool"))]


def _planes(shape: Sequence[int], axes: Sequence[int], what: str) -> tuple[int, int]:
    """(rows, length) of reducing the trailing ``axes`` of ``shape``."""
    if not axes or list(axes) != list(range(len(shape) - len(axes), len(shape))):
        raise _Form(f"the cuda target {what} over trailing axes only, not axes {list(axes)} of {list(shape)}")
    length = math.prod(shape[len(shape) - len(axes):])
    return math.prod(shape) // length, length


def _reduce(node: Node, ins: list[TensorInfo], outs: list[TensorInfo]) -> list[LaunchSpec]:
    shape = ins[0].shape
    axes = node.attrs["axes"] if node.op == "ReduceMean" else range(2, len(shape))
    planes, size = _planes(shape, list(axes), "reduces")
    return [LaunchSpec("plane_reduce", planes, (Operand(0), Operand(1), planes, size, node.op != "GlobalMaxPool"))]


def _softmax(node: Node, ins: list[TensorInfo], outs: list[TensorInfo]) -> list[LaunchSpec]:
    rows, length = _planes(ins[0].shape, node.attrs["axes"], "normalises")
    return [LaunchSpec("softmax", rows, (Operand(0), Operand(1), rows, length))]


def _copy(src: int, dst: int, shape: Sequence[int], src_strides: Sequence[int], dst_strides: Sequence[int],
          src_base: int = 0, dst_base: int = 0) -> LaunchSpec:
    n = math.prod(shape)
    return LaunchSpec("strided_copy", n,
                      (Operand(src), Operand(dst), _table(shape, src_strides, dst_strides, src_base, dst_base), n))


def _concat(node: Node, ins: list[TensorInfo], outs: list[TensorInfo]) -> list[LaunchSpec]:
    axis, out = node.attrs["axis"], outs[0].shape
    into, specs, start = _strides(out), [], 0
    for i, x in enumerate(ins):
        specs.append(_copy(i, len(ins), x.shape, _strides(x.shape), into, dst_base=start * into[axis]))
        start += x.shape[axis]
    return specs


def _split(node: Node, ins: list[TensorInfo], outs: list[TensorInfo]) -> list[LaunchSpec]:
    axis, strides, specs, start = node.attrs["axis"], _strides(ins[0].shape), [], 0
    for i, y in enumerate(outs):
        specs.append(_copy(0, 1 + i, y.shape, strides, _strides(y.shape), src_base=start * strides[axis]))
        start += y.shape[axis]
    return specs


def _slice(node: Node, ins: list[TensorInfo], outs: list[TensorInfo]) -> list[LaunchSpec]:
    shape, strides = ins[0].shape, _strides(ins[0].shape)
    ranges = [slice(*s).indices(d) for s, d in zip(node.attrs["slices"], shape)]
    base = sum(start * st for (start, _, _), st in zip(ranges, strides))
    steps = [step * st for (_, _, step), st in zip(ranges, strides)]
    return [_copy(0, 1, outs[0].shape, steps, _strides(outs[0].shape), src_base=base)]


def _transpose(node: Node, ins: list[TensorInfo], outs: list[TensorInfo]) -> list[LaunchSpec]:
    strides = _strides(ins[0].shape)
    return [_copy(0, 1, outs[0].shape, [strides[p] for p in node.attrs["perm"]], _strides(outs[0].shape))]


def _place_input(node: Node, ins: list[TensorInfo], outs: list[TensorInfo]) -> list[LaunchSpec]:
    """A transposed conv's placed input: the output zeroed (a copy of one
    zero, read with strides 0), then the input pixels that land inside copied
    ``step`` apart from ``offset``."""
    (N, C, H, W), (Hi, Wi) = ins[0].shape, outs[0].shape[2:]
    (oh, ow), (sh, sw) = node.attrs["offset"], node.attrs["step"]
    out = outs[0].shape
    zero = LaunchSpec("strided_copy", math.prod(out), (np.zeros(1, np.float32), Operand(1),
                                                       _table(out, [0] * 4, _strides(out)), math.prod(out)))
    rows = [i for i in range(H) if 0 <= oh + i * sh < Hi]
    cols = [j for j in range(W) if 0 <= ow + j * sw < Wi]
    if not rows or not cols:
        return [zero]
    shape, into = (N, C, len(rows), len(cols)), _strides(out)
    return [zero, _copy(0, 1, shape, _strides(ins[0].shape), [into[0], into[1], sh * into[2], sw],
                        src_base=rows[0] * W + cols[0], dst_base=(oh + rows[0] * sh) * Wi + ow + cols[0] * sw)]


def _interleave(node: Node, ins: list[TensorInfo], outs: list[TensorInfo]) -> list[LaunchSpec]:
    """Sub-pixel transposed conv's output: each phase's pixels ``step`` apart,
    and the per-channel fill (read with strides 0 but on channels) at the
    phases no sub-conv computes."""
    a, out = node.attrs, outs[0].shape
    (sh, sw), into = a["step"], _strides(out)
    every = [into[0], into[1], sh * into[2], sw]
    specs = [_copy(i, len(ins), x.shape, _strides(x.shape), every, dst_base=ph * into[2] + pw)
             for i, (x, (ph, pw)) in enumerate(zip(ins, a["phases"]))]
    fill = np.ascontiguousarray(a["fill"], np.float32).reshape(-1)
    for ph, pw in a["fills"]:
        shape = (out[0], out[1], len(range(ph, out[2], sh)), len(range(pw, out[3], sw)))
        n = math.prod(shape)
        specs.append(LaunchSpec("strided_copy", n, (fill, Operand(len(ins)),
                                                    _table(shape, [0, 1, 0, 0], every, 0, ph * into[2] + pw), n)))
    return specs


def _gemm(node: Node, ins: list[TensorInfo], outs: list[TensorInfo]) -> list[LaunchSpec]:
    a = node.attrs
    if node.op == "MatMul" and not (len(ins[0].shape) == len(ins[1].shape) == 2):
        raise _Form(f"the cuda target multiplies 2-D matrices only, not {list(ins[0].shape)} x {list(ins[1].shape)}")
    trans_a, trans_b = (a["transA"], a["transB"]) if node.op == "Gemm" else (0, 0)
    (M, N), K = outs[0].shape, ins[0].shape[0 if trans_a else 1]
    sa, sb = _strides(ins[0].shape), _strides(ins[1].shape)
    am, ak = (sa[1], sa[0]) if trans_a else sa
    bk, bn = (sb[1], sb[0]) if trans_b else sb
    has_c = len(ins) > 2
    cm, cn = _broadcast_strides(ins[2].shape, (M, N)) if has_c else (0, 0)
    table = np.array([M, N, K, am, ak, bk, bn, cm, cn, int(has_c)], np.int64)
    c = Operand(2) if has_c else np.zeros(1, np.float32)
    alpha, beta = (a["alpha"], a["beta"]) if node.op == "Gemm" else (1.0, 0.0)
    return [LaunchSpec("gemm", M * N, (Operand(0), Operand(1), c, Operand(len(ins)), table, float(alpha),
                                       float(beta)))]


BUILDERS: dict[str, Builder] = {
    **{op: _unary for op in UNARY if op != "Copy"}, **{op: _binary for op in BINARY},
    **{op: _unary for op in (*VIEW_OPS, "Cast")},  # a copy: Cast to float32, a view of a constant
    "MaxPool": _pool, "AveragePool": _pool, "GlobalAveragePool": _reduce, "GlobalMaxPool": _reduce,
    "ReduceMean": _reduce, "Softmax": _softmax, "Concat": _concat, "Split": _split, "Slice": _slice,
    "Transpose": _transpose, "Gemm": _gemm, "MatMul": _gemm, "PlaceInput": _place_input, "Interleave": _interleave,
}
"""Operator -> its launches on the GPU (FusedConv runs the CUDA conv templates)."""

def device_launches(node: Node, ins: list[TensorInfo], outs: list[TensorInfo]) -> list[LaunchSpec]:
    """The launches computing ``node`` on the GPU, from its tensors' shapes and
    dtypes; a ``GraphError`` naming the node and operator where there are none."""
    where = f"node {node.name!r} ({node.op})"
    build = BUILDERS.get(node.op)
    if build is None:
        raise GraphError(f"{where}: the cuda target has no kernel for this operator "
                         f"(it runs FusedConv, {', '.join(sorted(BUILDERS))})")
    for t, info in zip((*[t for t in node.inputs if t], *node.outputs), (*ins, *outs)):
        if np.dtype(info.dtype) != np.float32:
            raise GraphError(f"{where}: the cuda target runs float32 tensors only; {t!r} is {np.dtype(info.dtype)}")
    try:
        return build(node, ins, outs)
    except _Form as e:
        raise GraphError(f"{where}: {e}") from None


class DeviceOp:
    """A node's launches on fixed device arrays (its inputs, then its outputs),
    index tables uploaded and arguments marshalled once."""

    def __init__(self, specs: list[LaunchSpec], arrays: Sequence[Any], stream: Any) -> None:
        from numba import cuda

        flat = [a.reshape(a.size) for a in arrays]
        self._stages: list[tuple[CudaStage, tuple[Any, ...]]] = []
        for spec in specs:
            args = tuple(flat[a.index] if isinstance(a, Operand) else cuda.to_device(a, stream=stream)
                         if isinstance(a, np.ndarray) else a for a in spec.args)
            stage = CudaStage(compiled(spec.kernel), *linear_launch(spec.threads))
            self._stages.append((stage, args))
        self._launches = tuple(Launch(stage, args, stream) for stage, args in self._stages)

    @property
    def arguments(self) -> tuple[Any, ...]:
        """Every launch's arguments, in order (device arrays and scalars)."""
        return tuple(a for _, args in self._stages for a in args)

    def launch(self) -> None:
        """Run the launches in turn (asynchronous on the stream)."""
        for launch in self._launches:
            launch()

    def record(self, builder: Any) -> int:
        """Add the launches to a cuda.core graph builder (``codegen.cuda_graph``); how many."""
        for stage, args in self._stages:
            Launch(stage, args, builder)()
        return len(self._stages)
