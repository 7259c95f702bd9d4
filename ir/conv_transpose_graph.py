"""Rewrite a model graph's ``FusedConvTranspose`` nodes into ordinary ``FusedConv`` nodes.

The optimised graph keeps each transposed conv as one target-free
``FusedConvTranspose`` node (its workload a ``ConvTranspose2D``), so task
extraction sees the layer whole and can tune the convs of both lowerings.
The runtime picks a lowering per node (from the tuning log: which one was
faster end to end) and rewrites the node, before planning, into:

- a ``PlaceInput`` node per sub-conv that does not read the input as it is
  (zero insertion's dilated, re-padded input; a sub-pixel phase's cropped one);
- a ``FusedConv`` per sub-conv, its weight transformed once here (a new
  constant), sharing the node's bias and activation;
- for the sub-pixel lowering of a strided conv, an ``Interleave`` node that
  writes every phase into its pixels of the output.
The node's output tensor keeps its name, so the rest of the graph is untouched.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from convtune.ir.conv_transpose_lowering import Lowering, SubConv, lower
from convtune.ir.graph import ModelGraph, Node, TensorInfo
from convtune.ir.workload_transpose import ConvTranspose2D

LoweringFor = Callable[[ConvTranspose2D], str]


def _add_sub_conv(graph: ModelGraph, node: Node, sub: SubConv, index: int, out: str | None) -> Node:
    """The sub-conv's nodes (its ``PlaceInput`` added to the graph); its
    ``FusedConv`` returned unadded, writing ``out`` (None: a new tensor)."""
    wl, prefix = sub.conv, f"{node.name}.{index}"
    x, w = node.inputs[0], graph.constants[node.inputs[1]]
    if not sub.reads_input_directly:
        placed = f"{prefix}.input"
        graph.add_node(Node(placed, "PlaceInput", (x,), (placed,),
                            {"offset": sub.input_offset, "step": sub.input_step, "shape": (wl.H, wl.W)}),
                       {placed: TensorInfo(wl.data_shape, np.dtype(np.float32))})
        x = placed
    graph.add_constant(f"{prefix}.weight", sub.weight(w).astype(np.float32))
    inputs = (x, f"{prefix}.weight") + ((node.inputs[2],) if wl.bias else ())
    return Node(prefix if out is None else node.name, "FusedConv", inputs, (out or f"{prefix}.out",),
                {"workload": wl})


def _rewrite(graph: ModelGraph, node: Node, lowering: Lowering) -> None:
    out = node.outputs[0]
    if lowering.direct:
        graph.replace_nodes([node.name], _add_sub_conv(graph, node, lowering.convs[0], 0, out))
        return
    phases = []
    for i, sub in enumerate(lowering.convs):
        conv = _add_sub_conv(graph, node, sub, i, None)
        graph.add_node(conv, {conv.outputs[0]: TensorInfo(sub.conv.out_shape, np.dtype(np.float32))})
        phases.append(conv.outputs[0])
    bias = graph.constants[node.inputs[2]] if lowering.workload.bias else None
    attrs = {"step": lowering.step, "shape": lowering.workload.out_shape,
             "phases": tuple(sub.phase for sub in lowering.convs), "fills": lowering.fills,
             "fill": lowering.fill_value(bias)}
    graph.replace_nodes([node.name], Node(node.name, "Interleave", tuple(phases), (out,), attrs))


def lower_conv_transposes(graph: ModelGraph, lowering_for: LoweringFor) -> ModelGraph:
    """A copy of ``graph`` whose ``FusedConvTranspose`` nodes are rewritten
    with the lowering ``lowering_for(workload)`` names (``graph`` itself is
    returned when it has none)."""
    nodes = [n for n in graph.nodes() if n.op == "FusedConvTranspose"]
    if not nodes:
        return graph
    graph = graph.copy()
    for node in nodes:
        wl = node.attrs["workload"]
        _rewrite(graph, graph.node(node.name), lower(wl, lowering_for(wl)))
        if not graph.consumers(node.inputs[1]):  # the transposed weight: each sub-conv has its own
            graph.remove_constant(node.inputs[1])
    return graph
