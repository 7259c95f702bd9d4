"""Numba kernels for the operators around the convs (pools, the Gemm head, normalisations).

Why compiled, not numpy: numpy pays microseconds of dispatch per call, and
its BLAS runs on OpenBLAS's own threads, which fight Numba's spinning OpenMP
threads right after a conv (NOTES.md, "Threading layers fight": a small
Gemm head took 14.7 ms after mobilenet_v2's convs instead of 0.2 ms). These
run on Numba's threading layer like the convs, from Python or from a plan's
compiled driver (``codegen.model_driver``), on flat float32 arrays with the
shapes as scalar arguments, so one compiled version serves every model.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_FLAGS = dict(cache=True, nogil=True)
_REDUCE = {"reassoc", "contract"}
"""Reassociation lets LLVM vectorise a sum; no 'nnan', so NaN still propagates."""


@njit(nogil=True, inline="always")
def _max2(a, b):  # type: ignore[no-untyped-def]
    """``max(a, b)``, a NaN in either winning (as ``np.maximum``)."""
    return a if a > b or a != a else b


@njit(nogil=True, inline="always")
def _max_of(dst, src, starts, count, n):  # type: ignore[no-untyped-def]
    """``dst[:n]`` = the elementwise maximum of the runs ``src[s:s + n]`` for
    ``s`` in ``starts[:count]`` (-inf for none), three runs a pass: a pass
    reads each element of its runs and writes ``dst`` once, where merging one
    run at a time would read and write ``dst`` again for every run. (Runs as
    slices: indexing ``src`` with a computed signed index would add a
    wraparound test per element and keep LLVM from vectorising.)"""
    out = dst[:n]
    if count == 0:
        out[:] = -np.inf
        return
    a = src[starts[0]:starts[0] + n]
    if count == 1:
        out[:] = a
        return
    b = src[starts[1]:starts[1] + n]
    if count == 2:
        for w in range(n):
            out[w] = _max2(a[w], b[w])
        return
    c = src[starts[2]:starts[2] + n]
    for w in range(n):
        out[w] = _max2(_max2(a[w], b[w]), c[w])
    for i in range(3, count, 2):
        a = src[starts[i]:starts[i] + n]
        if i + 1 < count:
            b = src[starts[i + 1]:starts[i + 1] + n]
            for w in range(n):
                out[w] = _max2(_max2(out[w], a[w]), b[w])
        else:
            for w in range(n):
                out[w] = _max2(out[w], a[w])


@njit(nogil=True, inline="always")
def _deinterleave(dst, src, n, step, span, lanes):  # type: ignore[no-untyped-def]
    """Pixel ``i step + j`` of ``src`` (``n`` pixels of ``lanes`` values) to
    pixel ``j span + i`` of ``dst``: each of the ``step`` phases as a
    contiguous run, so that a strided pool's taps read contiguous runs. One
    value a pixel at stride 2 (most NCHW pools) in one loop over both phases,
    which LLVM vectorises as interleaved loads (a loop per phase, strided,
    took longer than the pool's maxima)."""
    if lanes == 1 and step == 2:
        even, odd = dst[:span], dst[span:2 * span]
        for i in range(n // 2):
            even[i] = src[2 * i]
            odd[i] = src[2 * i + 1]
        if n % 2:
            even[n // 2] = src[n - 1]
        return
    for j in range(step):
        for i in range((n - j + step - 1) // step):
            to, at = np.uint64((j * span + i) * lanes), np.uint64((i * step + j) * lanes)
            for lane in range(np.uint64(lanes)):  # unsigned: no wraparound test, so LLVM vectorises
                dst[to + lane] = src[at + lane]


@njit(nogil=True, inline="always")
def _border_max(row, cols, q, W, kw, sw, dw, pl, lanes):  # type: ignore[no-untyped-def]
    """Output pixel ``q`` of ``row``: the maximum over its taps that lie inside ``cols[:W]``."""
    for lane in range(lanes):
        m = -np.inf
        for s in range(kw):
            w = q * sw + s * dw - pl
            if 0 <= w < W:
                m = _max2(cols[w * lanes + lane], m)
        row[q * lanes + lane] = m


@njit(parallel=True, **_FLAGS)
def max_pool(x, out, planes, H, W, P, Q, kh, kw, sh, sw, pt, pl, dh, dw,  # type: ignore[no-untyped-def]
             lanes, top, left, rows, cols):
    """2-D max pool of ``planes`` HxW planes into PxQ ones (padding never wins;
    a NaN in a window makes its maximum NaN, as ``np.maximum`` does). A pixel
    is ``lanes`` values: 1 for NCHW, the block of an NCHW[b]c tensor (a
    plane is then a channel block), whose output plane is ``rows`` x ``cols``
    pixels with the interior at (``top``, ``left``): the border, which the
    conv reading it wants zero, is never written.

    Separable: per output row, the maximum over the window's input rows,
    contiguous and vectorised, into one row of ``W`` pixels; with a stride,
    that row split into its ``sw`` phases (pixels ``i sw + j`` for each j),
    so that each tap of the window reads a contiguous run of one phase; then
    the maximum over the taps, for the pixels whose whole window lies inside
    in one vectorised pass, for the border pixels tap by tap.
    resnet18's 64x112x112 3x3/2 pool: 8.4 ms with a bounds test per pixel,
    0.42 ms with the taps' columns worked out, 0.17 ms separable merging one
    row or tap at a time (a read and write of the row each); on a Zen 5, 2
    threads, warm: 176 us that way, 150 us three runs a pass from phases (one
    thread 347 -> 292; a 3x3/1 pool 1086 -> 512). onnxruntime's NCHWc pool,
    a vector of channels per pixel, takes about 40 us in its model."""
    span = (W + sw - 1) // sw
    # Output pixels whose every tap is inside: q sw + s dw - pl in [0, W).
    inner0 = min(Q, max(0, (pl + sw - 1) // sw))
    inner1 = max(inner0, min(Q, (W - 1 + pl - (kw - 1) * dw) // sw + 1))
    for c in prange(planes):
        merged = np.empty(W * lanes, np.float32)
        phases = np.empty(sw * span * lanes, np.float32) if sw > 1 else merged
        starts = np.empty(max(kh, kw), np.int64)
        for p in range(P):
            inside = 0
            for r in range(kh):
                h = p * sh - pt + r * dh
                if 0 <= h < H:
                    starts[inside] = (c * H + h) * W * lanes
                    inside += 1
            _max_of(merged, x, starts, inside, W * lanes)
            if sw > 1:
                _deinterleave(phases, merged, W, sw, span, lanes)
            at = ((c * rows + top + p) * cols + left) * lanes
            row = out[at:at + Q * lanes]
            for s in range(kw):  # pixel q sw + off is phase off mod sw, at q + off // sw in it
                off = s * dw - pl
                starts[s] = ((off % sw) * span + inner0 + off // sw) * lanes
            _max_of(row[inner0 * lanes:], phases, starts, kw, (inner1 - inner0) * lanes)
            for q in range(inner0):
                _border_max(row, merged, q, W, kw, sw, dw, pl, lanes)
            for q in range(inner1, Q):
                _border_max(row, merged, q, W, kw, sw, dw, pl, lanes)


@njit(parallel=True, fastmath=_REDUCE, **_FLAGS)
def global_average_pool(x, out, planes, size):  # type: ignore[no-untyped-def]
    """Mean of each of ``planes`` planes of ``size`` pixels (summed in
    float64, vector lanes of partial sums: in order, mobilenet_v2's 1280
    planes of 49 took 15 us, against onnxruntime's 6.5)."""
    for c in prange(planes):
        plane = x[c * size:(c + 1) * size]
        total = 0.0
        for i in range(size):
            total += plane[i]
        out[c] = total / size


@njit(parallel=True, **_FLAGS)
def plane_broadcast(x, s, out, planes, size, s_planes, multiply):  # type: ignore[no-untyped-def]
    """``x * s`` (``multiply``) or ``x + s`` where ``s`` holds one value per
    plane of ``size`` pixels, plane ``p`` taking ``s[p % s_planes]``: a
    squeeze-excitation gate (N, C, 1, 1) or a per-channel (1, C, 1, 1)."""
    for p in prange(planes):
        v = s[p % s_planes]
        base = p * size
        if multiply:
            for i in range(size):
                out[base + i] = x[base + i] * v
        else:
            for i in range(size):
                out[base + i] = x[base + i] + v


@njit(parallel=True, fastmath=_REDUCE, **_FLAGS)
def gemm(a, bt, c, out, M, N, K):  # type: ignore[no-untyped-def]
    """``out = a @ bt.T + c`` for ``a`` MxK, ``bt`` NxK (the weight
    transposed once at plan time, so every dot product reads contiguous
    rows) and ``c`` MxN, parallel over blocks of 4 outputs. A model's head
    streams its weights from memory (5 MB for mobilenet_v2's 1280x1000):
    four rows read at once keep four streams in flight: 91 -> 80 us cold on
    that head and 157 -> 134 us on resnet50's 2048x1000 than one row at a
    time (one run; 115 -> 108 and 170 -> 142 in a second). The last block
    clamps its rows to N - 1 (recomputing the last output, written by the
    same thread) instead of a scalar tail loop. The
    rows are sliced first: indexing the flat arrays with ``n * K + k`` kept
    numba's negative-index wraparound in the loop, which stopped LLVM
    vectorising it (191 us against 33 us, warm)."""
    for block in prange((N + 3) // 4):
        n0 = 4 * block
        n1, n2, n3 = min(n0 + 1, N - 1), min(n0 + 2, N - 1), min(n0 + 3, N - 1)
        w0, w1 = bt[n0 * K:(n0 + 1) * K], bt[n1 * K:(n1 + 1) * K]
        w2, w3 = bt[n2 * K:(n2 + 1) * K], bt[n3 * K:(n3 + 1) * K]
        for m in range(M):
            x = a[m * K:(m + 1) * K]
            s0 = s1 = s2 = s3 = np.float32(0.0)
            for k in range(K):
                s0 += x[k] * w0[k]
                s1 += x[k] * w1[k]
                s2 += x[k] * w2[k]
                s3 += x[k] * w3[k]
            row = m * N
            out[row + n0] = s0 + c[row + n0]
            out[row + n1] = s1 + c[row + n1]
            out[row + n2] = s2 + c[row + n2]
            out[row + n3] = s3 + c[row + n3]


@njit(parallel=True, **_FLAGS)
def place_input(x, out, planes, H, W, Hi, Wi, oh, ow, sh, sw):  # type: ignore[no-untyped-def]
    """Each HxW plane of ``x`` into a zeroed HixWi plane of ``out``, pixel
    (i, j) at (oh + i sh, ow + j sw); what falls outside is dropped: a
    transposed conv's zero-inserted (or cropped) input. The rows and columns
    that land inside are worked out once, so the copy loop has no test."""
    i0, i1 = max(0, (sh - 1 - oh) // sh), min(H, (Hi - 1 - oh) // sh + 1)
    j0, j1 = max(0, (sw - 1 - ow) // sw), min(W, (Wi - 1 - ow) // sw + 1)
    for c in prange(planes):
        plane = out[c * Hi * Wi:(c + 1) * Hi * Wi]
        plane[:] = 0.0
        for i in range(i0, i1):
            src = x[(c * H + i) * W:(c * H + i + 1) * W]
            row = plane[(oh + i * sh) * Wi:(oh + i * sh + 1) * Wi]
            for j in range(j0, j1):
                row[np.uint64(ow + j * sw)] = src[j]


@njit(parallel=True, **_FLAGS)
def interleave_phase(src, out, planes, M, L, P, Q, ph, pw, sh, sw):  # type: ignore[no-untyped-def]
    """``out[c, ph + sh m, pw + sw l] = src[c, m, l]`` for each of ``planes``
    MxL planes: one sub-pixel phase written into its pixels of the PxQ output."""
    for c in prange(planes):
        for m in range(M):
            row = out[(c * P + ph + sh * m) * Q:(c * P + ph + sh * m + 1) * Q]
            part = src[(c * M + m) * L:(c * M + m + 1) * L]
            for j in range(L):
                row[np.uint64(pw + sw * j)] = part[j]


@njit(parallel=True, **_FLAGS)
def fill_phase(fill, out, planes, K, P, Q, ph, pw, sh, sw):  # type: ignore[no-untyped-def]
    """``out[c, ph::sh, pw::sw] = fill[c % K]`` for each of ``planes`` PxQ
    planes (K channels a batch item): a sub-pixel phase no kernel tap reaches."""
    for c in prange(planes):
        value = fill[c % K]
        for p in range(ph, P, sh):
            row = out[(c * P + p) * Q:(c * P + p + 1) * Q]
            for q in range(pw, Q, sw):
                row[q] = value


_ERF_NUMERATOR = tuple(np.float32(c) for c in (
    -1.60960333262415e-02, -2.95459980854025e-03, -7.34990630326855e-04, -5.69250639462346e-05,
    -2.10102402082508e-06, 2.77068142495902e-08, -2.72614225801306e-10))
_ERF_DENOMINATOR = tuple(np.float32(c) for c in (
    -1.42647390514189e-02, -7.37332916720468e-03, -1.68282697438203e-03, -2.13374055278905e-04,
    -1.45660718464996e-05))
_FOUR, _ONE = np.float32(4), np.float32(1)


@njit(nogil=True, fastmath={"contract"}, inline="always")
def _erf(v):  # type: ignore[no-untyped-def]
    """erf of a float32 as x P(x^2) / Q(x^2) on [-4, 4] (XLA's and Eigen's
    float approximation: 6.5e-8 from math.erf in float64, 4.2e-7 evaluated
    in float32, relative error as small near 0), exactly 1 in magnitude
    beyond. With no call in it LLVM vectorises the loop around it 8 lanes
    wide: 1.2M floats took 1.7 ms against 25.1 with libm's scalar erf.
    NaN fails both comparisons and propagates."""
    x = _FOUR if v > _FOUR else (-_FOUR if v < -_FOUR else v)
    x2 = x * x
    p = _ERF_NUMERATOR[6]
    for c in _ERF_NUMERATOR[5::-1]:
        p = p * x2 + c
    q = _ERF_DENOMINATOR[4]
    for c in _ERF_DENOMINATOR[3::-1]:
        q = q * x2 + c
    return _ONE if v > _FOUR else (-_ONE if v < -_FOUR else x * p / q)  # exactly: GELU(-inf) is then NaN


@njit(parallel=True, **_FLAGS)
def erf(x, out, n):  # type: ignore[no-untyped-def]
    """``out = erf(x)`` over ``n`` elements."""
    for i in prange(n):
        out[i] = _erf(x[i])


@njit(parallel=True, **_FLAGS)
def gelu(x, out, n, tanh):  # type: ignore[no-untyped-def]
    """``out = x Phi(x)`` over ``n`` elements, Phi the normal CDF (``tanh``:
    its tanh approximation), in float64 but for ``_erf``'s float32."""
    for i in prange(n):
        v = np.float64(x[i])
        if tanh:
            inner = math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v * v * v))
        else:
            inner = _erf(np.float32(v / math.sqrt(2)))
        out[i] = 0.5 * v * (1 + inner)


@njit(parallel=True, **_FLAGS)
def layer_norm(x, scale, b, eps, out, rows, size):  # type: ignore[no-untyped-def]
    """Each of ``rows`` contiguous rows of ``size`` normalised to zero mean
    and unit variance (float64 sums, two passes; ``eps[0]`` added to the
    variance), times ``scale`` plus ``b`` (both ``size`` long)."""
    for r in prange(rows):
        row = x[r * size:(r + 1) * size]
        total = 0.0
        for i in range(size):
            total += row[i]
        mean = total / size
        squares = 0.0
        for i in range(size):
            d = row[i] - mean
            squares += d * d
        inv = 1 / math.sqrt(squares / size + eps[0])
        dst = out[r * size:(r + 1) * size]
        for i in range(size):
            dst[i] = (row[i] - mean) * inv * scale[i] + b[i]
