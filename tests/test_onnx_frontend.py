"""The ONNX frontend: conv attributes, the opset forms of attribute-like
inputs, PyTorch's shape arithmetic, the batch, and every error path."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx_models import assert_close, make_model, ort_run, weights

from convtune.ir.graph import GraphError
from convtune.ir.model_passes import optimize
from convtune.ir.onnx_frontend import import_model
from convtune.tuner.dispatch import ApplyHistoryBest
from convtune.tuner.session import Session

pytestmark = pytest.mark.filterwarnings("ignore::convtune.tuner.dispatch.FallbackWarning")

CONV_CASES = {
    "same_upper_s2": ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (0, 0, 1, 1)),
    "same_lower_s2": ({"auto_pad": "SAME_LOWER", "strides": [2, 2]}, (1, 1, 0, 0)),
    "valid": ({"auto_pad": "VALID"}, (0, 0, 0, 0)),
    "asymmetric_dilated": ({"pads": [0, 1, 2, 1], "dilations": [2, 1]}, (0, 1, 2, 1)),
    "grouped_strided": ({"group": 2, "strides": [1, 2], "pads": [1, 1, 1, 1]}, (1, 1, 1, 1)),
}


@pytest.mark.parametrize("name", sorted(CONV_CASES))
def test_conv_attributes(name: str, rng: np.random.Generator) -> None:
    attrs, padding = CONV_CASES[name]
    groups = attrs.get("group", 1)
    model = make_model([helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)], {"x": (1, 4, 8, 8)},
                       {"y": None}, {"w": weights(rng, 4, 4 // groups, 3, 3), "b": weights(rng, 4)})
    session = Session(model)
    (node,) = session.graph.nodes()
    wl = node.attrs["workload"]
    assert node.op == "FusedConv" and wl.padding == padding and wl.groups == groups and wl.bias
    x = weights(rng, 1, 4, 8, 8)
    assert_close(session.run(None, {"x": x}), ort_run(model, {"x": x}))


def _opset_model(opset: int) -> onnx.ModelProto:
    """Every operator whose attributes became inputs, in ``opset``'s form."""
    inits: dict[str, np.ndarray] = {
        "lo": np.float32(-1), "hi": np.float32(1.5), "starts": np.array([0, 1]), "ends": np.array([4, -1]),
        "axes23": np.array([2, 3]), "steps": np.array([1, 2]), "shape": np.array([1, -1]), "ax0": np.array([0]),
    }
    nodes = [helper.make_node("Clip", ["x", "lo", "hi"], ["clip"])]
    if opset >= 18:
        inits.update(pads=np.array([1, 0, 2, 1]), pad_value=np.float32(0.5))
        nodes.append(helper.make_node("Pad", ["clip", "pads", "pad_value", "axes23"], ["pad"], mode="reflect"))
    else:
        inits.update(pads=np.array([0, 0, 1, 0, 0, 0, 2, 1]))
        nodes.append(helper.make_node("Pad", ["clip", "pads"], ["pad"], mode="edge"))
    nodes.append(helper.make_node("Slice", ["pad", "starts", "ends", "axes23", "steps"], ["slice"]))
    if opset == 11:
        inits.update(roi=np.zeros(0, np.float32), scales=np.zeros(0, np.float32), sizes=np.array([1, 4, 7, 5]))
        nodes.append(helper.make_node("Resize", ["slice", "roi", "scales", "sizes"], ["resize"], mode="linear",
                                      coordinate_transformation_mode="align_corners"))
    elif opset >= 18:
        inits.update(scales=np.array([2.0, 1.5], np.float32))
        nodes.append(helper.make_node("Resize", ["slice", "", "scales"], ["resize"], mode="nearest", axes=[2, 3],
                                      nearest_mode="round_prefer_ceil"))
    else:
        inits.update(scales=np.array([1, 1, 2, 1.5], np.float32))
        nodes.append(helper.make_node("Resize", ["slice", "", "scales"], ["resize"], mode="linear"))
    if opset < 13:
        nodes.append(helper.make_node("Split", ["resize"], ["s0", "s1"], axis=1, split=[1, 3]))
        nodes += [helper.make_node("Unsqueeze", ["s0"], ["u"], axes=[0]),
                  helper.make_node("Squeeze", ["u"], ["q"], axes=[0]),
                  helper.make_node("ReduceMean", ["s1"], ["mean"], axes=[1], keepdims=1)]
    else:
        if opset >= 18:
            nodes.append(helper.make_node("Split", ["resize"], ["s0", "s1"], axis=1, num_outputs=2))
        else:
            inits.update(split=np.array([1, 3]))
            nodes.append(helper.make_node("Split", ["resize", "split"], ["s0", "s1"], axis=1))
        inits.update(ax1=np.array([1]))
        nodes += [helper.make_node("Unsqueeze", ["s0", "ax0"], ["u"]),
                  helper.make_node("Squeeze", ["u", "ax0"], ["q"])]
        nodes.append(helper.make_node("ReduceMean", ["s1", "ax1"], ["mean"]) if opset >= 18 else
                     helper.make_node("ReduceMean", ["s1"], ["mean"], axes=[1]))
    nodes += [helper.make_node("Mul", ["q", "mean"], ["mul"]),
              helper.make_node("Reshape", ["mul", "shape"], ["flat"]),
              helper.make_node("Softmax", ["mul"], ["y"], axis=2),
              helper.make_node("Softmax", ["flat"], ["z"])]
    return make_model(nodes, {"x": (1, 4, 6, 6)}, {"y": None, "z": None}, inits, opset=opset)


@pytest.mark.parametrize("opset", [11, 13, 18, 21])
def test_opset_forms_match_onnxruntime(opset: int, rng: np.random.Generator) -> None:
    model = _opset_model(opset)
    graph = import_model(model)
    assert all(len(n.inputs) == 1 for n in graph.nodes() if n.op not in ("Mul",))  # bounds became attributes
    x = weights(rng, 1, 4, 6, 6) * 2
    assert_close(Session(model).run(None, {"x": x}), ort_run(model, {"x": x}))


def test_pytorch_shape_arithmetic_is_folded(rng: np.random.Generator) -> None:
    """x.view(x.size(0), x.size(1) // 2, -1), as the exporter writes it."""
    inits = {"i0": np.array(0), "i1": np.array(1), "two": np.array(2), "minus1": np.array([-1]), "ax": np.array([0])}
    nodes = [
        helper.make_node("Shape", ["x"], ["sh"]),
        helper.make_node("Gather", ["sh", "i0"], ["n"], axis=0),
        helper.make_node("Gather", ["sh", "i1"], ["c"], axis=0),
        helper.make_node("Div", ["c", "two"], ["half"]),
        helper.make_node("Cast", ["half"], ["half64"], to=TensorProto.INT64),
        helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
        helper.make_node("Unsqueeze", ["half64", "ax"], ["h1"]),
        helper.make_node("Concat", ["n1", "h1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["r"]),
        helper.make_node("Relu", ["r"], ["y"]),
    ]
    model = make_model(nodes, {"x": ("batch", 4, 3, 3)}, {"y": None}, inits)
    graph = import_model(model, batch=2)
    assert [n.op for n in graph.nodes()] == ["Reshape", "Relu"]
    assert graph.tensors["y"].shape == (2, 2, 18)
    x = weights(rng, 2, 4, 3, 3)
    assert_close(Session(model, batch=2).run(None, {"x": x}), ort_run(model, {"x": x}))


def _relu(shape: tuple) -> onnx.ModelProto:
    return make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": shape}, {"y": shape})


def test_batch() -> None:
    assert import_model(_relu(("N", 3)), batch=5).tensors["x"].shape == (5, 3)
    assert import_model(_relu((2, 3)), batch=2).tensors["y"].shape == (2, 3)
    with pytest.raises(GraphError, match=r"input 'x': the batch axis is dynamic \(N\); give a batch size"):
        import_model(_relu(("N", 3)))
    with pytest.raises(GraphError, match="input 'x' has a static batch of 2, not 4"):
        import_model(_relu((2, 3)), batch=4)
    with pytest.raises(GraphError, match=r"input 'x': axis 1 \(W\) is dynamic"):
        import_model(_relu((1, "W")), batch=1)
    with pytest.raises(GraphError, match="batch: expected a positive int"):
        import_model(_relu(("N", 3)), batch=0)


def _with_nodes(*nodes: onnx.NodeProto, inits: dict | None = None, opset: int = 17,
                out: tuple = (1, 2, 4, 4)) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, out)],
                              [onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("custom", 1)])


@pytest.mark.parametrize("model, message", [
    (_with_nodes(helper.make_node("LRN", ["x"], ["a"], size=3, name="lrn1"), helper.make_node("Relu", ["a"], ["b"]),
                 helper.make_node("Hardmax", ["b"], ["y"], name="hm")),
     r"unsupported operators: LRN \(1 node: 'lrn1'\), Hardmax \(1 node: 'hm'\)"),
    (_with_nodes(*[helper.make_node("LRN", [a], [b], size=3, name=f"lrn{i}")
                   for i, (a, b) in enumerate(zip(["x", "t1", "t2", "t3", "t4"], ["t1", "t2", "t3", "t4", "y"]))]),
     r"unsupported operator: LRN \(5 nodes: 'lrn0', 'lrn1', 'lrn2', \.\.\.\) \(supported: "),
    (_with_nodes(helper.make_node("Relu", ["x"], ["y"], domain="custom", name="mine")),
     r"custom.Relu \(1 node: 'mine'\)"),
    (_with_nodes(helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="cubic", name="up"),
                 inits={"sc": np.array([1, 1, 2, 2], np.float32)}, out=(1, 2, 8, 8)),
     r"node 'up' \(Resize\): attribute 'mode': 'cubic' is not supported"),
    (_with_nodes(helper.make_node("BatchNormalization", ["x", "s", "s", "s", "s"], ["y", "rm", "rv"],
                                  training_mode=1, name="bn"),
                 inits={"s": np.ones(2, np.float32)}),
     r"node 'bn' \(BatchNormalization\): attribute 'training_mode'"),
    (_with_nodes(helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Relu", ["x"], ["r"]),
                 helper.make_node("Reshape", ["r", "s"], ["y"], name="rs")),
     None),  # constant after folding: fine
    (_with_nodes(helper.make_node("Conv", ["x", "w"], ["y"], name="c", auto_pad="SAME_MIDDLE"),
                 inits={"w": np.ones((2, 2, 3, 3), np.float32)}, out=(1, 2, 2, 2)),
     r"node 'c' \(Conv\): attribute 'auto_pad': 'SAME_MIDDLE'"),
    (_with_nodes(helper.make_node("Relu", ["x"], ["y"]), opset=10), "opset 10 is not supported"),
    (_with_nodes(helper.make_node("Relu", ["nowhere"], ["y"])), "model: invalid"),
])
def test_import_errors_name_node_operator_and_attribute(model: onnx.ModelProto, message: str | None) -> None:
    if message is None:
        import_model(model)
        return
    with pytest.raises(GraphError, match=message):
        import_model(model)


def test_computed_shape_input_is_refused(rng: np.random.Generator) -> None:
    nodes = [helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                                           helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])])
    with pytest.raises(GraphError, match=r"node 'rs' \(Reshape\): input 'shape': must be a constant"):
        import_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_one_dimensional_conv_is_refused(rng: np.random.Generator) -> None:
    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], name="c1d")], {"x": (1, 2, 8)}, {"y": None},
                       {"w": weights(rng, 2, 2, 3)})
    with pytest.raises(GraphError, match=r"node 'c1d' \(Conv\): input 'X': only 2-D convolutions"):
        import_model(model)


def test_unsupported_operator_stops_before_any_compile(monkeypatch, rng: np.random.Generator) -> None:
    def no_compile(self, wl):  # type: ignore[no-untyped-def]
        raise AssertionError("compiled before the whole model was checked")

    monkeypatch.setattr(ApplyHistoryBest, "kernel", no_compile)
    model = _with_nodes(helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Erf", ["c"], ["y"]),
                        inits={"w": weights(rng, 2, 2, 3, 3)})
    with pytest.raises(GraphError, match="Erf"):
        Session(model)


@pytest.fixture
def saved(tmp_path, rng: np.random.Generator):  # type: ignore[no-untyped-def]
    w = weights(rng, 2, 2, 3, 3)
    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], {"x": (1, 2, 5, 5)},
                       {"y": None}, {"w": w})
    data = model.SerializeToString()
    path = tmp_path / "m.onnx"
    onnx.save_model(model, path, save_as_external_data=True, location="m.weights", size_threshold=0)
    return data, w, path


def test_external_data(saved) -> None:  # type: ignore[no-untyped-def]
    _, w, path = saved
    graph = optimize(import_model(path))
    assert np.array_equal(graph.constants["w"], w)
    unloaded = onnx.load(path, load_external_data=False)
    with pytest.raises(GraphError, match="initializer 'w': its data is in an external file that was not loaded"):
        import_model(unloaded)
    (path.parent / "m.weights").unlink()
    with pytest.raises(GraphError, match="external data file 'm.weights' of tensor 'w' is missing"):
        import_model(path)


def test_truncated_garbage_and_missing_files(saved, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data, _, _ = saved
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.onnx").write_bytes(b"\xff\x00 not protobuf" * 10)
    for name in ("cut.onnx", "junk.onnx"):
        with pytest.raises(GraphError, match=f"{name}: not a readable ONNX model|{name}|model: invalid"):
            import_model(tmp_path / name)
    with pytest.raises(GraphError, match="no such model file"):
        import_model(tmp_path / "absent.onnx")


def _big_conv_model(rng: np.random.Generator, weights_in_inputs: bool = False) -> onnx.ModelProto:
    """A conv whose weight is large enough to be kept out of the checked proto."""
    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], {"x": (1, 16, 6, 6)},
                       {"y": None}, {"w": weights(rng, 24, 16, 3, 3)})
    if weights_in_inputs:  # IR 3 style: every initializer is also a graph input
        model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, (24, 16, 3, 3)))
    return model


@pytest.mark.parametrize("weights_in_inputs", [False, True])
def test_weights_kept_out_of_shape_inference_still_import_as_constants(weights_in_inputs: bool,
                                                                       rng: np.random.Generator) -> None:
    model = _big_conv_model(rng, weights_in_inputs)
    before = model.SerializeToString()
    graph = import_model(model)
    assert graph.inputs == ["x"] and graph.constants["w"].shape == (24, 16, 3, 3)
    assert model.SerializeToString() == before  # the caller's proto is left as it was
    x = weights(rng, 1, 16, 6, 6)
    assert_close(Session(model).run(None, {"x": x}), ort_run(model, {"x": x}))


def test_a_weight_whose_data_does_not_fill_its_shape_is_named(rng: np.random.Generator) -> None:
    model = _big_conv_model(rng)
    w = model.graph.initializer[0]
    w.raw_data = w.raw_data[:-8]
    with pytest.raises(GraphError, match="initializer 'w': its data does not match its shape"):
        import_model(model)


def test_optimize_shares_the_weights_it_does_not_rewrite(rng: np.random.Generator) -> None:
    graph = import_model(_big_conv_model(rng))
    optimized = optimize(graph)
    assert optimized.constants["w"] is graph.constants["w"]  # one copy of the weights, not two
    assert [n.op for n in graph.nodes()] == ["Conv"]  # the input graph is not rewritten
