"""Whole models on the GPU (numba's CUDA simulator without one): ``Session(...,
target="cuda")`` against onnxruntime, tensors that stay in device memory
from the input to the output, the one error for an operator without a device
kernel, and ``convtune tune/run MODEL --target cuda`` end to end."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx_models import assert_close, make_model, ort_run, weights

from conftest import ROOT
from convtune.codegen import cuda_model
from convtune.codegen.cuda_build import cuda_target
from convtune.codegen.cuda_launch import device_array, simulated
from convtune.ir.graph import GraphError
from convtune.ir.model_passes import optimize
from convtune.ir.onnx_frontend import import_model
from convtune.tuner import records
from convtune.tuner.dispatch import ApplyHistoryBest, FallbackWarning
from convtune.tuner.session import Session

X = (2, 4, 8, 8)


def _cnn(rng: np.random.Generator) -> onnx.ModelProto:
    """conv+bias+ReLU, a residual block, max pool, a 1x1 conv concatenated on
    channels, a broadcast Add, global pool, Flatten, Gemm and Softmax."""
    inits = {"w0": weights(rng, 8, 4, 3, 3) / 4, "b0": weights(rng, 8), "w1": weights(rng, 8, 8, 3, 3) / 8,
             "b1": weights(rng, 8), "w2": weights(rng, 4, 8, 1, 1), "k": weights(rng, 12, 1, 1),
             "wf": weights(rng, 5, 12), "bf": weights(rng, 5)}
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c1", "r0"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p", "w2"], ["c2"]),
        helper.make_node("Concat", ["p", "c2"], ["cat"], axis=1),
        helper.make_node("Add", ["cat", "k"], ["s"]),
        helper.make_node("GlobalAveragePool", ["s"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1),
        helper.make_node("Softmax", ["y"], ["prob"]),
    ]
    return make_model(nodes, {"x": X}, {"y": (2, 5), "prob": (2, 5)}, inits)


def _poison(plan: cuda_model.CudaPlan) -> None:
    """Every device block NaN (all bits set), so a value no kernel wrote shows."""
    for block in plan.blocks:
        block.copy_to_device(np.full(block.shape, 0xFF, np.uint8))


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return _cnn(np.random.default_rng(1234))


@pytest.fixture(scope="module")
def session(model: onnx.ModelProto) -> Session:
    with pytest.warns(FallbackWarning, match="3 conv workloads"):
        return Session(model, target="cuda")


def test_matches_onnxruntime_on_fresh_inputs(model: onnx.ModelProto, session: Session,
                                             rng: np.random.Generator) -> None:
    assert [s.node.op for s in session.plan.steps] == ["FusedConv", "FusedConv", "MaxPool", "FusedConv", "Concat",
                                                       "Add", "GlobalAveragePool", "Gemm", "Softmax"]
    for _ in range(2):  # the second run reuses every buffer
        _poison(session.plan)
        x = rng.standard_normal(X, dtype=np.float32)
        assert_close(session.run(None, {"x": x}), ort_run(model, {"x": x}))


def test_tensors_stay_on_the_device(session: Session, rng: np.random.Generator,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Every launch reads and writes device arrays (or scalars); a run copies
    its one input in and its two outputs out, and nothing else."""
    for step in session.plan.steps:
        args = step.run.arguments
        assert args and all(device_array(a) is not None or isinstance(a, (int, float, bool)) for a in args), step.node
    if not simulated():
        pytest.skip("the copies are counted on the simulator's device arrays")
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    copies: list[str] = []
    for name in ("copy_to_host", "copy_to_device"):
        original = getattr(FakeCUDAArray, name)
        monkeypatch.setattr(FakeCUDAArray, name, lambda self, *a, _f=original, _n=name, **k: (copies.append(_n),
                                                                                              _f(self, *a, **k))[1])
    session.run(None, {"x": rng.standard_normal(X, dtype=np.float32)})
    assert sorted(copies) == ["copy_to_device", "copy_to_host", "copy_to_host"]
    assert session.plan.storage_bytes < sum(np.prod(session.graph.tensors[t].shape) * 4
                                            for t in session.plan.values if t not in session.graph.constants)


def _unary_and_spatial(rng: np.random.Generator) -> onnx.ModelProto:
    """The other device kernels, no conv: broadcasting Sub/Mul/Div, the
    activations, AveragePool with pads counted, GlobalMaxPool, Transpose,
    Slice, Split, Concat on another axis, ReduceMean, MatMul."""
    inits = {"m": rng.uniform(0.5, 2, (1, 3, 1, 6)).astype(np.float32), "d": rng.uniform(1, 2, 6).astype(np.float32),
             "wm": weights(rng, 3, 4)}
    nodes = [
        helper.make_node("Mul", ["x", "m"], ["m1"]), helper.make_node("Sub", ["m1", "x"], ["s1"]),
        helper.make_node("Div", ["s1", "d"], ["d1"]), helper.make_node("Clip", ["d1", "lo", "hi"], ["c1"]),
        helper.make_node("Sigmoid", ["x"], ["g1"]), helper.make_node("LeakyRelu", ["x"], ["l1"], alpha=0.2),
        helper.make_node("HardSwish", ["l1"], ["h1"]), helper.make_node("HardSigmoid", ["x"], ["hs"]),
        helper.make_node("Tanh", ["hs"], ["t1"]), helper.make_node("Add", ["g1", "t1"], ["a1"]),
        helper.make_node("Mul", ["a1", "c1"], ["a2"]), helper.make_node("Add", ["a2", "h1"], ["a3"]),
        helper.make_node("AveragePool", ["a3"], ["ap"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1),
        helper.make_node("Transpose", ["ap"], ["tr"], perm=[0, 1, 3, 2]),
        helper.make_node("Slice", ["tr", "st", "en", "ax", "sp"], ["sl"]),
        helper.make_node("Split", ["a3"], ["sp0", "sp1"], axis=2),
        helper.make_node("Concat", ["sp1", "sp0", "sl"], ["cc"], axis=2),
        helper.make_node("GlobalMaxPool", ["cc"], ["gm"]),
        helper.make_node("ReduceMean", ["cc"], ["rm"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["rm", "wm"], ["mm"]),
    ]
    inits.update(lo=np.float32(-0.5), hi=np.float32(0.7), st=np.array([5, 0]), en=np.array([0, 6]),
                 ax=np.array([2, 3]), sp=np.array([-2, 1]))  # rows 5, 3, 1 of the transposed pool
    return make_model(nodes, {"x": (1, 3, 6, 6)}, {"gm": (1, 3, 1, 1), "mm": (1, 4)}, inits)


def test_the_other_operators_match_onnxruntime(rng: np.random.Generator) -> None:
    model = _unary_and_spatial(rng)
    session = Session(model, target="cuda")
    x = rng.standard_normal((1, 3, 6, 6), dtype=np.float32)
    assert_close(session.run(None, {"x": x}), ort_run(model, {"x": x}))


def test_an_operator_without_a_device_kernel_fails_before_anything_compiles(
        rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Resize", ["c", "", "scales"], ["y"], mode="nearest")]
    model = make_model(nodes, {"x": (1, 4, 6, 6)}, {"y": None},
                       {"w": weights(rng, 4, 4, 3, 3), "scales": np.array([1, 1, 2, 2], np.float32)})
    monkeypatch.setattr(cuda_model, "build", lambda *a, **k: pytest.fail("a kernel was built"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        with pytest.raises(GraphError, match=r"^node '[^']+' \(Resize\): the cuda target has no kernel for this "
                                             r"operator \(it runs FusedConv, .*MaxPool"):
            Session(model, target="cuda")


@pytest.mark.parametrize("lowering, kernel, pad", [("subpixel", 2, 1), ("subpixel", 1, 0), ("zero_insertion", 2, 1)])
def test_a_transposed_conv_runs_as_sub_convs_and_strided_copies(lowering: str, kernel: int, pad: int,
                                                                rng: np.random.Generator) -> None:
    """Stride 2, output padding, bias and ReLU: sub-pixel's cropped inputs
    and interleaved phases (with a 1x1 kernel, three phases are the bias
    alone: fills), or zero insertion's placed input."""
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["t"], strides=[2, 2], pads=[pad] * 4,
                              output_padding=[1, 1], kernel_shape=[kernel, kernel]),
             helper.make_node("Relu", ["t"], ["y"])]
    model = make_model(nodes, {"x": (1, 4, 4, 4)}, {"y": None}, {"w": weights(rng, 4, 3, kernel, kernel),
                                                                 "b": weights(rng, 3)})
    graph = optimize(import_model(model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        plan = cuda_model.build_cuda_plan(graph, ApplyHistoryBest([], cuda_target()).schedule_for,
                                          lowering_for=lambda wl: lowering)
    want = {"FusedConv", "Interleave" if lowering == "subpixel" else "PlaceInput"}
    assert want <= {s.node.op for s in plan.steps} <= {"FusedConv", "PlaceInput", "Interleave"}
    _poison(plan)
    x = rng.standard_normal((1, 4, 4, 4), dtype=np.float32)
    cuda_model.copy_in(plan, {"x": x})
    cuda_model.run_cuda_plan(plan)
    assert_close(cuda_model.copy_out(plan, ["y"]), ort_run(model, {"x": x}))


@pytest.mark.skipif(simulated(), reason="CUDA graphs need a GPU")
def test_on_a_gpu_the_run_replays_one_cuda_graph(model: onnx.ModelProto, session: Session,
                                                 rng: np.random.Generator) -> None:
    assert session.plan.graph is not None and session.plan.graph.launches >= len(session.plan.steps)
    x = rng.standard_normal(X, dtype=np.float32)
    assert_close(session.run(None, {"x": x}), ort_run(model, {"x": x}))


# -- convtune tune / run MODEL --target cuda ---------------------------------------
def _tiny(path: Path) -> onnx.ModelProto:
    """Two conv tasks on 4 channels of 6x6 (conv+ReLU, 1x1 conv + residual),
    pooled: tunes in seconds on the simulator."""
    rng = np.random.default_rng(7)
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["r0"]), helper.make_node("Conv", ["r0", "w1"], ["c1"]),
             helper.make_node("Add", ["c1", "r0"], ["a"]), helper.make_node("GlobalAveragePool", ["a"], ["y"])]
    model = make_model(nodes, {"x": (1, 4, 6, 6)}, {"y": None},
                       {"w0": weights(rng, 4, 4, 3, 3) / 4, "b0": weights(rng, 4), "w1": weights(rng, 4, 4, 1, 1)})
    path.write_bytes(model.SerializeToString())
    return model


def _convtune(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convtune.tuner.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=env)


def test_tune_then_run_a_model_on_the_gpu(tmp_path: Path, rng: np.random.Generator) -> None:
    model = _tiny(tmp_path / "tiny.onnx")
    log = tmp_path / "tiny.jsonl"
    tune = _convtune("tune", str(tmp_path / "tiny.onnx"), "--target", "cuda", "--trials", "2", "--repeats", "1",
                     "--log", str(log))
    assert tune.returncode == 0, tune.stderr
    assert "2 conv tasks" in tune.stdout and "on cuda" in tune.stdout
    recs = list(records.read(log))
    assert len(recs) == 4 and all(r.target["kind"] == "cuda" for r in recs)
    assert all(r.ok for r in recs), [(r.config, r.error_code, r.error) for r in recs if not r.ok]
    again = _convtune("tune", str(tmp_path / "tiny.onnx"), "--target", "cuda", "--trials", "2", "--log", str(log))
    assert again.returncode == 0 and len(list(records.read(log))) == 4  # resumed: nothing measured twice
    x = rng.standard_normal((1, 4, 6, 6), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    run = _convtune("run", str(tmp_path / "tiny.onnx"), "--target", "cuda", "--log", str(log),
                    "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"))
    assert run.returncode == 0, run.stderr
    assert "FallbackWarning" not in run.stderr  # every conv ran its tuned GPU config
    assert_close([np.load(tmp_path / "y.npy")], ort_run(model, {"x": x}))


@pytest.mark.skipif(Path("/dev/nvidiactl").exists(), reason="this machine has a GPU")
@pytest.mark.parametrize("command", ["tune", "run"])
def test_no_gpu_and_no_simulator_says_so_in_one_line(command: str, tmp_path: Path) -> None:
    _tiny(tmp_path / "tiny.onnx")
    extra = {"tune": ["--log", str(tmp_path / "x.jsonl")],
             "run": ["--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy")]}[command]
    run = _convtune(command, str(tmp_path / "tiny.onnx"), "--target", "cuda", *extra,
                    env=dict(os.environ, NUMBA_ENABLE_CUDASIM="0"))
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0
    assert f"convtune {command}: --target cuda: no CUDA GPU is available" in run.stderr
