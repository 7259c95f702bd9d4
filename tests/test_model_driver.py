"""The plan's compiled driver and the compiled operators it calls: the same
outputs as the step-by-step Python loop and as onnxruntime, on a small CNN
whose Python-only operators split the driver into segments and on a zoo model;
every operator kernel against the float64 semantics, into a NaN-poisoned output."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import helper
from onnx_models import assert_close, make_model, ort_run, weights

from convtune.codegen import op_kernels
from convtune.codegen.kernel import BoundConv
from convtune.codegen.model_plan import run_plan
from convtune.codegen.op_calls import OpCall, op_call
from convtune.ir.evaluate import evaluate
from convtune.ir.graph import Node
from convtune.ir.reference import relative_error
from convtune.schedules.layout import from_blocked, to_blocked
from convtune.schedules.state import BlockedLayout
from convtune.tuner.session import Session


def _session(model) -> Session:  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Session(model)


def _outputs_agree(session: Session, model, feeds: dict[str, np.ndarray]) -> None:  # type: ignore[no-untyped-def]
    """Driver == Python loop == onnxruntime. The same kernels run on the same
    buffers, but LLVM may inline an operator kernel into the driver and sum
    in another order (its reductions may reassociate): equal to rounding."""
    compiled = session.run(None, feeds)
    for t in session.graph.outputs:  # the loop must compute them again
        session.plan.values[t].fill(np.nan)
    for name, buffer in session.plan.inputs.items():  # an input's buffer is reused once it is read
        np.copyto(buffer, feeds[name])
    run_plan(session.plan, compiled=False)
    stepwise = [np.array(session.plan.values[t]) for t in session.graph.outputs]
    for c, s in zip(compiled, stepwise):
        assert relative_error(c, s.astype(np.float64)) < 1e-6
    assert_close(compiled, ort_run(model, feeds))


def _cnn(rng: np.random.Generator):  # type: ignore[no-untyped-def]
    """Conv, max pool, a Softmax over channels (no kernel: a Python step
    between two compiled segments), conv, pools, Gemm, Softmax."""
    k = 8
    inits = {"w0": weights(rng, k, 3, 3, 3), "b0": weights(rng, k), "w1": weights(rng, k, k, 3, 3) / 8,
             "wf": weights(rng, 5, k), "bf": weights(rng, 5)}
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("MaxPool", ["r0"], ["p0"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
        helper.make_node("Softmax", ["p0"], ["s0"], axis=1),
        helper.make_node("Conv", ["s0", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c1"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1),
        helper.make_node("Softmax", ["y"], ["prob"]),
    ]
    return make_model(nodes, {"x": (2, 3, 17, 17)}, {"prob": (2, 5)}, inits)


def test_small_cnn_in_segments(rng: np.random.Generator) -> None:
    model = _cnn(rng)
    session = _session(model)
    runs = [type(s.run) for s in session.plan.steps]
    assert runs.count(BoundConv) == 2 and runs.count(OpCall) == 3, runs
    driver = session.plan.driver
    assert driver is not None and driver.segments == 2
    assert "# max_pool" in driver.source and "# gemm" in driver.source and driver.source.count("# run_stages") == 2
    for _ in range(2):  # the second run reuses every buffer
        _outputs_agree(session, model, {"x": rng.standard_normal((2, 3, 17, 17), dtype=np.float32)})


def test_zoo_model(rng: np.random.Generator) -> None:
    """squeezenet1_1: ceil-mode max pools, Concats between compiled segments."""
    from convtune.tuner.zoo import build_model

    model = build_model("squeezenet1_1")
    session = _session(model)
    assert session.plan.driver is not None and session.plan.driver.segments > 1
    x = rng.standard_normal(session.get_inputs()[0].shape, dtype=np.float32)
    _outputs_agree(session, model, {session.get_inputs()[0].name: x})


def _check(node: Node, ins: list[np.ndarray], out_shape: tuple[int, ...], constants: set[str]) -> None:
    out = np.full(out_shape, np.nan, np.float32)
    call = op_call(node, ins, [out], {t: a for t, a in zip(node.inputs, ins) if t in constants})
    assert isinstance(call, OpCall)
    call()
    want = evaluate(node, [a.astype(np.float64) for a in ins])[0]
    assert out.shape == want.shape and relative_error(out, want) < 1e-5


@pytest.mark.parametrize("attrs", [
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], dilations=[1, 1], ceil_mode=False),
    dict(kernel_shape=[3, 2], strides=[2, 1], pads=[0, 1, 0, 0], dilations=[2, 1], ceil_mode=True),
])
def test_max_pool(rng: np.random.Generator, attrs: dict) -> None:
    x = rng.standard_normal((2, 3, 11, 10), dtype=np.float32)
    node = Node("p", "MaxPool", ("x",), ("y",), attrs)
    reference = evaluate(node, [x])[0]
    _check(node, [x], reference.shape, set())


@settings(max_examples=25, deadline=None)
@given(kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)), strides=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       dilations=st.tuples(st.integers(1, 2), st.integers(1, 2)), pads=st.lists(st.integers(0, 1), min_size=4, max_size=4),
       ceil_mode=st.booleans(), size=st.tuples(st.integers(5, 13), st.integers(5, 13)), seed=st.integers(0, 2**32 - 1))
def test_max_pool_any_window(kernel: tuple[int, int], strides: tuple[int, int], dilations: tuple[int, int],
                             pads: list[int], ceil_mode: bool, size: tuple[int, int], seed: int) -> None:
    """The separable kernel against the float64 semantics for any window,
    padding (a pad never wider than the window), stride and dilation, with
    NaNs that must win their windows."""
    pads = [min(p, k - 1) for p, k in zip(pads, kernel * 2)]
    assume(all(n + pads[i] + pads[i + 2] >= (k - 1) * d + 1 for i, (n, k, d) in enumerate(zip(size, kernel, dilations))))
    x = np.random.default_rng(seed).standard_normal((1, 3, *size), dtype=np.float32)
    x.reshape(-1)[::29] = np.nan
    node = Node("p", "MaxPool", ("x",), ("y",), dict(kernel_shape=list(kernel), strides=list(strides), pads=pads,
                                                    dilations=list(dilations), ceil_mode=ceil_mode))
    want = evaluate(node, [x.astype(np.float64)])[0]
    out = np.full(want.shape, 7.0, np.float32)
    call = op_call(node, [x], [out], {})
    assert isinstance(call, OpCall)
    call()
    assert np.array_equal(np.isnan(out), np.isnan(want)) and np.array_equal(out[~np.isnan(out)], want[~np.isnan(want)])


@settings(max_examples=25, deadline=None)
@given(channels=st.integers(1, 20), block=st.sampled_from([1, 4, 8, 16]), kernel=st.integers(1, 3),
       stride=st.integers(1, 3), pad=st.integers(0, 2), border=st.tuples(st.integers(0, 2), st.integers(0, 2)),
       size=st.tuples(st.integers(4, 11), st.integers(4, 11)), seed=st.integers(0, 2**32 - 1))
def test_max_pool_of_blocked_tensors(channels: int, block: int, kernel: int, stride: int, pad: int,
                                     border: tuple[int, int], size: tuple[int, int], seed: int) -> None:
    """The plan's pool between convs: NCHW[block]c in (unpadded), NCHW[block]c
    out inside a zero border, against the float64 semantics of the NCHW pool;
    the border and the padding lanes of the last block stay zero."""
    pad = min(pad, kernel - 1)
    x = np.random.default_rng(seed).standard_normal((2, channels, *size), dtype=np.float32)
    x.reshape(-1)[::31] = np.nan
    node = Node("p", "MaxPool", ("x",), ("y",), dict(kernel_shape=[kernel] * 2, strides=[stride] * 2, pads=[pad] * 4,
                                                    dilations=[1, 1], ceil_mode=False))
    want = evaluate(node, [x.astype(np.float64)])[0]
    source = BlockedLayout(x.shape, block)
    pooled = BlockedLayout(want.shape, block, *border, want.shape[2] + 2 * border[0], want.shape[3] + border[1])
    out = np.zeros(pooled.shape, np.float32)
    call = op_call(node, [to_blocked(source, x)], [out], {}, {"x": source, "y": pooled})
    assert isinstance(call, OpCall)
    call()
    got = from_blocked(pooled, out)
    assert np.array_equal(np.isnan(got), np.isnan(want)) and np.array_equal(got[~np.isnan(got)], want[~np.isnan(want)])
    assert np.array_equal(out, to_blocked(pooled, got), equal_nan=True)  # zero border, zero channel tail


def test_only_a_max_pool_runs_on_blocked_tensors(rng: np.random.Generator) -> None:
    x = rng.standard_normal((1, 4, 5, 5), dtype=np.float32)
    layout = BlockedLayout(x.shape, 4)
    with pytest.raises(ValueError, match="only a MaxPool runs on blocked tensors"):
        op_call(Node("g", "GlobalAveragePool", ("x",), ("y",), {}), [to_blocked(layout, x)],
                [np.zeros((1, 4, 1, 1), np.float32)], {}, {"x": layout})


def test_max_pool_propagates_nan(rng: np.random.Generator) -> None:
    x = rng.standard_normal((1, 1, 4, 4), dtype=np.float32)
    x[0, 0, 1, 1] = np.nan
    out = np.zeros((1, 1, 2, 2), np.float32)
    attrs = dict(kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0], dilations=[1, 1], ceil_mode=False)
    op_call(Node("p", "MaxPool", ("x",), ("y",), attrs), [x], [out], {})()
    assert np.isnan(out[0, 0, 0, 0]) and np.isfinite(out).sum() == 3


def test_global_average_pool(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 5, 7, 6), dtype=np.float32)
    _check(Node("g", "GlobalAveragePool", ("x",), ("y",)), [x], (2, 5, 1, 1), set())


@pytest.mark.parametrize("op", ["Mul", "Add"])
@pytest.mark.parametrize("s_shape, s_first", [((2, 5, 1, 1), False), ((1, 5, 1, 1), False), ((5, 1, 1), True),
                                              ((2, 5, 1, 1), True)])
def test_plane_broadcast(rng: np.random.Generator, op: str, s_shape: tuple, s_first: bool) -> None:
    """A squeeze-excitation gate (N, C, 1, 1) or a per-channel constant, as
    either operand: one compiled call, not a numpy step between segments."""
    x, s = rng.standard_normal((2, 5, 7, 3), dtype=np.float32), rng.standard_normal(s_shape, dtype=np.float32)
    ins, names = ([s, x], ("s", "x")) if s_first else ([x, s], ("x", "s"))
    _check(Node("m", op, names, ("y",)), ins, x.shape, set())


@pytest.mark.parametrize("op, s_shape", [("Mul", (2, 1, 1, 1)), ("Mul", (1, 5, 7, 1)), ("Sub", (1, 5, 1, 1))])
def test_other_broadcasts_stay_numpy_steps(rng: np.random.Generator, op: str, s_shape: tuple) -> None:
    x, s = rng.standard_normal((2, 5, 7, 3), dtype=np.float32), rng.standard_normal(s_shape, dtype=np.float32)
    assert op_call(Node("m", op, ("x", "s"), ("y",)), [x, s], [np.empty_like(x)], {}) is None


@pytest.mark.parametrize("trans_b, c_shape, alpha, beta", [(True, (7,), 1.0, 1.0), (False, (3, 7), 0.5, 2.0),
                                                           (True, (1, 7), 1.0, 0.0), (False, None, 1.0, 1.0)])
def test_gemm(rng: np.random.Generator, trans_b: bool, c_shape: tuple | None, alpha: float, beta: float) -> None:
    a = rng.standard_normal((3, 33), dtype=np.float32)
    b = rng.standard_normal((7, 33) if trans_b else (33, 7), dtype=np.float32)
    ins, names = [a, b], ["a", "b"]
    if c_shape is not None:
        ins.append(rng.standard_normal(c_shape, dtype=np.float32))
        names.append("c")
    attrs = dict(alpha=alpha, beta=beta, transA=False, transB=trans_b)
    _check(Node("m", "Gemm", tuple(names), ("y",), attrs), ins, (3, 7), {"b", "c"})


@pytest.mark.parametrize("m, n", [(1, 1), (1, 2), (2, 5), (1, 8), (3, 1001)])
def test_gemm_kernel_blocks_of_four_outputs_cover_every_n(rng: np.random.Generator, m: int, n: int) -> None:
    """The head's kernel works on 4 outputs at a time and clamps the last
    block's rows to N - 1: every N, multiple of 4 or not, is exact, and no
    output is left unwritten (the output starts as NaN)."""
    k = 37
    a, bt, c = (rng.standard_normal(shape, dtype=np.float32) for shape in ((m, k), (n, k), (m, n)))
    out = np.full(m * n, np.nan, np.float32)
    op_kernels.gemm(a.reshape(-1), bt.reshape(-1), c.reshape(-1), out, m, n, k)
    assert relative_error(out.reshape(m, n), a.astype(np.float64) @ bt.T.astype(np.float64) + c) < 1e-5


def test_matmul_and_refusals(rng: np.random.Generator) -> None:
    a, b = rng.standard_normal((2, 9), dtype=np.float32), rng.standard_normal((9, 4), dtype=np.float32)
    _check(Node("m", "MatMul", ("a", "b"), ("y",)), [a, b], (2, 4), {"b"})
    out = np.empty((2, 4), np.float32)
    assert op_call(Node("m", "MatMul", ("a", "b"), ("y",)), [a, b], [out], {}) is None  # b varies per run
    gemm_t = Node("m", "Gemm", ("a", "b"), ("y",), dict(alpha=1.0, beta=1.0, transA=True, transB=False))
    assert op_call(gemm_t, [a.T.copy(), b], [out], {"b": b}) is None


def test_matmul_of_an_n_d_input_by_constant_weights(rng: np.random.Generator) -> None:
    """A Linear on channel-last activations (ConvNeXt's MLP: N, H, W, C @ C, 4C)."""
    a, b = rng.standard_normal((2, 5, 7, 9), dtype=np.float32), rng.standard_normal((9, 4), dtype=np.float32)
    _check(Node("m", "MatMul", ("a", "b"), ("y",)), [a, b], (2, 5, 7, 4), {"b"})


@pytest.mark.parametrize("axis, bias", [(3, True), (2, False), (1, True)])
def test_layer_norm(rng: np.random.Generator, axis: int, bias: bool) -> None:
    x = 3 + 2 * rng.standard_normal((2, 5, 7, 12), dtype=np.float32)  # an offset the mean must remove
    shape = x.shape[axis:]
    ins = [x, rng.standard_normal(shape, dtype=np.float32)] + ([rng.standard_normal(shape, dtype=np.float32)] if bias
                                                               else [])
    names = ("x", "s", "b")[:len(ins)]
    _check(Node("n", "LayerNormalization", names, ("y",), dict(axis=axis, epsilon=1e-3)), ins, x.shape, {"s", "b"})


def test_layer_norm_with_statistics_outputs_or_a_varying_scale_stays_a_numpy_step(rng: np.random.Generator) -> None:
    x, s = rng.standard_normal((2, 3, 4), dtype=np.float32), rng.standard_normal(4, dtype=np.float32)
    node = Node("n", "LayerNormalization", ("x", "s"), ("y", "mean", "inv"), dict(axis=2, epsilon=1e-5))
    outs = [np.empty_like(x), np.empty((2, 3, 1), np.float32), np.empty((2, 3, 1), np.float32)]
    assert op_call(node, [x, s], outs, {"s": s}) is None
    assert op_call(Node("n", "LayerNormalization", ("x", "s"), ("y",), node.attrs), [x, s], outs[:1], {}) is None


@pytest.mark.parametrize("op, attrs", [("Erf", {}), ("Gelu", {"tanh": False}), ("Gelu", {"tanh": True})])
def test_erf_and_gelu(rng: np.random.Generator, op: str, attrs: dict) -> None:
    x = (4 * rng.standard_normal((3, 5, 11), dtype=np.float32)).astype(np.float32)
    x.reshape(-1)[:5] = [-30.0, 0.0, 30.0, 1e-30, -3.99]
    _check(Node("e", op, ("x",), ("y",), attrs), [x], x.shape, set())


@pytest.mark.parametrize("op, attrs", [("Erf", {}), ("Gelu", {"tanh": False})])
def test_erf_propagates_nan_and_saturates_at_infinity(op: str, attrs: dict) -> None:
    x = np.array([np.nan, np.inf, -np.inf, 1.0], np.float32)
    out = np.zeros_like(x)
    op_call(Node("e", op, ("x",), ("y",), attrs), [x], [out], {})()
    want = evaluate(Node("e", op, ("x",), ("y",), attrs), [x.astype(np.float64)])[0]
    assert np.isnan(out[0]) and np.isnan(want[0])
    assert np.allclose(out[1:], want[1:], rtol=1e-6, equal_nan=True), (out, want)


def test_profile_times_input_packing(rng: np.random.Generator) -> None:
    """Both convs of the small CNN read NCHW tensors (the model input, a
    Softmax output), so each packs its input; the pack stages write only the
    packed input, so running them again leaves the outputs as they were."""
    model = _cnn(rng)
    session = _session(model)
    packing = [s for s in session.plan.steps if s.packs]
    assert [s.node.op for s in packing] == ["FusedConv", "FusedConv"]
    feeds = {"x": rng.standard_normal((2, 3, 17, 17), dtype=np.float32)}
    profile = session.profile(feeds, rounds=2)
    assert set(profile.packs) == {s.node.name for s in packing} and all(t > 0 for t in profile.packs.values())
    assert "input packing" in str(profile) and profile.transforms < profile.ops
    before = np.array(session.plan.values["prob"])
    for step in packing:
        step.run_packs()
    assert np.array_equal(session.plan.values["prob"], before)
