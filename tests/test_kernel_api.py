"""The callable kernel: argument checks, weight packing once, readable output."""
import numpy as np
import pytest

from convtune.codegen import build, lower_schedule, source
from convtune.codegen.verify import TOLERANCE, random_inputs
from conftest import packed_schedule
from convtune.ir import ComputeDef, conv2d, conv2d_reference, relative_error
from convtune.schedules import default_schedule

WL = conv2d(2, 8, 7, 7, 16, 3, padding=1, bias=True, residual=True, activation="relu")


@pytest.fixture(scope="module")
def kernel():
    return build(packed_schedule(WL))


def test_prepared_kernel_reuses_packed_weights(kernel, rng):
    x = random_inputs(WL, rng)
    conv = kernel.prepare(x.weight, x.bias)
    assert conv.weight.shape == (2 * 1 * 3 * 3 * 8 * 8,)  # packed once, OIHW4i8o
    for _ in range(2):
        data, res = rng.standard_normal(WL.data_shape), rng.standard_normal(WL.out_shape)
        y = conv(data.astype(np.float32), residual=res.astype(np.float32))
        ref = conv2d_reference(WL, data.astype(np.float32), x.weight, x.bias, res.astype(np.float32))
        assert relative_error(y, ref) < 1e-4


def test_out_buffer_is_written_in_place(kernel, rng):
    x = random_inputs(WL, rng)
    out = np.full(WL.out_shape, np.nan, np.float32)  # poisoned: an output left unwritten stays NaN
    y = kernel(x.data, x.weight, x.bias, x.residual, out=out)
    assert y is out
    err = relative_error(out, conv2d_reference(WL, x.data, x.weight, x.bias, x.residual))
    assert err < TOLERANCE, f"the caller's out buffer differs from the float64 reference: relative error {err:.3g}"


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(data=np.zeros((2, 8, 7, 6))), r"data: expected shape \(2, 8, 7, 7\), got \(2, 8, 7, 6\)"),
        (dict(weight=np.zeros((16, 8, 3))), r"weight: expected shape \(16, 8, 3, 3\)"),
        (dict(bias=None), r"bias: this workload has a bias"),
        (dict(residual=None), r"residual: this workload adds a residual"),
        (dict(out=np.zeros((2, 16, 7, 7), np.float64)), r"out: expected a C-contiguous float32 array"),
    ],
)
def test_bad_arguments_are_named(kernel, rng, change, message):
    x = random_inputs(WL, rng)
    args = dict(data=x.data, weight=x.weight, bias=x.bias, residual=x.residual, out=None)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        kernel(**args)


def test_unexpected_bias_or_residual(rng):
    wl = conv2d(1, 4, 5, 5, 4, 3)
    k = build(default_schedule(wl))
    x = random_inputs(wl, rng)
    with pytest.raises(ValueError, match=r"bias: this workload was declared without a bias"):
        k(x.data, x.weight, bias=np.ones(4))
    with pytest.raises(ValueError, match=r"residual: this workload was declared without a residual"):
        k(x.data, x.weight, residual=np.ones(wl.out_shape))


def test_everything_prints(kernel):
    sch = packed_schedule(WL)
    assert "pack_weights(in_block=4, out_block=8)" in str(sch)
    assert "sum[c<8, r<3, s<3]" in str(ComputeDef(WL))
    nest = str(lower_schedule(sch))
    assert "parallel for n_k_o_p in range(28):" in nest and "x8(" in nest
    src = source(sch)
    assert src == kernel.source
    assert "vfma(" in src and "def stage1(n_k_o_p" in src
    compile(src, "<generated>", "exec")  # valid Python


def test_bounds_checked_build_raises_instead_of_corrupting_memory(monkeypatch, rng):
    monkeypatch.setenv("CONVTUNE_CHECK_BOUNDS", "1")
    wl = conv2d(1, 8, 6, 6, 8, 3, padding=1)
    kernel = build(packed_schedule(wl))
    assert "checked(" in kernel.source
    x = random_inputs(wl, rng)
    conv = kernel.prepare(x.weight)
    out = np.full(wl.out_shape, np.nan, np.float32)
    assert conv(x.data, out=out) is out  # in range: runs, and computes the convolution
    err = relative_error(out, conv2d_reference(wl, x.data, x.weight))
    assert err < TOLERANCE, f"the bounds-checked kernel differs from the float64 reference: relative error {err:.3g}"
    conv._scratch["data_packed"] = np.empty(10, np.float32)  # sabotage: scratch far too small
    with pytest.raises(IndexError, match="outside a buffer"):
        conv(x.data)
