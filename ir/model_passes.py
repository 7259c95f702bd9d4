"""Target-free passes over a ``ModelGraph``, and ``optimize`` that runs them in order.

Each pass rewrites the graph in place and returns it; ``optimize`` works on a
copy. Every rewrite keeps the names of the tensors the rest of the graph (or
the user) sees, so outputs stay addressable by their ONNX names.
"""
from __future__ import annotations

import numpy as np

from convtune.ir.evaluate import evaluate
from convtune.ir.graph import ModelGraph, Node, TensorInfo
from convtune.ir.op_semantics_spatial import conv_transpose_workload, conv_workload
from convtune.ir.workload import ACTIVATION_PARAMS, Activation, WorkloadError


def fold_constants(graph: ModelGraph) -> ModelGraph:
    """Evaluate every node whose inputs are all constants (or whose output
    only depends on static shapes: Shape)."""
    for node in list(graph.nodes()):
        if node.op == "Shape":
            shape = graph.tensors[node.inputs[0]].shape[node.attrs["start"]:node.attrs["end"]]
            graph.replace_with_constants(node.name, [np.array(shape, np.int64)])
        elif all(t in graph.constants for t in node.inputs if t):
            graph.replace_with_constants(node.name, evaluate(node, [graph.constants[t] for t in node.inputs if t]))
    return graph


def remove_identities(graph: ModelGraph) -> ModelGraph:
    """Identity and (inference) Dropout pass their input on. One that names a
    model output hands the name to its input's producer instead (when nothing
    else reads that input); failing that it stays, so the output keeps its name."""
    for node in list(graph.nodes()):
        if node.op not in ("Identity", "Dropout"):
            continue
        source, out = node.inputs[0], node.outputs[0]
        producer = graph.producer(source)
        if out not in graph.outputs:
            graph.replace_uses(out, source)
            graph.remove_node(node.name)
        elif producer is not None and _sole_consumer(graph, source) is node:
            renamed = tuple(out if t == source else t for t in producer.outputs)
            graph.replace_nodes([producer.name, node.name],
                                Node(producer.name, producer.op, producer.inputs, renamed, producer.attrs))
    return graph


def _sole_consumer(graph: ModelGraph, tensor: str) -> Node | None:
    """The one node reading ``tensor``, if nothing else (nor the user) does."""
    users = graph.consumers(tensor)
    return users[0] if len(users) == 1 and tensor not in graph.outputs else None


def _const_conv(graph: ModelGraph, node: Node, op: str = "Conv") -> bool:
    """A 2-D float32 ``op`` (Conv or ConvTranspose) whose weight (and bias) are known at load time."""
    return (node.op == op and all(t in graph.constants for t in node.inputs[1:])
            and len(graph.tensors[node.inputs[0]].shape) == 4
            and graph.tensors[node.inputs[0]].dtype == np.float32)


def fold_batch_norm(graph: ModelGraph) -> ModelGraph:
    """Conv -> BatchNormalization becomes one Conv with scaled weights and a
    shifted bias, when the BN is the conv output's only reader."""
    for node in list(graph.nodes()):
        bn = _sole_consumer(graph, node.outputs[0]) if _const_conv(graph, node) else None
        if bn is None or bn.op != "BatchNormalization" or bn.inputs[0] != node.outputs[0] \
                or not all(t in graph.constants for t in bn.inputs[1:]):
            continue
        scale, shift, mean, var = (graph.constants[t].astype(np.float64) for t in bn.inputs[1:])
        w = graph.constants[node.inputs[1]]
        b = graph.constants[node.inputs[2]].astype(np.float64) if len(node.inputs) > 2 else np.zeros(w.shape[0])
        factor = scale / np.sqrt(var + bn.attrs["epsilon"])
        weight_name, bias_name = f"{node.name}.bn_weight", f"{node.name}.bn_bias"
        graph.add_constant(weight_name, (w * factor.reshape(-1, 1, 1, 1)).astype(w.dtype))
        graph.add_constant(bias_name, ((b - mean) * factor + shift).astype(w.dtype))
        folded = Node(node.name, "Conv", (node.inputs[0], weight_name, bias_name), bn.outputs, dict(node.attrs))
        graph.replace_nodes([node.name, bn.name], folded)
    return graph


def _activation(node: Node) -> Activation | None:
    """The fused-epilogue activation a node computes, if convtune's
    ``Activation`` has it (kinds arrive as the kernels learn them)."""
    spec: tuple[str, dict[str, float]] | None = None
    if node.op == "Relu":
        spec = ("relu", {})
    elif node.op == "LeakyRelu":
        spec = ("leaky_relu", {"alpha": node.attrs["alpha"]})
    elif node.op == "Clip":
        lo, hi = node.attrs["min"], node.attrs["max"]
        if lo == 0 and hi is None:
            spec = ("relu", {})
        elif lo is not None and hi is not None:
            spec = ("clip", {"lo": lo, "hi": hi})
    elif node.op == "HardSigmoid":
        spec = ("hardsigmoid", {"alpha": node.attrs["alpha"], "beta": node.attrs["beta"]})
    elif node.op in ("Sigmoid", "Tanh", "HardSwish"):
        spec = (node.op.lower(), {})
    if spec is None or spec[0] not in ACTIVATION_PARAMS:
        return None
    try:
        return Activation.parse(spec[0], **spec[1])
    except WorkloadError:  # e.g. a clip with lo >= hi: stays a separate node
        return None


def _silu(graph: ModelGraph, tensor: str) -> Node | None:
    """The Mul of ``tensor * Sigmoid(tensor)`` when those two are its only readers."""
    users = graph.consumers(tensor)
    if "silu" not in ACTIVATION_PARAMS or len(users) != 2 or tensor in graph.outputs:
        return None
    sig = next((u for u in users if u.op == "Sigmoid"), None)
    mul = next((u for u in users if u.op == "Mul"), None)
    if sig is None or mul is None or _sole_consumer(graph, sig.outputs[0]) is not mul \
            or sorted(mul.inputs) != sorted((tensor, sig.outputs[0])):
        return None
    return mul


def _fused_activation(graph: ModelGraph, out: str, chain: list[str]) -> tuple[Activation | None, str]:
    """The activation that reads ``out`` and can join its conv's epilogue
    (SiLU's Sigmoid and Mul, or one activation node), appending the nodes it
    takes to ``chain``; and the tensor the fused conv then writes."""
    silu = _silu(graph, out)
    if silu is not None:
        chain += [c.name for c in graph.consumers(out)]
        return Activation.parse("silu"), silu.outputs[0]
    nxt = _sole_consumer(graph, out)
    if nxt is not None and (act := _activation(nxt)) is not None:
        chain.append(nxt.name)
        return act, nxt.outputs[0]
    return None, out


def fuse_conv_epilogues(graph: ModelGraph) -> ModelGraph:
    """Conv [-> Add residual] [-> activation] becomes one ``FusedConv``
    computing ``act(conv + bias + residual)``; the residual must have the
    conv output's shape (a broadcast Add stays a separate node).
    ConvTranspose [-> activation] becomes one ``FusedConvTranspose``."""
    for node in list(graph.nodes()):
        if _const_conv(graph, node, "ConvTranspose"):
            x, w = (graph.tensors[t].shape for t in node.inputs[:2])
            chain = [node.name]
            act, out = _fused_activation(graph, node.outputs[0], chain)
            try:
                wl = conv_transpose_workload(node.attrs, x, w, bias=len(node.inputs) > 2, activation=act)
            except WorkloadError:  # e.g. pads cropping the whole scatter: stays a numpy ConvTranspose
                continue
            graph.replace_nodes(chain, Node(node.name, "FusedConvTranspose", node.inputs, (out,), {"workload": wl}))
            continue
        if not _const_conv(graph, node):
            continue
        chain, out = [node.name], node.outputs[0]
        info = graph.tensors[out]
        residual = None
        nxt = _sole_consumer(graph, out)
        if nxt is not None and nxt.op == "Add" and len(set(nxt.inputs)) == 2:
            other = nxt.inputs[1] if nxt.inputs[0] == out else nxt.inputs[0]
            if graph.tensors[other] == info:
                residual, out = other, nxt.outputs[0]
                chain.append(nxt.name)
        act, out = _fused_activation(graph, out, chain)
        x, w = (graph.tensors[t].shape for t in node.inputs[:2])
        wl = conv_workload(node.attrs, x, w, bias=len(node.inputs) > 2, residual=residual is not None,
                           activation=act)
        inputs = node.inputs + ((residual,) if residual is not None else ())
        graph.replace_nodes(chain, Node(node.name, "FusedConv", inputs, (out,), {"workload": wl}))
    return graph


def spatial_means_as_global_pools(graph: ModelGraph) -> ModelGraph:
    """ReduceMean over every spatial axis becomes GlobalAveragePool, which
    runs as a compiled kernel: torch's dynamo exporter writes
    ``adaptive_avg_pool2d(x, 1)`` so, and ``x.mean((2, 3))`` is common in
    model code. Without keepdims the pool is followed by a Reshape (a view)."""
    for node in list(graph.nodes()):
        rank = len(graph.tensors[node.inputs[0]].shape)
        if node.op != "ReduceMean" or rank < 3 or node.attrs["axes"] != list(range(2, rank)):
            continue
        if node.attrs["keepdims"]:
            graph.replace_nodes([node.name], Node(node.name, "GlobalAveragePool", node.inputs, node.outputs, {}))
            continue
        pooled, info = f"{node.name}.pooled", graph.tensors[node.inputs[0]]
        graph.add_node(Node(pooled, "GlobalAveragePool", node.inputs, (pooled,), {}),
                       {pooled: TensorInfo(info.shape[:2] + (1,) * (rank - 2), info.dtype)})
        shape = graph.tensors[node.outputs[0]].shape
        graph.replace_nodes([node.name], Node(node.name, "Reshape", (pooled,), node.outputs, {"shape": shape}))
    return graph


def eliminate_dead_code(graph: ModelGraph) -> ModelGraph:
    """Drop nodes and constants nothing reads (folding leaves constants behind)."""
    for node in reversed(list(graph.nodes())):
        if not any(graph.consumers(t) or t in graph.outputs for t in node.outputs):
            graph.remove_node(node.name)
    used = {t for node in graph.nodes() for t in node.inputs} | set(graph.outputs)
    for name in [c for c in graph.constants if c not in used]:
        graph.remove_constant(name)
    return graph


PASSES = (fold_constants, remove_identities, spatial_means_as_global_pools, fold_batch_norm, fuse_conv_epilogues,
          eliminate_dead_code)


def optimize(graph: ModelGraph) -> ModelGraph:
    """A rewritten copy of ``graph`` (``ModelGraph.copy``: the weights are
    shared): folded, spatial means as pools, BN-folded, epilogues fused."""
    graph = graph.copy()
    for run in PASSES:
        graph = run(graph)
    return graph
