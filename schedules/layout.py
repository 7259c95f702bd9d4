"""Blocked layouts: NCHW[x]c for data, OIHW[i]i[o]o for weights.

A layout maps logical coordinates to physical ones. Physical buffers are
zero-padded to whole blocks and, for data, to the conv's spatial padding and
whatever extra rows/columns the loop domain reads (non-divisible splits), so
every read the compute loop makes is in bounds and reads zero outside the
logical tensor. The shapes are decided by lowering, which knows the domain.
"""
from __future__ import annotations

import numpy as np

from convtune.ir.expr import Expr
from convtune.schedules.state import BlockedLayout, DataPacking, WeightPacking


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def packed_data_index(p: DataPacking, n: Expr, c: Expr, h: Expr, w: Expr) -> tuple[Expr, ...]:
    """Physical index of logical input (n, c, h, w); h and w already include
    the padding offset (0 is the first padded row)."""
    return (n, c // p.block, h, w, c % p.block)


def packed_data_shape(p: DataPacking, n: int, c: int, h: int, w: int) -> tuple[int, ...]:
    """Physical shape covering logical extents (n, c, h, w) (padding included)."""
    return (n, ceil_div(c, p.block), h, w, p.block)


def im2col_index(p: DataPacking, n: Expr, c: Expr, r: Expr, s: Expr, pq: Expr) -> tuple[Expr, ...]:
    """Physical index of the input read by output pixel ``pq`` at tap (r, s)."""
    return (n, c // p.block, r, s, pq, c % p.block)


def im2col_shape(p: DataPacking, n: int, c: int, r: int, s: int, pq: int) -> tuple[int, ...]:
    return (n, ceil_div(c, p.block), r, s, pq, p.block)


def packed_weight_index(p: WeightPacking, k: Expr, c: Expr, r: Expr, s: Expr) -> tuple[Expr, ...]:
    return (k // p.out_block, c // p.in_block, r, s, c % p.in_block, k % p.out_block)


def packed_weight_shape(p: WeightPacking, k: int, c: int, r: int, s: int) -> tuple[int, ...]:
    return (ceil_div(k, p.out_block), ceil_div(c, p.in_block), r, s, p.in_block, p.out_block)


def pack_weight_array(p: WeightPacking, weight: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """KCRS weights -> the physical ``shape`` (from ``packed_weight_shape``), zero-filled."""
    kb, cb, r, s, ib, ob = shape
    K, C, R, S = weight.shape
    padded = np.zeros((kb * ob, cb * ib, r, s), np.float32)
    padded[:K, :C, :R, :S] = weight
    blocked = padded.reshape(kb, ob, cb, ib, r, s).transpose(0, 2, 4, 5, 3, 1)
    return np.ascontiguousarray(blocked)


def winograd_weight_index(p: WeightPacking, e: Expr, k: Expr, c: Expr) -> tuple[Expr, ...]:
    """Physical index of U[e, k, c]: element-major, [e, k/ob, c/ib, ib, ob],
    so a GEMM task (one transform element, one output-channel block) streams
    one contiguous run of weights instead of a block every alpha^2 blocks."""
    return (e, k // p.out_block, c // p.in_block, c % p.in_block, k % p.out_block)


def winograd_weight_shape(p: WeightPacking, e: int, k: int, c: int) -> tuple[int, ...]:
    return (e, ceil_div(k, p.out_block), ceil_div(c, p.in_block), p.in_block, p.out_block)


def pack_winograd_weights(p: WeightPacking, u: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """U as [K, C, alpha^2, 1] (``WinogradCompute.transform_weights``) -> the
    physical ``shape`` (from ``winograd_weight_shape``), zero-filled."""
    e, kb, cb, ib, ob = shape
    blocked = pack_weight_array(p, u, (kb, cb, e, 1, ib, ob))
    return np.ascontiguousarray(blocked.transpose(2, 0, 1, 3, 4, 5).reshape(shape))


def toeplitz_weight_index(p: WeightPacking, k: Expr, c: Expr, r: Expr, j: Expr, lane: Expr) -> tuple[Expr, ...]:
    """Physical index of T[k, c, r, j, lane]: [k/ob, c, r, j, ob, lanes], so one
    step of the band loads the ``ob`` output channels' lane vectors from one
    contiguous run, and a register tile streams its channel block's matrices."""
    return (k // p.out_block, c, r, j, k % p.out_block, lane)


def toeplitz_weight_shape(p: WeightPacking, k: int, c: int, r: int, j: int, lanes: int) -> tuple[int, ...]:
    return (ceil_div(k, p.out_block), c, r, j, p.out_block, lanes)


def pack_toeplitz_weights(p: WeightPacking, t: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """T as [K, Cg, R, band, lanes] (``ToeplitzCompute.toeplitz_weights``) -> the
    physical ``shape`` (from ``toeplitz_weight_shape``), zero-filled."""
    kb, c, r, j, ob, lanes = shape
    padded = np.zeros((kb * ob, c, r, j, lanes), np.float32)
    padded[:t.shape[0]] = t
    return np.ascontiguousarray(padded.reshape(kb, ob, c, r, j, lanes).transpose(0, 2, 3, 4, 1, 5))


def blocked_index(layout: BlockedLayout, n: Expr, c: Expr, h: Expr, w: Expr) -> tuple[Expr, ...]:
    """Physical index of logical (n, c, h, w) in a blocked activation layout."""
    return (n, c // layout.block, h + layout.top, w + layout.left, c % layout.block)


def to_blocked(layout: BlockedLayout, x: np.ndarray) -> np.ndarray:
    """An NCHW array in ``layout`` (a fresh array; zero border and channel tail)."""
    if x.shape != layout.tensor:
        raise ValueError(f"to_blocked: expected an NCHW array of shape {layout.tensor}, got {x.shape}")
    n, c, h, w = layout.tensor
    _, cb, _, _, b = layout.shape
    channels = np.zeros((n, cb * b, h, w), np.float32)
    channels[:, :c] = x
    out = np.zeros(layout.shape, np.float32)
    out[:, :, layout.top:layout.top + h, layout.left:layout.left + w] = (
        channels.reshape(n, cb, b, h, w).transpose(0, 1, 3, 4, 2))
    return out


def from_blocked(layout: BlockedLayout, y: np.ndarray) -> np.ndarray:
    """The NCHW array held in ``y`` (of ``layout.shape``)."""
    if y.shape != layout.shape:
        raise ValueError(f"from_blocked: expected an array of shape {layout.shape}, got {y.shape}")
    n, c, h, w = layout.tensor
    inner = y[:, :, layout.top:layout.top + h, layout.left:layout.left + w]
    return np.ascontiguousarray(inner.transpose(0, 1, 4, 2, 3).reshape(n, -1, h, w)[:, :c])
