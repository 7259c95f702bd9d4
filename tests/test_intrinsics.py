"""The vector intrinsics generated kernels are built from, checked lane by
lane against plain numpy indexing."""
import numpy as np
import pytest
from numba import njit

from convtune.codegen.intrinsics import array_at, vfma, vinterleave, vld, vldmask, vsplat, vst, vstrows


def masked_loader(stride: int, lanes: int):  # type: ignore[no-untyped-def]
    @njit
    def load(a, o, base, lo, hi):  # type: ignore[no-untyped-def]
        vst(o, 0, vldmask(a, base, stride, lo, hi, lanes))
    return load


@pytest.mark.parametrize("stride", [1, 2, 3, 4])
@pytest.mark.parametrize("lanes", [4, 7, 16, 32])
def test_masked_load_keeps_exactly_the_lanes_inside_lo_hi(stride, lanes):
    """Lane i is a[base + i*stride] when lo <= i*stride < hi, else 0: the
    border rule of padded convolutions, for every clamp case of lo and hi."""
    load = masked_loader(stride, lanes)
    a = np.arange(1, 4 * lanes * stride + 8, dtype=np.float32)
    out = np.empty(lanes, np.float32)
    span = lanes * stride
    for lo in (-5, 0, 1, 3, span - 1, span, span + 9):
        for hi in (-1, 0, 2, 5, span - stride, span - 1, span, span + 3):
            load(a, out, 3, lo, hi)
            expected = [a[3 + i * stride] if lo <= i * stride < hi else 0.0 for i in range(lanes)]
            np.testing.assert_array_equal(out, expected, err_msg=f"lo={lo} hi={hi}")


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("lanes", [8, 16])
def test_masked_load_at_the_end_of_the_array_reads_only_its_lanes(stride, lanes):
    """A span that runs off the array with its last lanes masked (a padded
    conv's last tile of its last row): without AVX-512 a load inside the
    array is a plain one and a select, one that runs off it must stay
    masked; either way the same lanes."""
    load = masked_loader(stride, lanes)
    out = np.empty(lanes, np.float32)
    for size in range(1, lanes * stride + 2):
        a = np.arange(1, size + 1, dtype=np.float32)
        for lo in (0, 1):
            load(a, out, 0, lo, size)
            expected = [a[i * stride] if lo <= i * stride < size else 0.0 for i in range(lanes)]
            np.testing.assert_array_equal(out, expected, err_msg=f"size={size} lo={lo}")


def test_fma_load_store_broadcast():
    @njit
    def axpy(x, y, out, alpha):  # type: ignore[no-untyped-def]
        vst(out, 0, vfma(vsplat(alpha, 16), vld(x, 0, 16), vld(y, 0, 16)))

    rng = np.random.default_rng(3)
    x, y = rng.standard_normal(16, dtype=np.float32), rng.standard_normal(16, dtype=np.float32)
    out = np.full(16, np.nan, np.float32)
    axpy(x, y, out, np.float32(0.5))
    np.testing.assert_allclose(out, 0.5 * x + y, rtol=1e-6)


def interleaver(count: int, lanes: int):  # type: ignore[no-untyped-def]
    vecs = [f"vld(a, {i * lanes}, {lanes})" for i in range(count)]
    parts = ", ".join(f"({', '.join(vecs[i:i + 16])},)" for i in range(0, count, 16))  # as the renderer splits them
    namespace = {"njit": njit, "vld": vld, "vst": vst, "vinterleave": vinterleave}
    exec(f"@njit\ndef f(a, o):\n    vst(o, 0, vinterleave(({parts},)))", namespace)
    return namespace["f"]


@pytest.mark.parametrize("count", [2, 4, 8, 16, 32])
@pytest.mark.parametrize("lanes", [4, 16])
def test_interleave_is_a_transpose(count, lanes):
    """Lane j*B + i of the result is lane j of vector i: rows in, blocks out."""
    rows = np.arange(count * lanes, dtype=np.float32).reshape(count, lanes)
    out = np.full(count * lanes, np.nan, np.float32)
    interleaver(count, lanes)(rows.reshape(-1), out)
    np.testing.assert_array_equal(out, rows.T.reshape(-1))


def row_writer(count: int, lanes: int, stride: int):  # type: ignore[no-untyped-def]
    vecs = [f"vld(a, {i * lanes}, {lanes})" for i in range(count)]
    parts = ", ".join(f"({', '.join(vecs[i:i + 16])},)" for i in range(0, count, 16))
    namespace = {"njit": njit, "vld": vld, "vstrows": vstrows}
    exec(f"@njit\ndef f(a, o, base):\n    vstrows(o, base, {stride}, ({parts},))", namespace)
    return namespace["f"]


@pytest.mark.parametrize("count", [2, 3, 7, 8, 14])
@pytest.mark.parametrize("lanes", [4, 16, 32])
def test_row_store_writes_the_transposed_tile_and_nothing_else(count, lanes):
    """out[base + l*stride + i] = vector i, lane l; every other element of the
    (NaN-poisoned) output keeps its value, padding lanes included."""
    stride, base = count + 5, 3
    cols = np.random.default_rng(count).standard_normal((count, lanes)).astype(np.float32)
    out = np.full(base + lanes * stride + 8, np.nan, np.float32)
    row_writer(count, lanes, stride)(cols.reshape(-1), out, base)
    expected = np.full_like(out, np.nan)
    for lane in range(lanes):
        expected[base + lane * stride: base + lane * stride + count] = cols[:, lane]
    np.testing.assert_array_equal(out, expected)


@njit
def _count_into(address: int, n: int) -> None:
    a = array_at(address, n, "float32")
    for i in range(a.shape[0]):
        a[i] = i


@njit
def _sum_at(address: int, n: int) -> int:
    return array_at(address, n, "int64").sum()


def test_array_at_is_the_memory_at_an_address_and_only_its_size():
    x = np.full(9, np.nan, np.float32)
    _count_into(x.ctypes.data + 4, 5)  # elements 1..5
    assert np.isnan(x[0]) and x[1:6].tolist() == [0, 1, 2, 3, 4] and np.isnan(x[6:]).all()
    ints = np.arange(10, dtype=np.int64) * 3
    assert _sum_at(ints.ctypes.data, 4) == 0 + 3 + 6 + 9
