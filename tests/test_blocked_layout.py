"""Kernels that take blocked NCHW[x]c input and write blocked output
(``Schedule.io_layout``), so a chain of convs keeps its activations packed.

Every kernel is checked against the float64 reference: inputs are packed and
outputs unpacked with numpy here, the output interior is poisoned with NaN
and its border must stay exactly zero (the next conv's padding)."""
import numpy as np
import pytest
from conftest import fresh_seed
from targets import avx512_schedule

from convtune.codegen import build
from convtune.codegen.lower import input_layout_wanted
from convtune.codegen.verify import TOLERANCE
from convtune.ir.reference import conv2d_reference, relative_error
from convtune.ir.workload import conv2d
from convtune.schedules import ScheduleError
from convtune.schedules.layout import from_blocked, to_blocked
from convtune.schedules.state import BlockedLayout


CONFIGS = {
    "direct": {"algorithm": "direct", "cb": 8, "kb": 16, "owb": 4, "ohb": 1, "reduction_order": "c_rs",
               "unroll_s": False, "parallel": "nkp"},
    "winograd": {"algorithm": "winograd", "m": 2, "cb": 8, "kb": 16, "tb": 4},
    "gemm": {"algorithm": "gemm", "cb": 8, "kb": 16, "tb": 4, "reduction_order": "c_rs", "unroll_s": False},
    "indirect": {"algorithm": "indirect", "cb": 16, "kb": 16, "tb": 4, "reduction_order": "rs_c", "unroll_s": False},
}


def numpy_blocked(layout, x):
    """NCHW -> ``layout`` written out independently of ``to_blocked``."""
    out = np.zeros(layout.shape, np.float32)
    for c in range(x.shape[1]):
        out[:, c // layout.block, layout.top:layout.top + x.shape[2], layout.left:layout.left + x.shape[3],
            c % layout.block] = x[:, c]
    return out


def poisoned(layout):
    """A blocked output buffer: NaN inside the tensor, zero in the border."""
    return numpy_blocked(layout, np.full(layout.tensor, np.nan, np.float32))


def check_output(layout, out, ref):
    """The interior matches the reference and the border is still zero."""
    y = from_blocked(layout, out)
    err = relative_error(y, ref)
    assert err < TOLERANCE, err
    border = out.copy()
    border[:, :, layout.top:layout.top + layout.tensor[2], layout.left:layout.left + layout.tensor[3]] = 0
    assert not border.any()
    return y


def draw(rng, shape):
    return rng.uniform(-1, 1, shape).astype(np.float32)


@pytest.mark.parametrize("algorithm", sorted(CONFIGS))
def test_blocked_input_output_and_residual_match_the_reference(algorithm):
    wl = conv2d(1, 16, 8, 7, 16, 3, padding=1, bias=True, residual=True, activation="relu")
    sch = avx512_schedule(wl, CONFIGS[algorithm])
    wanted = input_layout_wanted(sch.state)
    data_layout = wanted or BlockedLayout(wl.data_shape, 8, 1, 1, 11, 12)  # gemm (im2col) repacks in the kernel
    out_layout = BlockedLayout(wl.out_shape, 16, 1, 2, wl.P + 3, wl.Q + 5)
    res_layout = BlockedLayout(wl.out_shape, 8)
    sch.io_layout(data=data_layout, out=out_layout, residual=res_layout)
    kernel = build(sch)
    names = {b.name for b in kernel.loop_nest.params}
    assert ("data_packed" not in names) == (algorithm != "gemm")  # read in place: no packing stage, no scratch
    assert (kernel.input_layout, kernel.output_layout, kernel.residual_layout) == (data_layout, out_layout, res_layout)
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    x, w, b, r = draw(rng, wl.data_shape), draw(rng, wl.weight_shape), draw(rng, (wl.K,)), draw(rng, wl.out_shape)
    out = poisoned(out_layout)
    kernel.prepare(w, b)(numpy_blocked(data_layout, x), residual=numpy_blocked(res_layout, r), out=out)
    check_output(out_layout, out, conv2d_reference(wl, x, w, b, r))


@pytest.mark.parametrize("n, c, h, w, k, cb, kb, tb, groups", [
    (1, 16, 7, 7, 24, 8, 16, 5, 1),     # 49 pixels in tiles of 5: the last tile reads past the tensor
    (2, 21, 5, 3, 17, 4, 16, 4, 1),     # batch 2, channels not a multiple of the block, odd outputs
    (1, 32, 6, 9, 32, 8, 16, 6, 2),     # grouped
    (1, 3, 13, 11, 1000, 3, 32, 7, 1),  # a classifier-like K, prime H
])
def test_a_pointwise_gemm_reads_blocked_input_in_place(n, c, h, w, k, cb, kb, tb, groups):
    """A 1x1 stride-1 gemm's im2col buffer is the NCHW[cb]c tensor itself:
    it wants that layout (rows below the tensor covering its last pixel
    tile), reads it with no packing stage and matches the reference."""
    wl = conv2d(n, c, h, w, k, 1, groups=groups, bias=True, activation="relu")
    sch = avx512_schedule(wl, {**CONFIGS["gemm"], "cb": cb, "kb": kb, "tb": tb})
    layout = input_layout_wanted(sch.state)
    assert layout is not None and (layout.block, layout.top, layout.left, layout.cols) == (cb, 0, 0, w)
    assert layout.rows * w >= -(-h * w // tb) * tb
    sch.io_layout(data=layout)
    kernel = build(sch)
    assert "data_packed" not in {b.name for b in kernel.loop_nest.params}
    rng = np.random.default_rng(fresh_seed())
    x, wt, b = draw(rng, wl.data_shape), draw(rng, wl.weight_shape), draw(rng, (wl.K,))
    out = np.full(wl.out_shape, np.nan, np.float32)
    kernel.prepare(wt, b)(numpy_blocked(layout, x), out=out)
    assert relative_error(out, conv2d_reference(wl, x, wt, b)) < TOLERANCE


def test_strided_or_padded_pointwise_and_larger_gemms_still_pack():
    for wl in (conv2d(1, 16, 8, 8, 16, 1, stride=2), conv2d(1, 16, 8, 8, 16, 1, padding=1),
               conv2d(1, 16, 8, 8, 16, 3, padding=1)):
        assert input_layout_wanted(avx512_schedule(wl, CONFIGS["gemm"]).state) is None, wl


def test_a_register_tile_wider_than_the_output_block_is_stored_in_vector_chunks():
    """kb = 32 channels into NCHW8c: four contiguous 8-lane stores per pixel,
    not 32 scalar ones (``codegen.passes.chunk_stores``)."""
    wl = conv2d(1, 8, 6, 6, 32, 3, padding=1, bias=True, activation="relu")
    sch = avx512_schedule(wl, {**CONFIGS["direct"], "kb": 32, "owb": 3})
    layout = BlockedLayout(wl.out_shape, 8, 1, 1, 8, 9)
    sch.io_layout(out=layout)
    kernel = build(sch)
    stores = [line.strip() for line in kernel.source.splitlines() if "(out," in line]
    assert stores and all(line.startswith("vst(out,") for line in stores), stores[:3]
    rng = np.random.default_rng(fresh_seed())
    x, w, b = draw(rng, wl.data_shape), draw(rng, wl.weight_shape), draw(rng, (wl.K,))
    out = poisoned(layout)
    kernel.prepare(w, b)(x, out=out)
    check_output(layout, out, conv2d_reference(wl, x, w, b))


@pytest.mark.parametrize("k", [40, 48, 33])
def test_a_ragged_tile_into_a_smaller_block_is_stored_in_masked_vector_chunks(k):
    """kb = 32 channels into NCHW16c when K is not a multiple of 32 (squeezenet's
    K = 48 squeeze convs): the last channel tile's runs become masked vector
    stores, not a guarded scalar store per lane (900 lines, 7 s to compile),
    and the channels past K inside the last block stay zero (a sigmoid would
    write 0.5 there)."""
    wl = conv2d(1, 24, 5, 7, k, 1, bias=True, activation="sigmoid")
    sch = avx512_schedule(wl, {**CONFIGS["gemm"], "kb": 32, "tb": 7})
    layout = BlockedLayout(wl.out_shape, 16, 1, 1, 8, 9)
    sch.io_layout(out=layout)
    kernel = build(sch)
    stores = [line.strip() for line in kernel.source.splitlines() if "(out," in line]
    assert stores and not any(line.startswith("st(out,") for line in stores), stores[:3]
    rng = np.random.default_rng(fresh_seed())
    x, w, b = draw(rng, wl.data_shape), draw(rng, wl.weight_shape), draw(rng, (wl.K,))
    out = poisoned(layout)
    kernel.prepare(w, b)(x, out=out)
    check_output(layout, out, conv2d_reference(wl, x, w, b))
    channels = out.transpose(0, 1, 4, 2, 3).reshape(1, -1, 8, 9)
    assert not channels[:, k:].any()  # the last block's channels past K


def test_two_convs_chain_in_blocked_layout_with_no_packing_between():
    """A writes what B reads in place, and B adds A's output as its residual
    (a ResNet block): no NCHW tensor between them."""
    a_wl = conv2d(1, 8, 8, 8, 16, 3, padding=1, bias=True, activation="relu")
    b_wl = conv2d(1, 16, 8, 8, 16, 3, padding=1, bias=True, residual=True, activation="relu")
    b_sch = avx512_schedule(b_wl, CONFIGS["winograd"])
    link = input_layout_wanted(b_sch.state)
    a_sch = avx512_schedule(a_wl, {**CONFIGS["direct"], "cb": 8})
    a_sch.io_layout(out=link)
    final = BlockedLayout(b_wl.out_shape, 16)
    b_sch.io_layout(data=link, residual=link, out=final)
    a, b = build(a_sch), build(b_sch)
    rng = np.random.default_rng(fresh_seed())
    x, wa, ba, wb, bb = (draw(rng, s) for s in (a_wl.data_shape, a_wl.weight_shape, (16,), b_wl.weight_shape, (16,)))
    conv_a, conv_b = a.prepare(wa, ba), b.prepare(wb, bb)
    mid = conv_a.new_output()
    assert mid.shape == link.shape and not mid.any()
    conv_a(x, out=mid)
    out = poisoned(final)
    conv_b(mid, residual=mid, out=out)
    h = conv2d_reference(a_wl, x, wa, ba)
    check_output(final, out, conv2d_reference(b_wl, h.astype(np.float32), wb, bb, h.astype(np.float32)))


def test_numpy_pack_and_unpack_round_trip():
    layout = BlockedLayout((2, 5, 3, 4), 4, 1, 2, 6, 8)
    x = draw(np.random.default_rng(fresh_seed()), layout.tensor)
    packed = to_blocked(layout, x)
    assert packed.shape == (2, 2, 6, 8, 4) and np.array_equal(packed, numpy_blocked(layout, x))
    assert np.array_equal(from_blocked(layout, packed), x)


def test_bad_layouts_are_refused_in_one_line():
    wl = conv2d(1, 16, 8, 8, 16, 3, padding=1)
    sch = avx512_schedule(wl, CONFIGS["direct"])
    with pytest.raises(ScheduleError, match=r"io_layout: data layout is for a \(1, 16, 9, 8\) tensor"):
        sch.io_layout(data=BlockedLayout((1, 16, 9, 8), 8))
    with pytest.raises(ScheduleError, match="io_layout: this workload has no residual input"):
        sch.io_layout(residual=BlockedLayout(wl.out_shape, 8))
    with pytest.raises(ScheduleError, match="layout: 9 x 9 physical rows x columns cannot hold 8 x 8 from"):
        BlockedLayout(wl.data_shape, 8, 2, 2, 9, 9)
    sch.io_layout(data=BlockedLayout(wl.data_shape, 8))
    with pytest.raises(ScheduleError, match="io_layout: data already has a layout"):
        sch.io_layout(data=BlockedLayout(wl.data_shape, 8))
    conv = build(sch).prepare(np.ones(wl.weight_shape, np.float32))
    with pytest.raises(ValueError, match=r"data: expected shape \(1, 2, 8, 8, 8\), got \(1, 16, 8, 8\)"):
        conv(np.ones(wl.data_shape, np.float32))
