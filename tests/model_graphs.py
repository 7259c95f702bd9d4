"""Small model graphs built by hand, for tests of what consumes an optimized
graph (task extraction, model tuning) without going through a frontend."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from convtune.ir.graph import ModelGraph, Node, TensorInfo
from convtune.ir.workload import Conv2D


def fused_conv_graph(workloads: Sequence[Conv2D], name: str = "convs") -> ModelGraph:
    """One ``FusedConv`` node per workload, each on its own input (and its own
    residual input when it has one), all outputs returned."""
    graph = ModelGraph(name)
    for i, wl in enumerate(workloads):
        graph.add_input(f"x{i}", wl.data_shape)
        graph.add_constant(f"w{i}", np.ones(wl.weight_shape, np.float32))
        inputs = [f"x{i}", f"w{i}"]
        if wl.bias:
            graph.add_constant(f"b{i}", np.ones(wl.K, np.float32))
            inputs.append(f"b{i}")
        if wl.residual:
            graph.add_input(f"r{i}", wl.out_shape)
            inputs.append(f"r{i}")
        graph.add_node(Node(f"conv{i}", "FusedConv", tuple(inputs), (f"y{i}",), {"workload": wl}),
                       {f"y{i}": TensorInfo(wl.out_shape, np.dtype(np.float32))})
        graph.outputs.append(f"y{i}")
    return graph
