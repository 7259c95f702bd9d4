"""The graph runtime end to end: a small CNN (conv+BN+ReLU, max pool,
residual block, global pool, Gemm) through ``Session`` against onnxruntime,
its buffers, its errors, its profile, and ``convtune run``."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx_models import assert_close, make_model, ort_run, weights

from convtune.codegen.model_plan import build_plan, run_plan
from convtune.ir.graph import GraphError
from convtune.ir.model_passes import optimize
from convtune.ir.onnx_frontend import import_model
from convtune.schedules.target import host_target
from convtune.schedules.templates import schedule_from_config, search_space
from convtune.tuner.cli import main
from convtune.tuner.dispatch import FallbackWarning
from convtune.tuner.session import InputError, Session

X = ("N", 3, 16, 16)


def _cnn(rng: np.random.Generator):  # type: ignore[no-untyped-def]
    """Four distinct conv workloads, kept small so they compile fast."""
    k = 8
    inits = {
        "w0": weights(rng, k, 3, 3, 3), "s": rng.uniform(0.5, 2, k).astype(np.float32), "sh": weights(rng, k),
        "m": weights(rng, k), "v": rng.uniform(0.5, 2, k).astype(np.float32),
        "w1": weights(rng, k, k, 3, 3) / 8, "b1": weights(rng, k), "w2": weights(rng, k, k, 3, 3) / 8,
        "b2": weights(rng, k), "wd": weights(rng, k, 1, 3, 3), "wf": weights(rng, 5, k), "bf": weights(rng, 5),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c0", "s", "sh", "m", "v"], ["b0"]),
        helper.make_node("Relu", ["b0"], ["r0"]),
        helper.make_node("MaxPool", ["r0"], ["p0"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["p0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "p0"], ["a2"]),
        helper.make_node("Relu", ["a2"], ["r2"]),
        helper.make_node("Conv", ["r2", "wd"], ["d"], pads=[1, 1, 1, 1], group=k),
        helper.make_node("GlobalAveragePool", ["d"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1),
        helper.make_node("Softmax", ["y"], ["prob"]),
    ]
    return make_model(nodes, {"x": X}, {"y": ("N", 5), "prob": ("N", 5)}, inits)


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return _cnn(np.random.default_rng(1234))


@pytest.fixture(scope="module")
def session(model) -> Session:  # type: ignore[no-untyped-def]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = Session(model, batch=2)
    fallbacks = [w for w in caught if issubclass(w.category, FallbackWarning)]
    assert len(fallbacks) == 1 and "4 conv workloads" in str(fallbacks[0].message)
    return s


def _x(rng: np.random.Generator, batch: int = 2) -> np.ndarray:
    return rng.standard_normal((batch, *X[1:]), dtype=np.float32)


def test_matches_onnxruntime_on_fresh_inputs(model, session: Session, rng: np.random.Generator) -> None:
    assert [n.op for n in session.graph.nodes()] == ["FusedConv", "MaxPool", "FusedConv", "FusedConv",
                                                     "FusedConv", "GlobalAveragePool", "Flatten", "Gemm", "Softmax"]
    for _ in range(2):  # the second run reuses every buffer
        x = _x(rng)
        assert_close(session.run(None, {"x": x}), ort_run(model, {"x": x}))


def test_a_max_pool_between_convs_pools_the_blocked_tensors(model, session: Session,
                                                          rng: np.random.Generator) -> None:
    """resnet's stem: conv -> MaxPool -> conv (and the residual Add). The conv
    before the pool writes its block unpadded, the pool reads and writes
    blocked (its output in the padded layout the conv after it reads in
    place, border zero run after run), so no step around it packs or
    unpacks; the NCHW-only plan computes the same."""
    source, pooled = session.plan.layouts["r0"], session.plan.layouts["p0"]
    assert source.block == pooled.block and (source.top, source.left) == (0, 0) and (pooled.top, pooled.left) != (0, 0)
    steps = {s.node.outputs[0]: s for s in session.plan.steps}
    assert steps["r1"].packs == ()  # the conv after the pool reads it in place
    with pytest.warns(FallbackWarning):
        unblocked = Session(model, batch=2, blocked=False)
    for _ in range(2):
        x = _x(rng)
        assert_close(session.run(None, {"x": x}), unblocked.run(None, {"x": x}))
        border = session.plan.values["p0"].copy()
        n, c, h, w = pooled.tensor
        border[:, :, pooled.top:pooled.top + h, pooled.left:pooled.left + w] = 0
        assert not border.any()


def test_a_residual_conv_that_reads_its_residual_last_writes_over_it(model, rng: np.random.Generator) -> None:
    """The block's second conv adds the pooled tensor p0, its last reader: in
    the NCHW plan its output r2 shares p0's buffer (``codegen.in_place``) and
    the model still computes what onnxruntime does, run after run. In the
    blocked plan p0 is blocked and r2 is not, so each keeps its own."""
    with pytest.warns(FallbackWarning):
        nchw, blocked = Session(model, batch=2, blocked=False), Session(model, batch=2)
    assert np.shares_memory(nchw.plan.values["r2"], nchw.plan.values["p0"])
    assert not np.shares_memory(blocked.plan.values["r2"], blocked.plan.values["p0"])
    for _ in range(2):
        x = _x(rng)
        assert_close(nchw.run(None, {"x": x}), ort_run(model, {"x": x}))


def test_buffers_are_shared_by_liveness(session: Session) -> None:
    graph = session.graph
    computed = [t for n in graph.nodes() for t in n.outputs] + graph.inputs
    total = sum(session.plan.values[t].nbytes for t in computed)  # blocked ones as stored: padded, in blocks
    assert len(session.plan.blocks) < len(computed)
    assert session.plan.storage_bytes < total
    flatten = next(n for n in graph.nodes() if n.op == "Flatten")  # a view, not a step
    assert flatten not in [s.node for s in session.plan.steps]
    assert np.shares_memory(session.plan.values[flatten.outputs[0]], session.plan.values[flatten.inputs[0]])


def test_activations_stay_blocked_between_convs(model, session: Session, rng: np.random.Generator) -> None:
    """conv1 -> conv2 hands its output over in NCHW[x]c: conv1's kernel
    writes it, conv2's reads it in place; its buffer's border stays zero
    run after run; and the NCHW-only plan computes the same."""
    layout = session.plan.layouts["r1"]
    assert session.plan.values["r1"].shape == layout.shape != session.graph.tensors["r1"].shape
    with pytest.warns(FallbackWarning):
        unblocked = Session(model, batch=2, blocked=False)
    assert unblocked.plan.layouts == {}
    for _ in range(2):
        x = _x(rng)
        got = session.run(None, {"x": x})
        assert_close(got, unblocked.run(None, {"x": x}))
        assert_close(got, ort_run(model, {"x": x}))
        border = session.plan.values["r1"].copy()
        n, c, h, w = layout.tensor
        border[:, :, layout.top:layout.top + h, layout.left:layout.left + w] = 0
        assert not border.any()


def _fire_module(rng: np.random.Generator) -> onnx.ModelProto:
    """squeezenet's fire module: a 1x1 squeeze (weights "ws") whose output feeds
    a 1x1 ("w1") and a 3x3 ("w3") expand, concatenated."""
    inits = {"ws": weights(rng, 16, 8, 1, 1), "w1": weights(rng, 16, 16, 1, 1), "w3": weights(rng, 16, 16, 3, 3)}
    nodes = [helper.make_node("Conv", ["x", "ws"], ["s"]), helper.make_node("Relu", ["s"], ["r"]),
             helper.make_node("Conv", ["r", "w1"], ["e1"]),
             helper.make_node("Conv", ["r", "w3"], ["e3"], pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["e1", "e3"], ["y"], axis=1)]
    return make_model(nodes, {"x": (1, 8, 13, 13)}, {"y": (1, 32, 13, 13)}, inits)


def test_a_tensor_read_by_a_1x1_and_a_3x3_conv_takes_the_padded_layout(rng: np.random.Generator) -> None:
    """A fire module (squeezenet): the squeeze output feeds a 1x1 and a 3x3
    expand. The 3x3 reads the tensor in place (no packing stage); the 1x1,
    which would read an unpadded layout in place, packs from the padded one;
    and the outputs match onnxruntime."""
    model = _fire_module(rng)
    with pytest.warns(FallbackWarning):
        session = Session(model)
    steps = {s.node.inputs[1]: s for s in session.plan.steps if s.node.op == "FusedConv"}
    squeezed = steps["w1"].node.inputs[0]
    layout = session.plan.layouts[squeezed]
    assert (layout.top, layout.left) == (1, 1)
    assert steps["w3"].packs == () and steps["w1"].packs != ()
    x = rng.standard_normal((1, 8, 13, 13), dtype=np.float32)
    assert_close(session.run(None, {"x": x}), ort_run(model, {"x": x}))


@pytest.mark.parametrize("algorithm, cb, blocked", [("depthwise_w", None, False), ("depthwise_c", None, True),
                                                   ("depthwise_w", 1, True)])
def test_a_writer_vectorized_along_rows_leaves_its_output_nchw(algorithm: str, cb: int | None, blocked: bool,
                                                               rng: np.random.Generator) -> None:
    """mobilenet_v2's depthwise -> 1x1: a depthwise_w writer (its vector runs
    along the output row) would scatter a blocked output over channel lanes,
    so the tensor stays NCHW and the 1x1 packs it; a depthwise_c writer (its
    vector runs along channels) writes the 1x1's layout. A 1x1 gemm with
    ``cb=1`` reads NCHW1c (NCHW, with rows below for its last pixel tile) in
    place, which a row writer stores with contiguous vectors: no packing
    stage either. All match onnxruntime."""
    inits = {"wd": weights(rng, 16, 1, 3, 3), "wp": weights(rng, 24, 16, 1, 1)}
    nodes = [helper.make_node("Conv", ["x", "wd"], ["d"], pads=[1, 1, 1, 1], group=16),
             helper.make_node("Relu", ["d"], ["r"]), helper.make_node("Conv", ["r", "wp"], ["y"])]
    model = make_model(nodes, {"x": (1, 16, 13, 11)}, {"y": (1, 24, 13, 11)}, inits)
    graph = optimize(import_model(model))

    def schedule_for(wl):  # type: ignore[no-untyped-def]
        spaces = search_space(wl, host_target())
        name = algorithm if algorithm in spaces else "gemm"
        config = {"algorithm": name, **spaces[name].default}
        if name == "gemm" and cb is not None:
            config["cb"] = cb
        return schedule_from_config(wl, config)

    plan = build_plan(graph, schedule_for)
    dw = next(s.node for s in plan.steps if s.node.op == "FusedConv" and s.node.attrs["workload"].groups > 1)
    assert (dw.outputs[0] in plan.layouts) == blocked
    pointwise = next(s for s in plan.steps if s.node.op == "FusedConv" and s.node.attrs["workload"].groups == 1)
    assert (pointwise.packs == ()) == blocked
    if cb == 1:
        assert plan.layouts[dw.outputs[0]].block == 1
    x = rng.standard_normal((1, 16, 13, 11), dtype=np.float32)
    plan.inputs["x"][...] = x
    run_plan(plan)
    assert_close([plan.values["y"]], ort_run(model, {"x": x}))


@pytest.mark.parametrize("reader, kernel, blocked", [("gemm", 1, True), ("direct", 3, False)])
def test_a_writer_vectorized_along_flat_pixels_takes_only_unbordered_nchw1c(reader: str, kernel: int, blocked: bool,
                                                                            rng: np.random.Generator) -> None:
    """pointwise_w's vector runs along a 1x1's flattened pixels: NCHW1c with
    rows below (a ``cb=1`` gemm's layout) keeps them contiguous, so it is
    written in place of the gemm's packing; a 3x3 reader's padded NCHW1c
    would break every row, so that tensor stays NCHW. Both match onnxruntime."""
    inits = {"w1": weights(rng, 8, 16, 1, 1), "w2": weights(rng, 12, 8, kernel, kernel)}
    pads = [kernel // 2] * 4
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"], pads=pads)]
    model = make_model(nodes, {"x": (1, 16, 13, 11)}, {"y": (1, 12, 13, 11)}, inits)
    graph = optimize(import_model(model))

    def schedule_for(wl):  # type: ignore[no-untyped-def]
        name = "pointwise_w" if wl.C == 16 else reader
        config = {"algorithm": name, **search_space(wl, host_target())[name].default}
        if name == reader:
            config["cb"] = 1
        return schedule_from_config(wl, config)

    plan = build_plan(graph, schedule_for)
    first, second = (s for s in plan.steps if s.node.op == "FusedConv")
    assert (first.node.outputs[0] in plan.layouts) == blocked and (second.packs == ()) == blocked
    x = rng.standard_normal((1, 16, 13, 11), dtype=np.float32)
    plan.inputs["x"][...] = x
    run_plan(plan)
    assert_close([plan.values["y"]], ort_run(model, {"x": x}))


def test_a_reader_along_rows_keeps_a_shared_tensor_nchw(rng: np.random.Generator) -> None:
    """A fire module whose 1x1 expand is pointwise_w (it reads NCHW in place
    along the flattened pixels): the 3x3 expand's padded NCHW16c would make
    it gather every vector lane by lane, so the squeeze output stays NCHW
    and the 3x3 packs it. The outputs match onnxruntime."""
    model = _fire_module(rng)
    graph = optimize(import_model(model))

    def schedule_for(wl):  # type: ignore[no-untyped-def]
        name = "pointwise_w" if (wl.C, wl.R) == (16, 1) else "direct" if wl.R == 3 else "gemm"
        return schedule_from_config(wl, {"algorithm": name, **search_space(wl, host_target())[name].default})

    plan = build_plan(graph, schedule_for)
    steps = {s.node.inputs[1]: s for s in plan.steps if s.node.op == "FusedConv"}
    assert steps["w1"].node.inputs[0] not in plan.layouts and steps["w3"].packs != ()
    x = rng.standard_normal((1, 8, 13, 13), dtype=np.float32)
    plan.inputs["x"][...] = x
    run_plan(plan)
    assert_close([plan.values["y"]], ort_run(model, {"x": x}))


def test_outputs_are_copies_and_selectable(session: Session, rng: np.random.Generator) -> None:
    x = _x(rng)
    y, prob = session.run(None, {"x": x})
    (prob_only,) = session.run(["prob"], {"x": _x(rng)})
    assert not np.array_equal(prob, prob_only)  # the first result was not overwritten by the second run
    assert_close([prob], session.run(["prob"], {"x": x}))
    assert np.allclose(prob.sum(axis=1), 1)


def test_inputs_and_outputs_described(session: Session) -> None:
    assert [(i.name, i.shape, i.type) for i in session.get_inputs()] == [("x", (2, 3, 16, 16), "tensor(float)")]
    assert [(o.name, o.shape, o.type) for o in session.get_outputs()] == [("y", (2, 5), "tensor(float)"),
                                                                          ("prob", (2, 5), "tensor(float)")]


@pytest.mark.parametrize("feeds, message", [
    ({"x": np.zeros((2, 3, 16, 16), np.float32), "z": np.zeros(1)}, "input 'z': the model has no such input"),
    ({}, "input 'x': missing"),
    ({"x": np.zeros((2, 3, 16, 16))}, "input 'x': expected float32, got float64"),
    ({"x": np.zeros((1, 3, 16, 16), np.float32)}, r"input 'x': expected shape \(2, 3, 16, 16\), got \(1, 3, 16, 16\)"),
])
def test_bad_feeds_are_clear_errors_and_lose_nothing(model, session: Session, feeds: dict, message: str,
                                                     rng: np.random.Generator) -> None:
    with pytest.raises(InputError, match=message):
        session.run(None, feeds)
    x = _x(rng)
    assert_close(session.run(None, {"x": x}), ort_run(model, {"x": x}))


def test_unknown_output_name(session: Session, rng: np.random.Generator) -> None:
    with pytest.raises(InputError, match="output 'nope': the model has no such output"):
        session.run(["nope"], {"x": _x(rng)})


def test_nan_and_inf_propagate(session: Session, rng: np.random.Generator) -> None:
    x = _x(rng)
    x[0, 0, 3, 3], x[1, 1, 5, 5] = np.nan, np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning either
        y, prob = session.run(None, {"x": x})
    assert not np.isfinite(y).all() and not np.isfinite(prob).all()


def test_profile(session: Session, rng: np.random.Generator) -> None:
    profile = session.profile({"x": _x(rng)}, rounds=2)
    assert [name for name, _, _ in profile.per_node] == [s.node.name for s in session.plan.steps]
    assert all(t > 0 for _, _, t in profile.per_node) and profile.total > 0 and profile.overhead >= 0
    assert "between operators" in str(profile) and profile.overhead < profile.total
    with pytest.raises(InputError, match="rounds"):
        session.profile({"x": _x(rng)}, rounds=0)


def test_dynamic_batch_needs_a_batch(model, session: Session) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(GraphError, match="batch axis is dynamic"):
        Session(model)
    with pytest.raises(InputError, match="batch: an imported ModelGraph has its batch already"):
        Session(session.graph, batch=2)


def test_an_empty_log_warns_once_per_conv(model, tmp_path: Path, rng: np.random.Generator) -> None:
    log = tmp_path / "empty.jsonl"
    log.write_text("")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = Session(model, logs=log, batch=2)  # the session fixture's workloads: kernels from the disk cache
    assert sum(issubclass(w.category, FallbackWarning) for w in caught) == 4
    x = _x(rng)
    assert_close(s.run(None, {"x": x}), ort_run(model, {"x": x}))


# -- convtune run -----------------------------------------------------------------
def _two_in_two_out(path):  # type: ignore[no-untyped-def]
    """No convs: the CLI's own paths, without compiling."""
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Relu", ["s"], ["r"])]
    model = make_model(nodes, {"a": (2, 3), "b": (2, 3)}, {"s": (2, 3), "r": (2, 3)})
    path.write_bytes(model.SerializeToString())
    return model


def test_cli_run_npz(tmp_path, rng: np.random.Generator, capsys) -> None:  # type: ignore[no-untyped-def]
    model = _two_in_two_out(tmp_path / "m.onnx")
    feeds = {"a": weights(rng, 2, 3), "b": weights(rng, 2, 3)}
    np.savez(tmp_path / "in.npz", **feeds)
    assert main(["run", str(tmp_path / "m.onnx"), "--input", str(tmp_path / "in.npz"),
                 "--output", str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz") as out:
        assert sorted(out.files) == ["r", "s"]
        assert_close([out["s"], out["r"]], ort_run(model, feeds))
    assert "written to" in capsys.readouterr().out


def test_cli_run_npy_with_the_conv_model(model, tmp_path: Path, rng: np.random.Generator) -> None:
    single = _cnn(np.random.default_rng(1234))
    del single.graph.output[1]  # one output: y
    (tmp_path / "cnn.onnx").write_bytes(single.SerializeToString())
    x = _x(rng)
    np.save(tmp_path / "x.npy", x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        code = main(["run", str(tmp_path / "cnn.onnx"), "--input", str(tmp_path / "x.npy"),
                     "--output", str(tmp_path / "y.npy"), "--batch", "2"])
    assert code == 0
    assert_close([np.load(tmp_path / "y.npy")], ort_run(model, {"x": x})[:1])


@pytest.mark.parametrize("change, message", [
    (lambda p: {"--input": str(p / "missing.npz")}, "no such file"),
    (lambda p: {"--input": str(p / "one.npy")}, "the model has 2 inputs"),
    (lambda p: {"--output": str(p / "out.npy")}, "the model has 2 outputs"),
    (lambda p: {"--output": str(p / "out.txt")}, "expected a .npy or .npz"),
    (lambda p: {"--output": str(p / "nodir" / "out.npz")}, "does not exist"),
    (lambda p: {"--input": str(p / "wrong.npz")}, "input 'b': expected shape"),
    (lambda p: {"--log": str(p / "nolog.jsonl")}, "no such file"),
    (lambda p: {"model": str(p / "broken.onnx")}, "broken.onnx"),
])
def test_cli_run_bad_input_exits_2_and_writes_nothing(change: Callable[[Path], dict[str, str]], message: str,
                                                     tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _two_in_two_out(tmp_path / "m.onnx")
    (tmp_path / "broken.onnx").write_bytes((tmp_path / "m.onnx").read_bytes()[:40])
    np.save(tmp_path / "one.npy", np.zeros((2, 3), np.float32))
    np.savez(tmp_path / "in.npz", a=np.zeros((2, 3), np.float32), b=np.zeros((2, 3), np.float32))
    np.savez(tmp_path / "wrong.npz", a=np.zeros((2, 3), np.float32), b=np.zeros((3, 3), np.float32))
    (tmp_path / "out.npz").write_bytes(b"previous")
    args = {"model": str(tmp_path / "m.onnx"), "--input": str(tmp_path / "in.npz"),
            "--output": str(tmp_path / "out.npz"), **change(tmp_path)}
    argv = ["run", args.pop("model")] + [x for kv in args.items() for x in kv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert (tmp_path / "out.npz").read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_cli_run_failure_inside_the_model_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    _two_in_two_out(tmp_path / "m.onnx")
    np.savez(tmp_path / "in.npz", a=np.zeros((2, 3), np.float32), b=np.zeros((2, 3), np.float32))

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("kernel crashed")

    monkeypatch.setattr(Session, "run", broken)
    assert main(["run", str(tmp_path / "m.onnx"), "--input", str(tmp_path / "in.npz"),
                 "--output", str(tmp_path / "out.npz")]) == 1
    assert "kernel crashed" in capsys.readouterr().err
    assert not (tmp_path / "out.npz").exists()
