"""The fused activations, ``y = act(conv + bias + residual)``: every template
with every activation against the float64 reference, and the exp / sigmoid /
tanh intrinsics the smooth ones are built from.

Kernel inputs are scaled so the values reaching the activation span about
[-100, 100]: exp's overflow and underflow paths and the saturation of
sigmoid and tanh run in the kernels, not only the region near 0.
"""
from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
from numba import njit

from convtune.codegen import build
from convtune.codegen.intrinsics import vld, vst
from convtune.codegen.math_intrinsics import vexp, vsigmoid, vtanh
from convtune.codegen.verify import TOLERANCE, random_inputs
from convtune.ir import conv2d
from convtune.ir.compute import ComputeDef
from convtune.ir.expr import Call, Var
from convtune.ir.reference import activation_reference, conv2d_reference, relative_error
from convtune.ir.workload import Activation, Conv2D, WorkloadError
from convtune.schedules import Schedule
from convtune.schedules.target import host_target
from convtune.schedules.templates import BUILTIN, TEMPLATES, schedule_from_config
from convtune.tuner.cli import parse_conv

SPAN = 100.0
ACTIVATIONS = {
    "relu": Activation.parse("relu"),
    "clip": Activation.parse("clip", lo=-1.5, hi=2.0),
    "leaky_relu": Activation.parse("leaky_relu", alpha=0.1),
    "sigmoid": Activation.parse("sigmoid"),
    "hardsigmoid": Activation.parse("hardsigmoid", alpha=1 / 6, beta=0.5),  # PyTorch's; ONNX's defaults below
    "hardswish": Activation.parse("hardswish"),
    "silu": Activation.parse("silu"),
    "tanh": Activation.parse("tanh"),
}
# Small layers (about a second to build each) with the whole epilogue.
LAYERS = {
    "direct": conv2d(1, 8, 7, 9, 16, 3, padding=1, bias=True, residual=True),
    "gemm": conv2d(1, 8, 7, 6, 16, 3, stride=(1, 2), padding=1, bias=True, residual=True),
    "depthwise_c": conv2d(1, 16, 7, 9, 16, 3, padding=1, groups=16, bias=True, residual=True),
    "depthwise_w": conv2d(1, 8, 7, 11, 8, 3, padding=1, groups=8, bias=True, residual=True),
    "winograd": conv2d(1, 8, 7, 9, 16, 3, padding=1, bias=True, residual=True),
    "toeplitz": conv2d(1, 3, 7, 19, 5, 3, padding=1, bias=True, residual=True),
    "indirect": conv2d(1, 8, 7, 9, 16, 3, stride=(2, 1), padding=1, bias=True, residual=True),
    "direct_w": conv2d(1, 8, 7, 19, 16, 1, bias=True, residual=True),
    "pointwise_w": conv2d(1, 8, 7, 9, 16, 1, bias=True, residual=True),
}


def spanning_error(kernel, rng: np.random.Generator) -> float:  # type: ignore[no-untyped-def]
    """The kernel's relative error on random inputs scaled so the values
    reaching the activation span [-SPAN, SPAN], with a NaN-poisoned output."""
    wl: Conv2D = kernel.workload
    x = random_inputs(wl, rng)
    pre = conv2d_reference(replace(wl, activation=None), x.data, x.weight, x.bias, x.residual)
    scale = np.float32(SPAN / np.max(np.abs(pre)))
    weight, bias, residual = (None if a is None else a * scale for a in (x.weight, x.bias, x.residual))
    pre = conv2d_reference(replace(wl, activation=None), x.data, weight, bias, residual)
    assert pre.min() < -SPAN / 3 and pre.max() > SPAN / 3, (pre.min(), pre.max())
    out = np.full(wl.out_shape, np.nan, np.float32)
    kernel.prepare(weight, bias)(x.data, residual=residual, out=out)
    return relative_error(out, conv2d_reference(wl, x.data, weight, bias, residual))


def test_every_template_has_a_layer():
    assert set(LAYERS) == set(BUILTIN)


@pytest.mark.parametrize("act", list(ACTIVATIONS))
@pytest.mark.parametrize("template", list(LAYERS))
def test_template_applies_the_activation(template, act, rng):
    wl = replace(LAYERS[template], activation=ACTIVATIONS[act])
    config = {"algorithm": template, **TEMPLATES[template].space(wl, host_target()).default}
    err = spanning_error(build(schedule_from_config(wl, config)), rng)
    assert err < TOLERANCE, f"{template} {act}: relative error {err:.3g}"


@pytest.mark.parametrize("act,call", [("silu", "vsigmoid("), ("tanh", "vtanh(")])
def test_scalar_epilogue(act, call, rng):
    """An unscheduled loop nest applies the activation one element at a time
    (the scalar form of the intrinsics)."""
    wl = replace(LAYERS["direct"], activation=ACTIVATIONS[act])
    kernel = build(Schedule(wl))
    assert call in kernel.source and "vld(" not in kernel.source, kernel.source
    assert spanning_error(kernel, rng) < TOLERANCE


def _native_function(asm: str) -> str:
    """The stage's own code, without numba's Python wrapper after it."""
    return asm[:asm.index("_ZN7cpython")]


@pytest.mark.parametrize("act", ["silu", "tanh"])
def test_epilogue_stays_vectorized(act, monkeypatch, tmp_path):
    """exp rounds ``x * log2(e)`` once a vector: a packed round on the native
    register per output vector, no scalar round and no call (the libm calls
    per lane that ``llvm.exp`` becomes)."""
    monkeypatch.setenv("CONVTUNE_CACHE_DIR", str(tmp_path))  # numba cannot inspect code loaded from its cache
    target = host_target()
    lanes = target.vector_lanes
    wide = {16: "zmm", 8: "ymm", 4: "xmm"}[lanes]
    owb = 5
    wl = conv2d(1, 8, 5, owb, 2 * lanes, 3, padding=1, bias=True, residual=True, activation=act)
    config = {"algorithm": "direct", "cb": 8, "kb": 2 * lanes, "owb": owb, "ohb": 1, "reduction_order": "c_rs",
              "unroll_s": False, "parallel": "nkp"}
    kernel = build(schedule_from_config(wl, config, target))
    native = _native_function("\n".join(kernel.compiled.stages[-1].inspect_asm().values()))
    packed = re.findall(rf"v(?:rndscale|round)ps\s.*%{wide}", native)
    assert len(packed) >= owb * 2, native[:3000]
    assert not re.findall(r"v(?:rndscale|round)ss", native)
    assert "call" not in native, [line for line in native.splitlines() if "call" in line]


def _lanewise(fn, lanes: int):  # type: ignore[no-untyped-def]
    @njit
    def vector(x, out):  # type: ignore[no-untyped-def]
        for i in range(0, x.size, lanes):
            vst(out, i, fn(vld(x, i, lanes)))

    @njit
    def scalar(x, out):  # type: ignore[no-untyped-def]
        for i in range(x.size):
            out[i] = fn(x[i])
    return vector, scalar


def _sigmoid64(x: np.ndarray) -> np.ndarray:
    """The textbook formula: in float64, exp(100) does not overflow."""
    return 1.0 / (1.0 + np.exp(-x))


MATH = {"exp": (vexp, np.exp), "sigmoid": (vsigmoid, _sigmoid64), "tanh": (vtanh, np.tanh)}


def _grid(rng: np.random.Generator, lanes: int) -> np.ndarray:
    """[-100, 100] densely, random points, and small magnitudes of both signs."""
    tiny = np.logspace(-30, 0, 2001)
    x = np.concatenate([np.linspace(-SPAN, SPAN, 400_001), rng.uniform(-SPAN, SPAN, 100_000), tiny, -tiny])
    x = x.astype(np.float32)
    return np.concatenate([x, np.zeros(-x.size % lanes, np.float32)])


@pytest.mark.parametrize("form", ["vector", "scalar"])
@pytest.mark.parametrize("name", list(MATH))
def test_math_intrinsic_is_accurate_over_minus_100_to_100(name, form, rng):
    """Relative error < 1e-6 wherever the float32 result is normal; where it
    is subnormal (exp and sigmoid below about -87), off by at most 2 of
    float32's smallest steps; above float32's range, inf."""
    fn, ref64 = MATH[name]
    lanes = 16
    vector, scalar = _lanewise(fn, lanes)
    x = _grid(rng, lanes)
    out = np.full_like(x, np.nan)
    (vector if form == "vector" else scalar)(x, out)
    with np.errstate(over="ignore"):
        ref = ref64(x.astype(np.float64))
    info = np.finfo(np.float32)
    normal = (np.abs(ref) >= info.tiny) & (np.abs(ref) <= info.max)
    rel = np.abs(out[normal] - ref[normal]) / np.abs(ref[normal])
    worst = int(np.argmax(rel))
    assert rel[worst] < 1e-6, f"{name}({x[normal][worst]!r}) = {out[normal][worst]!r}, float64 {ref[normal][worst]!r}"
    below = np.abs(ref) < info.tiny
    assert np.all(np.abs(out[below] - ref[below]) <= 2 * info.smallest_subnormal)
    assert np.all(out[np.abs(ref) > info.max] == np.inf)


EDGES = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 88.8, -110.0, 1e-30], np.float32)
EXPECTED = {
    "exp": [np.inf, 0.0, np.nan, 1.0, 1.0, np.inf, 0.0, 1.0],
    "sigmoid": [1.0, 0.0, np.nan, 0.5, 0.5, 1.0, 0.0, 0.5],
    "tanh": [1.0, -1.0, np.nan, 0.0, -0.0, 1.0, -1.0, 1e-30],
}


@pytest.mark.parametrize("name", list(MATH))
def test_math_intrinsic_at_infinities_nan_and_zero(name):
    for form in _lanewise(MATH[name][0], len(EDGES)):
        out = np.full_like(EDGES, 7.0)
        form(EDGES, out)
        np.testing.assert_array_equal(out, np.array(EXPECTED[name], np.float32), err_msg=form.__name__)
        if name == "tanh":
            assert np.signbit(out[4]), "tanh(-0.0) keeps the sign"


def test_hardswish_is_onnx_hardswish():
    """ONNX: HardSwish(x) = x * HardSigmoid(x, alpha=1/6, beta=0.5)."""
    y = np.linspace(-10, 10, 2001)
    hardsigmoid = Activation.parse("hardsigmoid", alpha=1 / 6, beta=0.5)
    np.testing.assert_allclose(activation_reference(Activation.parse("hardswish"), y),
                               y * activation_reference(hardsigmoid, y), rtol=1e-15, atol=1e-15)


def test_new_activations_parse_with_onnx_defaults_and_round_trip():
    wl = conv2d(1, 4, 5, 5, 4, 3, activation="hardsigmoid")
    assert (wl.activation.kind, wl.activation.alpha, wl.activation.beta) == ("hardsigmoid", 0.2, 0.5)
    for spec, params in [("hardsigmoid", dict(alpha=1 / 6, beta=0.5)), ("sigmoid", {}), ("hardswish", {}),
                         ("silu", {}), ("tanh", {})]:
        w = conv2d(1, 4, 5, 5, 4, 3, activation=spec, **params)
        assert Conv2D.from_key(w.key) == w
        assert type(w.activation.beta) is float


@pytest.mark.parametrize("spec,params,message", [
    ("sigmoid", dict(alpha=0.2), r"^alpha: only activation leaky_relu or hardsigmoid takes it, not 'sigmoid'"),
    ("tanh", dict(beta=0.5), r"^beta: only activation hardsigmoid takes it, not 'tanh'"),
    ("hardsigmoid", dict(beta=float("inf")), r"^beta: expected a finite number"),
    ("swish", {}, r"^activation: 'swish' is not one of relu, .*, tanh$"),
])
def test_bad_activation_is_named(spec, params, message):
    with pytest.raises(WorkloadError, match=message):
        conv2d(1, 4, 5, 5, 4, 3, activation=spec, **params)


def test_activation_kind_is_checked_when_built_directly():
    with pytest.raises(WorkloadError, match=r"^activation: kind 'relu6' is not one of relu, clip, "):
        Activation("relu6")


def test_compute_definition_prints_the_call():
    text = str(ComputeDef(conv2d(1, 4, 5, 5, 4, 3, activation="silu")))
    assert re.search(r" \* sigmoid\(sum\[", text), text
    with pytest.raises(ValueError, match=r"^call: 'erf' is not one of exp, sigmoid, tanh$"):
        Call("erf", Var("x", "float"))


@pytest.mark.parametrize("name", ["sigmoid", "hardsigmoid", "hardswish", "silu", "tanh"])
def test_cli_conv_accepts_the_activation(name):
    assert parse_conv(f"N=1,C=4,H=5,W=5,K=4,R=3,act={name}").activation.kind == name
