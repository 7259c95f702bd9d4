"""Transposed convolution: the workload, its float64 reference, both lowerings
to ordinary convs (in float64 and as compiled float32 kernels), ONNX
ConvTranspose through a Session, task extraction, the measured lowering
choice and the bench."""
from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
from conftest import fresh_seed
from hypothesis import assume, given, note, settings
from hypothesis import strategies as st
from onnx import helper
from onnx_models import assert_close, make_model, ort_run, weights
from test_model_tuning import FakeMeasurer

from convtune.ir import conv2d_reference, relative_error
from convtune.ir.conv_transpose_lowering import LOWERINGS, lower, sub_convs
from convtune.ir.model_passes import optimize
from convtune.ir.onnx_frontend import import_model
from convtune.ir.reference_transpose import conv2d_transpose_reference
from convtune.ir.workload import WorkloadError
from convtune.ir.workload_transpose import ConvTranspose2D, conv2d_transpose
from convtune.tuner.dispatch import ApplyHistoryBest, FallbackWarning, tuning_workload
from convtune.tuner.lowering_log import append_choice, lowerings_path
from convtune.tuner.model_tuning import tune_model
from convtune.tuner.peers import onnxruntime_conv_transpose
from convtune.tuner.session import Session
from convtune.tuner.tasks import extract_tasks
from convtune.tuner.transpose_bench import run_transpose_bench

TOLERANCE = 1e-4


def direct_scatter(wl: ConvTranspose2D, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """The definition, pixel by pixel: input pixel (i, j) times tap (r, s)
    lands at (i sh + r dh, j sw + s dw) of the full plane, cropped by the
    top/left padding (no activation: the workloads checked here have none)."""
    (sh, sw), (dh, dw), (top, left) = wl.stride, wl.dilation, wl.padding[:2]
    rows, cols = max(wl.full[0], top + wl.P), max(wl.full[1], left + wl.Q)
    y = np.zeros((wl.N, wl.K, rows, cols))
    xs, ws = x.astype(np.float64), w.astype(np.float64)
    for g in range(wl.groups):
        cin, cout = slice(g * wl.Cg, (g + 1) * wl.Cg), slice(g * wl.Kg, (g + 1) * wl.Kg)
        for i in range(wl.H):
            for j in range(wl.W):
                for r in range(wl.R):
                    for s in range(wl.S):
                        y[:, cout, i * sh + r * dh, j * sw + s * dw] += xs[:, cin, i, j] @ ws[cin, :, r, s]
    y = y[:, :, top:top + wl.P, left:left + wl.Q]
    return y if b is None else y + b.astype(np.float64)[None, :, None, None]


@st.composite
def transposed_workloads(draw: st.DrawFn, max_stride: int = 3) -> ConvTranspose2D:
    """Stride 1-3, dilation 1-2, any padding and output padding the
    workload allows, groups, odd channel counts, batch up to 2."""
    stride = (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    R, S = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    pads = tuple(draw(st.integers(0, 3)) for _ in range(4))
    extra = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    N, Cg, H, W, Kg = (draw(st.integers(1, top)) for top in (2, 3, 5, 5, 3))
    full = [(size - 1) * s + (k - 1) * d + 1 for size, s, k, d in zip((H, W), stride, (R, S), dilation)]
    assume(pads[0] + pads[2] < full[0] + extra[0] and pads[1] + pads[3] < full[1] + extra[1])
    return conv2d_transpose(N, groups * Cg, H, W, groups * Kg, R, S, stride=stride, padding=pads,
                            output_padding=extra, dilation=dilation, groups=groups, bias=draw(st.booleans()))


def _inputs(wl: ConvTranspose2D, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    rng = np.random.default_rng(seed)
    x, w = (rng.standard_normal(s).astype(np.float32) for s in (wl.data_shape, wl.weight_shape))
    return x, w, rng.standard_normal(wl.K).astype(np.float32) if wl.bias else None


def _place(x: np.ndarray, sub) -> np.ndarray:  # type: ignore[no-untyped-def]
    """A sub-conv's input, pixel by pixel (independent of ``PlaceInput``)."""
    c, (oh, ow), (sh, sw) = sub.conv, sub.input_offset, sub.input_step
    out = np.zeros(c.data_shape)
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            if 0 <= oh + i * sh < c.H and 0 <= ow + j * sw < c.W:
                out[:, :, oh + i * sh, ow + j * sw] = x[:, :, i, j]
    return out


@settings(max_examples=60, deadline=None)
@given(wl=transposed_workloads())
def test_reference_and_lowerings_in_float64_equal_the_direct_scatter(wl: ConvTranspose2D) -> None:
    seed = fresh_seed()
    note(f"{wl} inputs seed={seed}")
    x, w, b = _inputs(wl, seed)
    want = direct_scatter(wl, x, w, b)
    assert relative_error(conv2d_transpose_reference(wl, x, w, b), want) < 1e-12
    for name in LOWERINGS:
        low = lower(wl, name)
        y = np.full(wl.out_shape, np.nan)
        for sub in low.convs:
            ph, pw = sub.phase
            y[:, :, ph::low.step[0], pw::low.step[1]] = conv2d_reference(sub.conv, _place(x, sub), sub.weight(w), b)
        for ph, pw in low.fills:
            y[:, :, ph::low.step[0], pw::low.step[1]] = low.fill_value(b)[None, :, None, None]
        assert relative_error(y, want) < 1e-6, name


@settings(max_examples=4, deadline=None)
@given(wl=transposed_workloads(max_stride=2))
def test_both_lowerings_as_compiled_kernels_equal_the_direct_scatter(wl: ConvTranspose2D) -> None:
    """float32 kernels (template defaults), into a NaN-poisoned output."""
    seed = fresh_seed()
    note(f"{wl} inputs seed={seed}")
    x, w, b = _inputs(wl, seed)
    want = direct_scatter(wl, x, w, b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        dispatcher = ApplyHistoryBest([])
        for name in LOWERINGS:
            conv = dispatcher.conv_transpose(wl, w, b, lowering=name)
            conv.output[...] = np.nan
            assert relative_error(conv(x), want) < TOLERANCE, name


def test_reference_matches_onnxruntime() -> None:
    rng = np.random.default_rng(fresh_seed())
    for wl in (conv2d_transpose(2, 6, 5, 4, 4, 3, stride=2, padding=(1, 0, 2, 1), output_padding=1, dilation=(1, 2),
                                groups=2),
               conv2d_transpose(1, 3, 4, 4, 5, 4, stride=(3, 2), padding=1, output_padding=(2, 0))):
        x, w = weights(rng, *wl.data_shape), weights(rng, *wl.weight_shape)
        got = onnxruntime_conv_transpose(wl, x, w, 1)()
        assert relative_error(got, conv2d_transpose_reference(wl, x, w)) < TOLERANCE


def test_fused_epilogue() -> None:
    wl = conv2d_transpose(1, 4, 3, 3, 6, 3, stride=2, padding=1, bias=True, activation="leaky_relu", alpha=0.2)
    x, w, b = _inputs(wl, fresh_seed())
    y = direct_scatter(wl, x, w, b)
    assert relative_error(conv2d_transpose_reference(wl, x, w, b), np.where(y > 0, y, 0.2 * y)) < 1e-12


def test_workload_key_shape_and_flops() -> None:
    wl = conv2d_transpose(1, 64, 16, 16, 32, 4, stride=2, padding=1, bias=True, activation="relu")
    assert wl.out_shape == (1, 32, 32, 32) and wl.weight_shape == (64, 32, 4, 4)
    assert wl.flops == 2 * 64 * 32 * 16 * 16 * 16
    assert ConvTranspose2D.from_key(wl.key) == wl and '"transpose":true' in wl.key
    big = conv2d_transpose(1, 2, 3, 3, 2, 3, stride=2, padding=(1, 1, 0, 0), output_shape=(10, 8))
    assert big.out_shape == (1, 2, 10, 8) and big.output_padding == (4, 2)  # ONNX zero-extends
    assert ConvTranspose2D.from_key(big.key) == big
    assert conv2d_transpose(1, 2, 3, 3, 2, 3, stride=2, padding=2, output_shape=(5, 4)).padding == (2, 2, 0, 1)
    assert wl.short() == "T N1 C64 16x16 K32 4x4 s2 p1"
    torch_style = conv2d_transpose(1, 4, 5, 5, 4, 3, stride=2, padding=1, output_padding=1)
    assert torch_style.padding == (1, 1, 0, 0) and torch_style.output_padding == (0, 0)
    assert torch_style.out_shape == (1, 4, 10, 10)


@pytest.mark.parametrize("kwargs, message", [
    (dict(output_padding=2), "output_padding: 2 on axis 0 must be smaller than the stride (2)"),
    (dict(output_padding=-1), "output_padding: must be >= 0"),
    (dict(groups=4), "groups: 4 does not divide the input channels C=6"),
    (dict(groups=3, K=4), "groups: 3 does not divide the output channels K=4"),
    (dict(padding=(9, 0, 9, 0)), "padding (top + bottom): crops the whole"),
    (dict(padding=-1), "padding (top): must be >= 0"),
    (dict(stride=0), "stride: must be >= 1"),
    (dict(output_padding=1, output_shape=(9, 9)), "output_padding: give output_padding or output_shape, not both"),
    (dict(output_shape=(9,)), "output_shape: expected (P, Q)"),
    (dict(activation="gelu"), "activation: 'gelu' is not one of"),
    (dict(bias=1), "bias: expected a bool"),
])
def test_bad_workloads_name_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(WorkloadError, match="^" + re.escape(message)):
        conv2d_transpose(**{**dict(N=1, C=6, H=4, W=4, K=6, R=3, stride=2), **kwargs})


def test_subpixel_skips_the_inserted_zeros_and_dilation_leaves_phases_empty() -> None:
    dcgan = conv2d_transpose(1, 64, 16, 16, 32, 4, stride=2, padding=1)
    sub = lower(dcgan, "subpixel")
    assert len(sub.convs) == 4 and not sub.fills and all((c.conv.R, c.conv.S) == (2, 2) for c in sub.convs)
    zero = lower(dcgan, "zero_insertion")
    assert zero.direct and zero.convs[0].conv.data_shape == (1, 64, 35, 35)
    assert sum(c.conv.flops for c in sub.convs) * 4 == zero.convs[0].conv.flops  # a quarter of the MACs
    gapped = lower(conv2d_transpose(1, 2, 4, 4, 2, 2, stride=2, dilation=2), "subpixel")
    assert [c.phase for c in gapped.convs] == [(0, 0)] and len(gapped.fills) == 3


def _model(opset: int = 17):  # type: ignore[no-untyped-def]
    """ConvTranspose (stride 2, pads, output padding, group 2) -> Relu ->
    ConvTranspose (dilation 2, asymmetric pads, output padding)."""
    rng = np.random.default_rng(fresh_seed())
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w1", "b1"], ["t1"], strides=[2, 2], pads=[1, 1, 1, 1],
                         output_padding=[1, 1], group=2),
        helper.make_node("Relu", ["t1"], ["r1"]),
        helper.make_node("ConvTranspose", ["r1", "w2"], ["y"], strides=[2, 1], pads=[1, 0, 2, 1],
                         output_padding=[1, 0], dilations=[2, 1], kernel_shape=[3, 3]),
    ]
    inits = {"w1": weights(rng, 6, 2, 3, 3), "b1": weights(rng, 4), "w2": weights(rng, 4, 3, 3, 3)}
    return make_model(nodes, {"x": [2, 6, 5, 6]}, {"y": None}, inits, opset), weights(rng, 2, 6, 5, 6)


@pytest.mark.parametrize("lowering", LOWERINGS)
def test_onnx_conv_transpose_runs_compiled_and_matches_onnxruntime(tmp_path, lowering: str) -> None:
    """Through the lowering file a tuning run writes, as a user would run it."""
    model, x = _model()
    graph = optimize(import_model(model))
    fused = [n.attrs["workload"] for n in graph.nodes() if n.op == "FusedConvTranspose"]
    assert len(fused) == 2 and fused[0].activation is not None and fused[0].bias  # the Relu and bias fused
    log = tmp_path / "m.jsonl"
    log.touch()
    for wl in fused:
        append_choice(log, wl, ApplyHistoryBest([]).target.to_dict(), {lowering: 1.0, "other": 2.0})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        session = Session(model, logs=log)
    ops = [s.node.op for s in session.plan.steps]
    assert "ConvTranspose" not in ops and ops.count("FusedConv") >= 2
    assert ("PlaceInput" in ops) == (lowering == "zero_insertion") and ("Interleave" in ops) == (lowering == "subpixel")
    assert_close(session.run(None, {"x": x}), ort_run(model, {"x": x}), lowering)


def test_tasks_are_the_sub_convs_of_both_lowerings() -> None:
    model, _ = _model()
    tasks = extract_tasks(optimize(import_model(model)))
    fused = [n.attrs["workload"] for n in optimize(import_model(model)).nodes() if n.op == "FusedConvTranspose"]
    want = {tuning_workload(c).key for wl in fused for c in sub_convs(wl)}
    assert {t.workload.key for t in tasks} == want
    assert len(want) == len(sub_convs(fused[0])) + len(sub_convs(fused[1]))
    assert abs(sum(t.share for t in tasks) - 1) < 1e-9
    assert all(len(t.transposed) == 1 and t.transposed[0].activation is None for t in tasks)


def test_tuning_a_transposed_layer_records_its_faster_lowering(tmp_path) -> None:
    """The sub-convs are tuned as tasks (here by a fake measurer); then the
    whole layer is timed with each lowering and the faster one is dispatched."""
    rng = np.random.default_rng(fresh_seed())
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1])
    model = make_model([node], {"x": [1, 4, 4, 4]}, {"y": None}, {"w": weights(rng, 4, 4, 4, 4)})
    graph = optimize(import_model(model))
    (wl,) = [n.attrs["workload"] for n in graph.nodes() if n.op == "FusedConvTranspose"]
    log = tmp_path / "t.jsonl"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        result = tune_model(extract_tasks(graph), log=log, trials_per_task=1, strategy="random", seed=0,
                            measurer=FakeMeasurer())
    (line,) = [json.loads(s) for s in lowerings_path(log).read_text().splitlines()]
    assert set(line["seconds"]) == set(LOWERINGS) and line["lowering"] == result.lowerings[wl.key]
    assert ApplyHistoryBest(log).lowering_for(wl) == line["lowering"]


def test_transpose_bench_times_both_lowerings_and_the_peers(tmp_path) -> None:
    suite = tmp_path / "t.json"
    suite.write_text(json.dumps({"tiny": [{"name": "up", "N": 1, "C": 4, "H": 4, "W": 4, "K": 4, "R": 3,
                                           "stride": 2, "pad": 1, "output_padding": 1}]}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        report = run_transpose_bench(str(suite), rounds=1, min_block_seconds=0.001, warm_only=True)
    (layer,) = report.layers
    assert {"convtune zero_insertion", "convtune subpixel", "onnxruntime"} <= set(layer.seconds)
    assert layer.lowering == "subpixel (default)" and json.loads(report.to_json())["suite"] == "tiny"
