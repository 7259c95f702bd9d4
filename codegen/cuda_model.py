"""A model's execution plan on the GPU: every tensor in device memory.

``build_cuda_plan`` checks every node of an optimised ``ModelGraph`` against
what the GPU can run (``cuda_ops.device_launches``) before anything
compiles, then places the tensors in device blocks shared by liveness (the
target-free ``codegen.liveness``, as the CPU plan does; activations stay
NCHW: the CUDA kernels read and write it), builds and prepares each
FusedConv's CUDA kernel (weights copied to the device once) and binds every
step's launches to its device arrays once. A run (``run_cuda_plan``)
launches the steps in turn on the plan's stream, or, on a GPU, replays the
whole model captured as one CUDA graph (``codegen.cuda_graph``); data moves
between host and device only in ``copy_in`` and ``copy_out``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from convtune.codegen.build import build
from convtune.codegen.cuda_graph import CudaGraph
from convtune.codegen.cuda_launch import PreparedCudaConv, simulated
from convtune.codegen.cuda_ops import DeviceOp, LaunchSpec, device_launches
from convtune.codegen.liveness import bind_storage
from convtune.codegen.model_plan import ScheduleFor
from convtune.codegen.ops import VIEW_OPS
from convtune.ir.conv_transpose_graph import LoweringFor, lower_conv_transposes
from convtune.ir.conv_transpose_lowering import default_lowering
from convtune.ir.graph import GraphError, ModelGraph, Node
from convtune.ir.workload import Conv2D
from convtune.schedules.schedule import Schedule
from convtune.schedules.state import BlockedLayout

CONV_OP = "FusedConv"


@dataclass
class CudaStep:
    node: Node
    run: PreparedCudaConv | DeviceOp
    """A conv's prepared kernel or an operator's launches, bound to device arrays."""

    def launch(self) -> None:
        self.run.launch()


@dataclass
class CudaPlan:
    """Steps in order on ``stream``; ``inputs`` the device buffers feeds are
    copied into; ``values`` every tensor's device array (the constants that
    operators read included); ``blocks`` the device storage of the rest."""

    steps: list[CudaStep]
    inputs: dict[str, Any]
    values: dict[str, Any]
    blocks: list[Any]
    stream: Any
    graph: CudaGraph | None = None
    """The steps captured as one CUDA graph (a GPU only; None: launched in turn)."""

    @property
    def storage_bytes(self) -> int:
        return sum(b.nbytes for b in self.blocks)


def _is_view(node: Node, graph: ModelGraph) -> bool:
    """A view operator on a computed tensor shares its storage: no step."""
    return node.op in VIEW_OPS and node.inputs[0] not in graph.constants


def _check(graph: ModelGraph, order: list[Node]) -> dict[str, list[LaunchSpec]]:
    """Each operator's launches; a ``GraphError`` for the first node the GPU
    cannot run (before any kernel compiles)."""
    launches = {}
    for node in order:
        if node.op == CONV_OP:
            params = node.inputs[1:3] if node.attrs["workload"].bias else node.inputs[1:2]
            if any(t not in graph.constants for t in params):
                raise GraphError(f"node {node.name!r} ({CONV_OP}): the cuda target needs constant weights and bias")
        elif not _is_view(node, graph):
            launches[node.name] = device_launches(node, [graph.tensors[t] for t in node.inputs if t],
                                                  [graph.tensors[t] for t in node.outputs])
    for t in graph.inputs:
        if np.dtype(graph.tensors[t].dtype) != np.float32:
            raise GraphError(f"input {t!r}: the cuda target runs float32 tensors only, not "
                             f"{np.dtype(graph.tensors[t].dtype)}")
    return launches


def _device_block(nbytes: int, layout: BlockedLayout | None) -> Any:
    from numba import cuda

    assert layout is None, "activations on the GPU are NCHW"
    return cuda.device_array(nbytes, np.uint8)


def _conv(node: Node, sch: Schedule, values: Mapping[str, Any], constants: Mapping[str, np.ndarray],
          stream: Any) -> PreparedCudaConv:
    """The node's CUDA kernel, weights on the device, bound to its arrays."""
    wl: Conv2D = node.attrs["workload"]
    conv = build(sch, target="cuda").prepare(constants[node.inputs[1]], constants[node.inputs[2]] if wl.bias else None,
                                             stream=stream)
    conv.bind(values[node.inputs[0]], values[node.inputs[-1]] if wl.residual else None, values[node.outputs[0]])
    return conv


def build_cuda_plan(graph: ModelGraph, schedule_for: ScheduleFor, capture: bool = True,
                    lowering_for: LoweringFor = default_lowering) -> CudaPlan:
    """Bind every node of ``graph`` to device arrays; ``schedule_for`` gives
    each FusedConv workload's CUDA schedule (tuned, or a fallback);
    ``capture`` records the run as a CUDA graph where there is a GPU;
    ``lowering_for`` names each transposed conv's lowering (its sub-convs
    are FusedConvs, its placing and interleaving strided copies)."""
    from numba import cuda

    graph = lower_conv_transposes(graph, lowering_for)
    order = list(graph.nodes())
    launches = _check(graph, order)
    _, blocks, views = bind_storage(graph, order, {}, _device_block)
    stream = cuda.stream()
    read = {t for n in order if n.op != CONV_OP for t in n.inputs} | set(graph.outputs)
    values = {t: cuda.to_device(np.ascontiguousarray(v), stream=stream)
              for t, v in graph.constants.items() if t in read}
    values.update(views)
    steps = []
    for node in order:
        if node.op == CONV_OP:
            steps.append(CudaStep(node, _conv(node, schedule_for(node.attrs["workload"]), values, graph.constants,
                                              stream)))
        elif node.name in launches:
            arrays = [values[t] for t in (*[t for t in node.inputs if t], *node.outputs)]
            steps.append(CudaStep(node, DeviceOp(launches[node.name], arrays, stream)))
    stream.synchronize()
    replay = CudaGraph([s.run for s in steps], stream) if capture and not simulated() else None
    return CudaPlan(steps, {t: values[t] for t in graph.inputs}, values, blocks, stream, replay)


def copy_in(plan: CudaPlan, feeds: Mapping[str, np.ndarray]) -> None:
    """Copy each feed into its input's device buffer (feeds already checked)."""
    for name, buffer in plan.inputs.items():
        buffer.copy_to_device(np.ascontiguousarray(feeds[name], np.float32), stream=plan.stream)


def run_cuda_plan(plan: CudaPlan) -> None:
    """Launch the model on the plan's stream (asynchronous): the CUDA graph's
    replay, else every step's launches in turn."""
    if plan.graph is not None:
        plan.graph.replay()
        return
    for step in plan.steps:
        step.launch()


def copy_out(plan: CudaPlan, names: Sequence[str]) -> list[np.ndarray]:
    """The named tensors copied to the host, once the run has finished."""
    out = [plan.values[name].copy_to_host(stream=plan.stream) for name in names]
    plan.stream.synchronize()
    return out
