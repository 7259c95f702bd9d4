"""Each model pass checked against the graph before it, with the numpy
interpreter (no kernels compiled): same outputs, and the rewrite happened
(or, where it must not, did not)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import helper
from onnx_models import assert_close, make_model, ort_run, weights

from convtune.ir.evaluate import interpret
from convtune.ir.graph import ModelGraph, Node
from convtune.ir.model_passes import (
    eliminate_dead_code, fold_batch_norm, fold_constants, fuse_conv_epilogues, optimize, remove_identities,
    spatial_means_as_global_pools,
)
from convtune.ir.onnx_frontend import import_model
from convtune.ir.workload import ACTIVATION_PARAMS, Conv2D

X = (1, 4, 6, 6)


def _conv_model(rng: np.random.Generator, after: list, extra_inits: dict | None = None,
                outputs: tuple[str, ...] = ("y",), k: int = 4, bias: bool = True, opset: int = 17):
    """x -> Conv(3x3, pad 1) -> c, then the nodes ``after``."""
    inits = {"w": weights(rng, k, X[1], 3, 3), **({"b": weights(rng, k)} if bias else {}), **(extra_inits or {})}
    conv = helper.make_node("Conv", ["x", "w", "b"] if bias else ["x", "w"], ["c"], pads=[1, 1, 1, 1])
    return make_model([conv, *after], {"x": X, "r": (1, k, 6, 6)}, {o: None for o in outputs}, inits, opset)


def _feeds(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"x": weights(rng, *X), "r": weights(rng, 1, 4, 6, 6)}


def _same_outputs(before: ModelGraph, after: ModelGraph, feeds: dict[str, np.ndarray]) -> None:
    want, got = interpret(before, feeds), interpret(after, feeds)
    assert list(got) == list(want)
    assert_close(list(got.values()), list(want.values()))


def _ops(graph: ModelGraph) -> list[str]:
    return [n.op for n in graph.nodes()]


def _bn_inits(rng: np.random.Generator, k: int = 4) -> dict[str, np.ndarray]:
    return {"s": rng.uniform(0.5, 2, k).astype(np.float32), "sh": weights(rng, k), "m": weights(rng, k),
            "v": rng.uniform(0.5, 2, k).astype(np.float32)}


def test_fold_constants_evaluates_constant_nodes_and_shapes() -> None:
    g = ModelGraph()
    g.add_input("x", (2, 3))
    g.add_constant("a", np.array([1.0, 2.0], np.float32))
    g.add_node(Node("add", "Add", ("a", "a"), ("b",)))
    g.add_node(Node("shape", "Shape", ("x",), ("s",), {"start": 0, "end": None}))
    g.outputs = ["b", "s"]
    fold_constants(g)
    assert len(g) == 0
    assert g.constants["b"].tolist() == [2.0, 4.0] and g.constants["s"].tolist() == [2, 3]


def test_remove_identities_keeps_output_names(rng: np.random.Generator) -> None:
    model = _conv_model(rng, [helper.make_node("Identity", ["c"], ["i"]), helper.make_node("Dropout", ["i"], ["d"]),
                              helper.make_node("Relu", ["d"], ["e"]), helper.make_node("Identity", ["e"], ["y"])])
    before = import_model(model)
    after = remove_identities(import_model(model))
    assert _ops(after) == ["Conv", "Relu"] and after.outputs == ["y"]
    assert after.producer("y").op == "Relu"
    _same_outputs(before, after, _feeds(rng))


def test_identity_of_a_model_input_stays() -> None:
    model = make_model([helper.make_node("Identity", ["x"], ["y"])], {"x": (2,)}, {"y": (2,)})
    graph = remove_identities(import_model(model))
    assert _ops(graph) == ["Identity"] and graph.outputs == ["y"]


def test_fold_batch_norm(rng: np.random.Generator) -> None:
    bn = helper.make_node("BatchNormalization", ["c", "s", "sh", "m", "v"], ["y"], epsilon=1e-3)
    for bias in (True, False):
        model = _conv_model(rng, [bn], _bn_inits(rng), bias=bias)
        before = import_model(model)
        after = fold_batch_norm(import_model(model))
        assert _ops(after) == ["Conv"] and len(after.producer("y").inputs) == 3
        _same_outputs(before, after, _feeds(rng))


def test_batch_norm_not_folded_when_the_conv_output_has_another_reader(rng: np.random.Generator) -> None:
    nodes = [helper.make_node("BatchNormalization", ["c", "s", "sh", "m", "v"], ["y"]),
             helper.make_node("Relu", ["c"], ["z"])]
    graph = fold_batch_norm(import_model(_conv_model(rng, nodes, _bn_inits(rng), outputs=("y", "z"))))
    assert "BatchNormalization" in _ops(graph)


ACTIVATIONS = {
    "relu": ([helper.make_node("Relu", ["c"], ["y"])], {}, "relu"),
    "relu6": ([helper.make_node("Clip", ["c", "lo", "hi"], ["y"])], {"lo": np.float32(0), "hi": np.float32(6)},
              "clip"),
    "clip": ([helper.make_node("Clip", ["c", "lo", "hi"], ["y"])], {"lo": np.float32(-0.5), "hi": np.float32(1)},
             "clip"),
    "clip_min_only": ([helper.make_node("Clip", ["c", "lo"], ["y"])], {"lo": np.float32(0)}, "relu"),
    "leaky_relu": ([helper.make_node("LeakyRelu", ["c"], ["y"], alpha=0.2)], {}, "leaky_relu"),
    "hardsigmoid": ([helper.make_node("HardSigmoid", ["c"], ["y"], alpha=0.3, beta=0.4)], {}, "hardsigmoid"),
    "hardswish": ([helper.make_node("HardSwish", ["c"], ["y"])], {}, "hardswish"),
    "sigmoid": ([helper.make_node("Sigmoid", ["c"], ["y"])], {}, "sigmoid"),
    "tanh": ([helper.make_node("Tanh", ["c"], ["y"])], {}, "tanh"),
    "silu": ([helper.make_node("Sigmoid", ["c"], ["g"]), helper.make_node("Mul", ["c", "g"], ["y"])], {}, "silu"),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_fused_into_the_conv(name: str, rng: np.random.Generator) -> None:
    """Fused when convtune's Activation has the kind (kinds are being added);
    either way the outputs are the unfused graph's."""
    nodes, inits, kind = ACTIVATIONS[name]
    model = _conv_model(rng, nodes, inits)
    before = import_model(model)
    after = optimize(before)
    if kind in ACTIVATION_PARAMS:
        assert _ops(after) == ["FusedConv"]
        wl: Conv2D = after.producer("y").attrs["workload"]
        assert wl.bias and not wl.residual and wl.activation.kind == kind
    else:
        assert _ops(after)[0] == "FusedConv" and len(after) > 1
    _same_outputs(before, after, _feeds(rng))


@pytest.mark.parametrize("order", [("c", "r"), ("r", "c")])
def test_residual_add_and_relu_fused(order: tuple[str, str], rng: np.random.Generator) -> None:
    model = _conv_model(rng, [helper.make_node("Add", list(order), ["a"]), helper.make_node("Relu", ["a"], ["y"])])
    before = import_model(model)
    after = fuse_conv_epilogues(import_model(model))
    assert _ops(after) == ["FusedConv"]
    node = after.producer("y")
    assert node.inputs == ("x", "w", "b", "r")
    assert node.attrs["workload"].residual and node.attrs["workload"].activation.kind == "relu"
    feeds = _feeds(rng)
    _same_outputs(before, after, feeds)
    assert_close([interpret(after, feeds)["y"]], ort_run(model, feeds))


def test_broadcast_add_is_not_a_residual(rng: np.random.Generator) -> None:
    model = _conv_model(rng, [helper.make_node("Add", ["c", "t"], ["y"])], {"t": weights(rng, 1, 4, 1, 1)})
    before = import_model(model)
    after = optimize(before)
    assert _ops(after) == ["FusedConv", "Add"] and not after.producer("c").attrs["workload"].residual
    _same_outputs(before, after, _feeds(rng))


def test_conv_output_read_twice_keeps_its_epilogue_apart(rng: np.random.Generator) -> None:
    nodes = [helper.make_node("Relu", ["c"], ["y"]), helper.make_node("Sigmoid", ["c"], ["z"])]
    before = import_model(_conv_model(rng, nodes, outputs=("y", "z")))
    after = optimize(before)
    assert _ops(after)[0] == "FusedConv" and after.producer("c").attrs["workload"].activation is None
    _same_outputs(before, after, _feeds(rng))


def test_eliminate_dead_code_drops_unread_nodes_and_constants(rng: np.random.Generator) -> None:
    model = _conv_model(rng, [helper.make_node("Relu", ["c"], ["y"]), helper.make_node("Sigmoid", ["c"], ["dead"])],
                        {"unused": weights(rng, 3)})
    graph = eliminate_dead_code(import_model(model))
    assert _ops(graph) == ["Conv", "Relu"] and "unused" not in graph.constants and "dead" not in graph.tensors


@pytest.mark.parametrize("axes, keepdims, pooled", [([2, 3], 1, True), ([-1, -2], 0, True), ([1, 2, 3], 1, False),
                                                     ([2], 1, False)])
def test_a_mean_over_every_spatial_axis_becomes_a_global_pool(axes: list[int], keepdims: int, pooled: bool,
                                                              rng: np.random.Generator) -> None:
    """As torch's dynamo exporter writes adaptive_avg_pool2d(x, 1) (opset 18: axes an input)."""
    nodes = [helper.make_node("ReduceMean", ["c", "axes"], ["m"], keepdims=keepdims),
             helper.make_node("Relu", ["m"], ["y"])]
    model = _conv_model(rng, nodes, {"axes": np.array(axes, np.int64)}, opset=18)
    before = import_model(model)
    after = spatial_means_as_global_pools(import_model(model))
    want = ["Conv", "GlobalAveragePool", "Reshape", "Relu"] if not keepdims else ["Conv", "GlobalAveragePool", "Relu"]
    assert _ops(after) == (want if pooled else ["Conv", "ReduceMean", "Relu"])
    assert after.tensors["m"] == before.tensors["m"]
    feeds = _feeds(rng)
    _same_outputs(before, after, feeds)
    assert_close([interpret(after, feeds)["y"]], ort_run(model, feeds))


def test_optimize_leaves_its_input_alone(rng: np.random.Generator) -> None:
    graph = import_model(_conv_model(rng, [helper.make_node("Relu", ["c"], ["y"])]))
    optimize(graph)
    assert _ops(graph) == ["Conv", "Relu"]


@given(stride=st.sampled_from([1, 2]), pad=st.sampled_from([[0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 1, 0]]),
       dilation=st.sampled_from([1, 2]), groups=st.sampled_from([1, 2, 4]), bn=st.booleans(),
       residual=st.booleans(), act=st.sampled_from(sorted(ACTIVATIONS)), seed=st.integers(0, 2**31))
def test_optimized_graph_matches_onnxruntime(stride: int, pad: list[int], dilation: int, groups: int, bn: bool,
                                             residual: bool, act: str, seed: int) -> None:
    """Any conv, with or without BN and a residual, and any epilogue."""
    rng = np.random.default_rng(seed)
    k = 4
    x = (1, 4, 7, 7)
    out = [(7 + pad[i] + pad[i + 2] - 2 * dilation - 1) // stride + 1 for i in (0, 1)]
    inits = {"w": weights(rng, k, 4 // groups, 3, 3), "b": weights(rng, k), **_bn_inits(rng)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c0"], strides=[stride] * 2, pads=pad,
                              dilations=[dilation] * 2, group=groups)]
    last = "c0"
    if bn:
        nodes.append(helper.make_node("BatchNormalization", [last, "s", "sh", "m", "v"], ["c1"]))
        last = "c1"
    if residual:
        nodes.append(helper.make_node("Add", [last, "r"], ["c2"]))
        last = "c2"
    act_nodes, act_inits, _ = ACTIVATIONS[act]
    rename = {"c": last}
    for n in act_nodes:
        nodes.append(helper.make_node(n.op_type, [rename.get(i, i) for i in n.input], list(n.output),
                                      **{a.name: helper.get_attribute_value(a) for a in n.attribute}))
    model = make_model(nodes, {"x": x, "r": (1, k, *out)}, {"y": None}, {**inits, **act_inits})
    feeds = {"x": weights(rng, *x), "r": weights(rng, 1, k, *out)}
    graph = optimize(import_model(model))
    assert _ops(graph)[0] == "FusedConv" and "BatchNormalization" not in _ops(graph)
    assert_close([interpret(graph, feeds)["y"]], ort_run(model, feeds))


@pytest.mark.parametrize("name", ["mobilenet_v2", "squeezenet1_1"])
def test_zoo_architectures_fuse_every_epilogue(name: str, rng: np.random.Generator) -> None:
    """Real architectures as PyTorch exports them, BN kept explicit: after
    optimize only convs (with their BN, ReLU6, residual Adds) and the
    non-conv layers are left, and the graph still matches onnxruntime."""
    from convtune.tuner.zoo import build_model

    model = build_model(name, fold_bn=False)
    graph = optimize(import_model(model))
    assert not {"BatchNormalization", "Relu", "Clip", "Add", "Identity"} & set(_ops(graph))
    x = rng.standard_normal(graph.tensors[graph.inputs[0]].shape, dtype=np.float32)
    assert_close(list(interpret(graph, {graph.inputs[0]: x}).values()), ort_run(model, {graph.inputs[0]: x}))
