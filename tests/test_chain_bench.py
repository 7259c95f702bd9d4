"""``convtune bench --chain``: a model's convs in sequence (NCHW and blocked
layouts) against their isolated times, and onnxruntime's whole model, on a
tiny ONNX model: conv-relu, conv+residual-relu (a ResNet block), max pool,
conv."""
import json

import numpy as np
import onnx
import pytest
from conftest import fresh_seed
from onnx import TensorProto, helper

from convtune.codegen import build
from convtune.codegen.kernel import ScratchArena
from convtune.codegen.verify import TOLERANCE, random_inputs
from convtune.ir.reference import conv2d_reference, relative_error
from convtune.ir.workload import conv2d
from convtune.schedules.layout import to_blocked
from convtune.schedules.templates import schedule_from_config
from convtune.tuner.chain import model_chain, prepare_chain
from convtune.tuner.cli import main


def _conv(name, x, out, c, k, r, rng, inits):
    w = helper.make_tensor(f"{name}_w", TensorProto.FLOAT, (k, c, r, r),
                           (rng.standard_normal((k, c, r, r)) / np.sqrt(c * r * r)).astype(np.float32).ravel())
    b = helper.make_tensor(f"{name}_b", TensorProto.FLOAT, (k,), rng.uniform(-0.1, 0.1, k).astype(np.float32))
    inits += [w, b]
    return helper.make_node("Conv", [x, w.name, b.name], [out], name=name, kernel_shape=[r, r],
                            pads=[r // 2] * 4)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    rng = np.random.default_rng(0)
    inits = []
    nodes = [
        _conv("c1", "input", "c1", 8, 16, 3, rng, inits), helper.make_node("Relu", ["c1"], ["t1"]),
        _conv("c2", "t1", "c2", 16, 16, 3, rng, inits), helper.make_node("Add", ["c2", "t1"], ["s2"]),
        helper.make_node("Relu", ["s2"], ["t2"]),
        helper.make_node("MaxPool", ["t2"], ["t3"], kernel_shape=[2, 2], strides=[2, 2]),
        _conv("c3", "t3", "c3", 16, 16, 3, rng, inits), helper.make_node("Relu", ["c3"], ["output"]),
    ]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, (1, 8, 12, 12))]
    graph = helper.make_graph(nodes, "tiny", inputs,
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, (1, 16, 6, 6))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("chain") / "tiny.onnx"
    onnx.save(model, path)
    return str(path)


def test_blocked_mode_keeps_only_conv_to_conv_tensors_blocked(tiny_model):
    chain = model_chain(tiny_model)
    assert [c.workload.residual for c in chain.convs] == [False, True, False]
    run = prepare_chain(chain, "blocked")
    assert set(run.layouts) == {"t1", "t3"}  # input, t2 (read by MaxPool) and output are the model's, in NCHW
    c2 = run.prepared[1].kernel
    assert c2.input_layout == c2.residual_layout == run.layouts["t1"]
    assert run.prepared[0].kernel.output_layout == run.layouts["t1"]
    for c in chain.convs:  # poison every output (a blocked one inside its zero border)
        layout = run.layouts.get(c.out)
        run.buffers[c.out][...] = np.nan if layout is None else to_blocked(layout, np.full(layout.tensor, np.nan,
                                                                                          np.float32))
    run()
    assert run.check() < TOLERANCE
    assert np.array_equal(run.nchw("output"), run.buffers["output"])


def test_kernels_sharing_a_scratch_arena_stay_correct_called_in_turn():
    """Two kernels' packed inputs and Winograd buffers are views of one
    arena (grown when the second needs more); called alternately, each
    still computes its own conv."""
    wls = [conv2d(1, 8, 10, 10, 16, 3, padding=1), conv2d(1, 16, 12, 12, 16, 3, padding=1, bias=True)]
    arena = ScratchArena()
    rng = np.random.default_rng(fresh_seed())
    convs, inputs = [], []
    for wl in wls:
        x = random_inputs(wl, rng)
        convs.append(build(schedule_from_config(wl, {"algorithm": "winograd", "m": 2, "cb": 8, "kb": 16, "tb": 4}))
                     .prepare(x.weight, x.bias, arena=arena))
        inputs.append(x)
    first = convs[0].scratch()["V"]
    for _ in range(2):
        for wl, conv, x in zip(wls, convs, inputs):
            out = np.full(wl.out_shape, np.nan, np.float32)
            conv(x.data, out=out)
            assert relative_error(out, conv2d_reference(wl, x.data, x.weight, x.bias)) < TOLERANCE
    assert np.shares_memory(convs[0].scratch()["V"], convs[1].scratch()["V"])
    assert arena.generation >= 1 and arena.size >= max(first.size, convs[1].scratch()["V"].size)


def test_convtune_bench_chain_reports_sequence_isolated_and_onnxruntime(tiny_model, tmp_path):
    out = tmp_path / "chain.json"
    assert main(["bench", "--chain", tiny_model, "--rounds", "1", "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["modes"]) == {"nchw", "blocked"} and len(report["convs"]) == 3
    for mode in report["modes"].values():
        assert mode["error"] < TOLERANCE and mode["sequence"] > 0
        assert len(mode["isolated_warm"]) == len(mode["isolated_cold"]) == len(mode["in_sequence"]) == 3
        assert mode["in_sequence_slowdown"] == pytest.approx(sum(mode["in_sequence"]) / sum(mode["isolated_warm"]))
        assert mode["slowdown"] == pytest.approx(mode["sequence"] / sum(mode["isolated_warm"]))
    assert report["modes"]["blocked"]["blocked_tensors"] >= 2 and report["modes"]["nchw"]["blocked_tensors"] == 0
    assert report["onnxruntime"] > 0
