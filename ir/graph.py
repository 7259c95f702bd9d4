"""The model graph: a target-free DAG of operators over named tensors.

This is what the ONNX frontend produces and what the target-free passes
(constant folding, BatchNormalization folding, epilogue fusion) rewrite; the
runtime plans layouts over it and runs it. It is a ``networkx.DiGraph`` whose
nodes are operator names (each carrying its ``Node``) and whose edges run from
a tensor's producer to each of its consumers, so graph algorithms (topological
order, liveness, dominators) come from networkx rather than being hand-written.

Conventions every pass and the runtime rely on:

- Operator types are ONNX's (``Conv``, ``Relu``, ...), with attributes as
  plain Python values (ints, floats, strings, tuples, numpy arrays) and the
  defaults of the operator's schema filled in. Inputs that older or newer
  opsets give as attributes or as tensors (Clip min/max, Pad pads, Slice
  starts/ends/axes/steps, Reshape shape, Resize scales/sizes, Split sizes,
  Squeeze/Unsqueeze/ReduceMean axes) are attributes here when constant, so no
  pass needs to know the opset.
- ``FusedConv`` is a convolution with its epilogue fused: ``attrs["workload"]``
  is a ``convtune.ir.workload.Conv2D`` (batch, shape, stride, padding,
  dilation, groups, bias, residual, activation), inputs are
  ``(x, weight[, bias][, residual])`` in that order (bias when the workload
  has one, residual when it has one).
- Every tensor has a ``TensorInfo`` (static shape and dtype) in
  ``ModelGraph.tensors``; constants (initializers and folded values) are in
  ``ModelGraph.constants`` and have no producer node.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Iterator

import networkx as nx
import numpy as np

from convtune.ir.workload import Conv2D


class GraphError(ValueError):
    """A malformed graph or an unsupported operator; the message names the node."""


@dataclass(frozen=True)
class TensorInfo:
    """A tensor's static shape and element type."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def __str__(self) -> str:
        return f"{np.dtype(self.dtype).name}[{', '.join(map(str, self.shape))}]"


@dataclass
class Node:
    """One operator application."""

    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        attrs = ", ".join(f"{k}={_attr_str(v)}" for k, v in sorted(self.attrs.items()))
        return (f"{', '.join(self.outputs)} = {self.op}({', '.join(self.inputs)})"
                + (f"  {{{attrs}}}" if attrs else "") + f"  # {self.name}")


def _attr_str(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"array{list(v.shape)}" if v.size > 8 else str(v.tolist())
    if isinstance(v, Conv2D):
        act = v.activation
        return " ".join([v.short()] + ["+bias"] * v.bias + ["+residual"] * v.residual + ([act.kind] if act else []))
    return repr(v)


class ModelGraph:
    """A model: inputs, outputs, constants, and a DAG of ``Node`` s."""

    def __init__(self, name: str = "model") -> None:
        self.name = name
        self.dag = nx.DiGraph()
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.tensors: dict[str, TensorInfo] = {}
        self.constants: dict[str, np.ndarray] = {}
        self._producer: dict[str, str] = {}

    def copy(self) -> ModelGraph:
        """A copy to rewrite: nodes, tensors and names are its own, the
        constants' arrays are shared (rewrites replace a constant, they never
        write into one; copying them would hold every weight twice)."""
        return copy.deepcopy(self, memo={id(a): a for a in self.constants.values()})

    # -- building -----------------------------------------------------------
    def add_input(self, name: str, shape: tuple[int, ...], dtype: Any = np.float32) -> None:
        self.inputs.append(name)
        self.tensors[name] = TensorInfo(tuple(shape), np.dtype(dtype))

    def add_constant(self, name: str, value: np.ndarray) -> None:
        value = np.asarray(value)
        self.constants[name] = value
        self.tensors[name] = TensorInfo(tuple(value.shape), value.dtype)

    def add_node(self, node: Node, out_info: dict[str, TensorInfo] | None = None) -> Node:
        """Add ``node`` after the producers of its inputs (which must exist)."""
        if node.name in self.dag:
            raise GraphError(f"node {node.name!r}: the name is already used")
        for t in node.inputs:
            if t and t not in self.tensors:
                raise GraphError(f"node {node.name!r} ({node.op}): input {t!r} is not defined")
        for t in node.outputs:
            if t in self._producer or t in self.constants or t in self.inputs:
                raise GraphError(f"node {node.name!r} ({node.op}): output {t!r} is already defined")
        self.dag.add_node(node.name, node=node)
        for t in node.outputs:
            self._producer[t] = node.name
            if out_info and t in out_info:
                self.tensors[t] = out_info[t]
        for t in node.inputs:
            if t in self._producer:
                self.dag.add_edge(self._producer[t], node.name)
        return node

    def remove_node(self, name: str) -> Node:
        """Remove a node; its outputs must no longer be used (rewire first)."""
        node = self.node(name)
        for t in node.outputs:
            if self.consumers(t) or t in self.outputs:
                raise GraphError(f"node {name!r}: output {t!r} is still used")
            del self._producer[t]
            self.tensors.pop(t, None)
        self.dag.remove_node(name)
        return node

    def replace_input(self, node_name: str, old: str, new: str) -> None:
        """Make ``node_name`` read tensor ``new`` where it read ``old``."""
        node = self.node(node_name)
        node.inputs = tuple(new if t == old else t for t in node.inputs)
        self._rebuild_edges(node)

    def replace_uses(self, old: str, new: str) -> None:
        """Every consumer of ``old`` (and the model's outputs) reads ``new`` instead."""
        for consumer in self.consumers(old):
            self.replace_input(consumer.name, old, new)
        self.outputs = [new if t == old else t for t in self.outputs]

    def replace_nodes(self, old: list[str], new: Node) -> Node:
        """Put ``new`` in place of the nodes ``old`` (a connected chain). Its
        outputs keep their names, consumers and ``TensorInfo``; the chain's
        inner tensors must have no use outside it."""
        keep = {t: self.tensors[t] for t in new.outputs if t in self.tensors}
        consumers = {t: [c.name for c in self.consumers(t) if c.name not in old] for t in new.outputs}
        inner = {t for name in old for t in self.node(name).outputs} - set(new.outputs)
        for t in inner:
            outside = [c.name for c in self.consumers(t) if c.name not in old]
            if outside or t in self.outputs:
                raise GraphError(f"node {new.name!r}: replaced tensor {t!r} is still used by "
                                 f"{outside[0] if outside else 'the model outputs'}")
        for name in old:
            for t in self.node(name).outputs:
                del self._producer[t]
                if t in inner:
                    self.tensors.pop(t, None)
            self.dag.remove_node(name)
        self.add_node(new, keep)
        for t, names in consumers.items():
            for c in names:
                self.dag.add_edge(new.name, c)
        return new

    def replace_with_constants(self, name: str, values: list[np.ndarray]) -> None:
        """Constant folding: node ``name`` goes, its outputs become these constants."""
        node = self.node(name)
        self.dag.remove_node(name)
        for t, value in zip(node.outputs, values):
            del self._producer[t]
            self.add_constant(t, value)

    def remove_constant(self, name: str) -> None:
        if self.consumers(name) or name in self.outputs:
            raise GraphError(f"constant {name!r} is still used")
        del self.constants[name]
        del self.tensors[name]

    def set_inputs(self, node_name: str, inputs: tuple[str, ...]) -> None:
        node = self.node(node_name)
        node.inputs = tuple(inputs)
        self._rebuild_edges(node)

    def _rebuild_edges(self, node: Node) -> None:
        for pred in list(self.dag.predecessors(node.name)):
            self.dag.remove_edge(pred, node.name)
        for t in node.inputs:
            if t in self._producer:
                self.dag.add_edge(self._producer[t], node.name)

    # -- reading ------------------------------------------------------------
    def node(self, name: str) -> Node:
        return self.dag.nodes[name]["node"]

    def nodes(self) -> Iterator[Node]:
        """Nodes in a topological order (stable: ties keep insertion order)."""
        order = {n: i for i, n in enumerate(self.dag.nodes)}
        for name in nx.lexicographical_topological_sort(self.dag, key=order.__getitem__):
            yield self.node(name)

    def producer(self, tensor: str) -> Node | None:
        name = self._producer.get(tensor)
        return None if name is None else self.node(name)

    def consumers(self, tensor: str) -> list[Node]:
        producer = self._producer.get(tensor)
        candidates = (self.node(n) for n in self.dag.successors(producer)) if producer else (
            self.node(n) for n in self.dag.nodes)
        return [n for n in candidates if tensor in n.inputs]

    def __len__(self) -> int:
        return self.dag.number_of_nodes()

    def __str__(self) -> str:
        lines = [f"graph {self.name}("
                 + ", ".join(f"{t}: {self.tensors[t]}" for t in self.inputs) + ")"]
        for name, value in self.constants.items():
            lines.append(f"  const {name}: {self.tensors[name]}")
        for node in self.nodes():
            shapes = ", ".join(str(self.tensors.get(t, "?")) for t in node.outputs)
            lines.append(f"  {node}  -> {shapes}")
        lines.append("  return " + ", ".join(self.outputs))
        return "\n".join(lines)
