"""``convtune bench --chain``: a model's convs timed inside runs of its
Session (NCHW and blocked plans) against their isolated times, and
onnxruntime's whole model, on a tiny ONNX model: conv-relu,
conv+residual-relu (a ResNet block), max pool, conv."""
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
from convtune.schedules.templates import schedule_from_config
from convtune.tuner.chain import prepare_chain
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


def test_blocked_mode_is_the_models_own_plan_and_each_conv_is_checked_in_sequence(tiny_model):
    run = prepare_chain(tiny_model, "blocked")
    nchw = prepare_chain(tiny_model, "nchw", feeds=run.feeds)
    assert [s.node.attrs["workload"].residual for s in run.convs] == [False, True, False]
    assert nchw.names == run.names and not nchw.plan.layouts
    # t1 goes from conv to conv (c2 reads it as data and residual), t2 and t3 through the
    # MaxPool between c2 and c3; the model's input and output are NCHW: the model plan's choice
    assert set(run.plan.layouts) == {"t1", "t2", "t3"}
    assert run.convs[1].node.inputs[0] == run.convs[1].node.inputs[-1] == "t1"
    assert not run.convs[1].packs  # reads t1 in place: no packing stage
    assert run.check() < TOLERANCE and nchw.check() < TOLERANCE
    times = run.timed()
    assert len(times) == 3 and all(t > 0 for t in times)
    assert np.array_equal(run.nchw("output"), run.plan.values["output"])


def test_the_compiled_chain_runs_the_models_convs_and_nothing_else(tiny_model):
    """``chain`` is the model's convs through one compiled driver: every
    NaN-poisoned NCHW conv output is written again, and the driver calls
    three convs' stages and no other operator. (Its inputs hold whatever the
    last run left in their storage, shared by liveness: values do not matter
    to a timing, the traffic does.)"""
    run = prepare_chain(tiny_model, "blocked")
    run.model()
    outs = [s.node.outputs[0] for s in run.convs if s.node.outputs[0] not in run.plan.layouts]
    assert outs == ["output"]  # t1 and t2 are blocked: their zero borders are never rewritten, so left alone
    for t in outs:
        run.plan.values[t].fill(np.nan)
    run.chain()
    for t in outs:
        assert np.isfinite(run.plan.values[t]).all(), t
    assert run.driver.source.count("call_native(") == run.driver.source.count("# run_stages") == 3


def test_a_wrong_conv_is_caught_by_the_chain_check(tiny_model):
    """The check compares each conv with the reference on the inputs it saw:
    a conv whose output is corrupted after it runs fails it."""
    run = prepare_chain(tiny_model, "nchw")
    step = run.convs[1]
    inner = step.run

    def corrupted():
        inner()
        run.plan.values[step.node.outputs[0]].reshape(-1)[0] += 1.0

    step.run = corrupted
    assert run.check() > TOLERANCE


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
        assert mode["slowdown"] == pytest.approx(mode["sequence"] / sum(mode["isolated_warm"]))
        assert mode["stepped"] == pytest.approx(sum(mode["in_sequence"])) and mode["stepped"] > 0
        assert mode["model"] > 0
    assert report["modes"]["blocked"]["blocked_tensors"] >= 1 and report["modes"]["nchw"]["blocked_tensors"] == 0
    assert report["onnxruntime"] > 0
