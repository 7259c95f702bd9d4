"""The Toeplitz-matrix template: its compute definition in numpy, its kernels
on odd shapes against the float64 reference, what it applies to, and its
generated source. (Every knob value is swept in ``test_templates.py``; random
workloads x random configs in ``test_template_property.py``.)"""
import numpy as np
import pytest

from conftest import assert_correct
from targets import AVX512, avx512_schedule
from convtune.codegen import source
from convtune.ir import conv2d
from convtune.ir.reference import conv2d_reference, relative_error
from convtune.ir.toeplitz import ToeplitzCompute, applies
from convtune.schedules.templates import default_config, search_space


def toeplitz_config(wl, **knobs):
    """The template's AVX-512 default for ``wl`` with ``knobs`` changed (checked
    by the space; the knobs below are sized for AVX-512: ``avx512_schedule``)."""
    return {"algorithm": "toeplitz", **search_space(wl, AVX512)["toeplitz"].default, **knobs}


@pytest.mark.parametrize("wl", [conv2d(2, 3, 11, 13, 5, 3, padding="same"),
                                conv2d(1, 4, 9, 17, 6, 5, stride=2, dilation=(1, 2), padding=(2, 1, 0, 3), groups=2)])
@pytest.mark.parametrize("lanes", [1, 4, 7])
def test_the_banded_products_are_the_convolution(wl, lanes, rng):
    """The definition itself, evaluated in numpy (float64) with the matrices
    ``toeplitz_weights`` builds: out[n, k, p, t*lanes + l] = sum T * x_pad."""
    tc = ToeplitzCompute(wl, lanes)
    x = rng.standard_normal(wl.data_shape)
    w = rng.standard_normal(wl.weight_shape)
    t = tc.toeplitz_weights(w.astype(np.float32)).astype(np.float64)
    (pt, pl, pb, _), (sh, sw), dh = wl.padding, wl.stride, wl.dilation[0]
    cols = tc.tiles * lanes * sw + tc.band
    x_pad = np.zeros((wl.N, wl.C, wl.H + pt + pb, cols))
    x_pad[:, :, pt:pt + wl.H, pl:pl + wl.W] = x
    out = np.zeros((wl.N, wl.K, wl.P, tc.tiles * lanes))
    for k in range(wl.K):
        channels = slice((k // wl.Kg) * wl.Cg, (k // wl.Kg + 1) * wl.Cg)
        for p in range(wl.P):
            for tile in range(tc.tiles):
                start = tile * lanes * sw
                for r in range(wl.R):
                    segment = x_pad[:, channels, p * sh + r * dh, start:start + tc.band]  # [n, c, j]
                    out[:, k, p, tile * lanes:(tile + 1) * lanes] += np.einsum("ncj,cjl->nl", segment, t[k, :, r])
    assert relative_error(out[..., :wl.Q], conv2d_reference(wl, x, w)) < 1e-6


CASES = [
    # (workload, knobs over the default): odd channel counts, prime sizes, batch > 1.
    (conv2d(1, 1, 29, 31, 3, 3, padding="same", bias=True, activation="relu"), {}),
    (conv2d(2, 3, 13, 17, 17, 3, padding="same", residual=True), {"nv": 1, "kb": 5, "ohb": 3}),
    (conv2d(3, 1, 7, 11, 21, 5, padding="same", bias=True, activation="sigmoid"), {"kb": 4, "ohb": 2}),
    (conv2d(2, 3, 23, 37, 8, 3, stride=2, padding="same", activation="hardswish"), {}),
    (conv2d(1, 3, 19, 41, 17, 3, padding="same", bias=True, residual=True, activation="leaky_relu"),
     {"lanes": 16, "nv": 3, "kb": 3, "ohb": 1, "unroll_j": True, "unroll_r": False}),  # ragged last column tile
    (conv2d(1, 1, 17, 19, 3, 3, dilation=2, padding="same", activation="tanh"), {"unroll_j": True, "unroll_r": False, "ohb": 2}),
    (conv2d(2, 6, 11, 13, 21, 3, padding=(0, 2, 1, 0), groups=3, activation="relu6"), {"kb": 2}),  # grouped
    (conv2d(1, 3, 31, 7, 16, 7, stride=(2, 1), padding=3, bias=True), {}),  # 7 lanes: one tile a row
]


@pytest.mark.parametrize("wl,knobs", CASES, ids=[wl.short() for wl, _ in CASES])
def test_kernels_match_the_reference(wl, knobs):
    assert_correct(avx512_schedule(wl, toeplitz_config(wl, **knobs)))


def test_it_applies_where_its_matrices_are_worth_building():
    assert applies(conv2d(1, 1, 28, 28, 16, 3, padding="same"))
    assert applies(conv2d(1, 4, 14, 14, 8, 3, stride=2, dilation=2, groups=2))
    assert not applies(conv2d(1, 8, 14, 14, 8, 3, padding=1, groups=8))  # depthwise: depthwise_w does this better
    assert not applies(conv2d(1, 16, 14, 14, 16, 1))  # 1x1: the matrix would be a diagonal
    assert not applies(conv2d(1, 256, 14, 14, 256, 3, padding=1))  # 256x the weights' floats
    with pytest.raises(ValueError, match="lanes=15"):
        ToeplitzCompute(conv2d(1, 1, 14, 14, 4, 3, padding="same"), 15)


def test_the_tuner_decides_untuned_layers_keep_their_defaults():
    wl = conv2d(1, 1, 28, 28, 16, 3, padding="same")
    assert "toeplitz" in search_space(wl)
    assert default_config(wl)["algorithm"] != "toeplitz"


def test_the_generated_source_shows_broadcast_pixels_times_matrix_vectors():
    wl = conv2d(1, 1, 5, 20, 2, 3, padding="same", bias=True)
    sch = avx512_schedule(wl, toeplitz_config(wl, lanes=16, nv=2, ohb=1, kb=2))
    printed = str(sch)
    assert "loops: n_k_o_p_o, t_o, c, r, j, p_i, t_i, k_i, l" in printed and "vectorize(l)" in printed
    src = source(sch)
    body = src.split("def stage1", 1)[1]
    assert "vfma(vsplat(ld(data_packed, " in body and "vld(weight, " in body
    assert "vstmask(out, " in body  # the last column tile: 4 of 16 lanes stored
    assert "vfromtuple(" not in src  # nothing gathered lane by lane
    assert "T[k, c, r, j, l] * x_pad[n, c, p*1 + r*1, t*16 + j]" in str(ToeplitzCompute(wl, 16))
