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


def tiny_onnx_model(path) -> None:  # type: ignore[no-untyped-def]
    """A three-conv ONNX model that compiles in seconds: conv+ReLU, the same
    shape with a residual add (one task, two epilogues), a 1x1 conv, pooled."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int):  # type: ignore[no-untyped-def]
        return numpy_helper.from_array((0.3 * rng.standard_normal(shape)).astype(np.float32), name)

    pad = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], **pad), helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], **pad), helper.make_node("Add", ["c1", "r0"], ["a1"]),
             helper.make_node("Relu", ["a1"], ["r1"]), helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"],
                                                                        kernel_shape=[1, 1]),
             helper.make_node("GlobalAveragePool", ["c2"], ["y"])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 1, 1])],
        [weight("w0", 8, 8, 3, 3), weight("b0", 8), weight("w1", 8, 8, 3, 3), weight("b1", 8),
         weight("w2", 16, 8, 1, 1), weight("b2", 16)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
