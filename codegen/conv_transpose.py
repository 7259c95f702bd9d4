"""Run one transposed conv with compiled kernels: ``PreparedConvTranspose``.

A transposed conv is a one-node model (``FusedConvTranspose``) planned like
any other (``codegen.model_plan``): its lowering's sub-convs are prepared
kernels (weights transformed and packed once), its ``PlaceInput`` and
``Interleave`` steps compiled operators, all run by one compiled driver, so
a layer timed alone runs exactly as it runs inside a model.
"""
from __future__ import annotations

import numpy as np

from convtune.codegen.kernel import _as_input
from convtune.codegen.model_plan import ScheduleFor, build_plan, run_plan
from convtune.ir.graph import ModelGraph, Node, TensorInfo
from convtune.ir.workload_transpose import ConvTranspose2D


def transposed_conv_graph(wl: ConvTranspose2D, weight: object, bias: object = None) -> ModelGraph:
    """``y = FusedConvTranspose(x, weight[, bias])`` as a model graph."""
    graph = ModelGraph(f"conv_transpose {wl.short()}")
    graph.add_input("x", wl.data_shape)
    graph.add_constant("weight", _as_input("weight", weight, wl.weight_shape))
    inputs = ("x", "weight")
    if wl.bias:
        if bias is None:
            raise ValueError("bias: this workload has a bias; pass one of shape (K,)")
        graph.add_constant("bias", _as_input("bias", bias, (wl.K,)))
        inputs += ("bias",)
    elif bias is not None:
        raise ValueError("bias: this workload was declared without a bias (conv2d_transpose(..., bias=True))")
    graph.add_node(Node("conv_transpose", "FusedConvTranspose", inputs, ("y",), {"workload": wl}),
                   {"y": TensorInfo(wl.out_shape, np.dtype(np.float32))})
    graph.outputs.append("y")
    return graph


class PreparedConvTranspose:
    """``conv(data)``: a transposed conv with lowering ``lowering``, its
    sub-convs built from ``schedule_for`` (tuned configs, or defaults).
    The result is the plan's output buffer, overwritten by the next call:
    copy it to keep it. Not for two threads at once."""

    def __init__(self, wl: ConvTranspose2D, lowering: str, weight: object, bias: object,
                 schedule_for: ScheduleFor) -> None:
        self.workload, self.lowering = wl, lowering
        # Its few sub-convs compile here: this is often a candidate measured in a
        # tuner's worker, which must not leave compile processes behind if killed.
        self.plan = build_plan(transposed_conv_graph(wl, weight, bias), schedule_for, lowering_for=lambda _: lowering,
                               compile_jobs=1)
        self._input, self.output = self.plan.inputs["x"], self.plan.values["y"]

    def __call__(self, data: object) -> np.ndarray:
        np.copyto(self._input, _as_input("data", data, self.workload.data_shape))
        run_plan(self.plan)
        return self.output
