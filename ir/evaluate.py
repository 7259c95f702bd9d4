"""Evaluate nodes and whole graphs with the operators' numpy semantics.

Constant folding uses ``evaluate``; ``interpret`` runs a whole graph node by
node, the plain reference the passes and the runtime are checked against.
"""
from __future__ import annotations

import numpy as np

from convtune.ir import op_semantics_spatial  # noqa: F401 - registers the spatial evaluators
from convtune.ir.graph import GraphError, ModelGraph, Node
from convtune.ir.op_semantics import EVALUATORS


def evaluate(node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run one node; NaN and Inf propagate silently, as in onnxruntime."""
    if node.op not in EVALUATORS:
        raise GraphError(f"node {node.name!r} ({node.op}): no implementation of the operator")
    with np.errstate(all="ignore"):
        return EVALUATORS[node.op](node.attrs, inputs)


def interpret(graph: ModelGraph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every output of ``graph`` for ``feeds``, one node at a time."""
    values: dict[str, np.ndarray] = {**graph.constants, **feeds}
    for node in graph.nodes():
        for tensor, value in zip(node.outputs, evaluate(node, [values[t] for t in node.inputs if t])):
            values[tensor] = value
    return {t: values[t] for t in graph.outputs}
