"""SIMD vectors and raw memory access for generated Numba kernels.

Why this exists: written as plain Numba loops, a register tile of
accumulators ends up in memory and LLVM picks narrow vectors (measured: 20x
slower). ``F32Vec(L)`` is a Numba type whose LLVM representation is
``<L x float>``; the intrinsics below build vector loads, stores, broadcasts
and FMAs directly with llvmlite's IR builder. LLVM legalises any lane count to
the machine's registers (16 lanes = two AVX2 ymm or one AVX-512 zmm).

``ld``/``st`` read and write through the raw data pointer: no bounds check
and no negative-index wraparound (whose compare-and-select per access costs
half the throughput of a hot loop). Lowering proves the accesses in bounds
(``codegen.passes.bounds_check``).

Generated modules import these by name; numba's on-disk cache pickles them
by reference, so this module must stay importable under the same name.
"""
from __future__ import annotations

from contextlib import nullcontext

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic, models, register_model
from numba.np.arrayobj import make_array, populate_array


class F32Vec(types.Type):
    """A vector of ``lanes`` float32 values held in registers."""

    def __init__(self, lanes: int) -> None:
        self.lanes = lanes
        super().__init__(name=f"f32x{lanes}")


@register_model(F32Vec)
class _F32VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):  # type: ignore[no-untyped-def]
        super().__init__(dmm, fe_type, ir.VectorType(ir.FloatType(), fe_type.lanes))


_I32 = ir.IntType(32)


def _lanes(t: types.Type) -> int:
    if not isinstance(t, types.IntegerLiteral):
        raise TypingError("the lane count must be a literal int")
    return int(t.literal_value)


def _ptr(context, builder, arrty, arr, idx):  # type: ignore[no-untyped-def]
    ary = context.make_array(arrty)(context, builder, arr)
    return builder.gep(ary.data, [idx])


def _f32(context, builder, val, ty):  # type: ignore[no-untyped-def]
    return context.cast(builder, val, ty, types.float32)


def _splat(builder, scalar, lanes):  # type: ignore[no-untyped-def]
    vty = ir.VectorType(ir.FloatType(), lanes)
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, lanes), [0] * lanes))


@intrinsic
def ld(typingctx, arr, idx):  # type: ignore[no-untyped-def]
    """``arr[idx]`` as float32, unchecked."""
    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        val = builder.load(_ptr(context, builder, sig.args[0], args[0], args[1]))
        return _f32(context, builder, val, sig.args[0].dtype)
    return types.float32(arr, idx), codegen


@intrinsic
def st(typingctx, arr, idx, val):  # type: ignore[no-untyped-def]
    """``arr[idx] = val``, unchecked."""
    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        value = _f32(context, builder, args[2], sig.args[2])
        builder.store(value, _ptr(context, builder, sig.args[0], args[0], args[1]))
        return context.get_dummy_value()
    return types.void(arr, idx, val), codegen


@intrinsic
def prefetch(typingctx, arr, idx):  # type: ignore[no-untyped-def]
    """A read prefetch of the cache line holding ``arr[idx]`` into every cache
    level (``llvm.prefetch``, locality 3: x86's prefetcht0). A hint: it never
    faults, so ``idx`` may point past the array."""
    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        ptr = builder.bitcast(_ptr(context, builder, sig.args[0], args[0], args[1]), ir.IntType(8).as_pointer())
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, _I32, _I32, _I32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [ptr, ir.Constant(_I32, 0), ir.Constant(_I32, 3), ir.Constant(_I32, 1)])
        return context.get_dummy_value()
    return types.void(arr, idx), codegen


@intrinsic
def ldi(typingctx, arr, idx):  # type: ignore[no-untyped-def]
    """The int32 whose bits are stored at ``arr[idx]``, as int64, unchecked:
    index tables (``IndexLoad``) travel in float32 arrays, the one argument
    type of every stage."""
    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        ptr = _ptr(context, builder, sig.args[0], args[0], args[1])
        return builder.sext(builder.load(builder.bitcast(ptr, _I32.as_pointer())), ir.IntType(64))
    return types.int64(arr, idx), codegen


@intrinsic(prefer_literal=True)
def vld(typingctx, arr, idx, lanes):  # type: ignore[no-untyped-def]
    """``arr[idx : idx + lanes]`` as one vector."""
    n = _lanes(lanes)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        ptr = _ptr(context, builder, sig.args[0], args[0], args[1])
        return builder.load(builder.bitcast(ptr, ir.VectorType(ir.FloatType(), n).as_pointer()), align=4)
    return F32Vec(n)(arr, idx, lanes), codegen


def _clamp(builder, v, lo: int, hi: int):  # type: ignore[no-untyped-def]
    """``min(max(v, lo), hi)`` for an i64 ``v`` and constant bounds."""
    i64 = ir.IntType(64)
    v = builder.select(builder.icmp_signed("<", v, ir.Constant(i64, lo)), ir.Constant(i64, lo), v)
    return builder.select(builder.icmp_signed(">", v, ir.Constant(i64, hi)), ir.Constant(i64, hi), v)


@intrinsic(prefer_literal=True)
def vldmask(typingctx, arr, base, stride, lo, hi, lanes):  # type: ignore[no-untyped-def]
    """Lane i = ``arr[base + i*stride]`` if ``lo <= i*stride < hi``, else 0.

    One load of the ``lanes*stride`` elements that span the lanes, then a
    shuffle that keeps every ``stride``-th: a strided row costs one load
    instead of ``lanes``. Border lanes of a padded convolution are masked:
    a masked load (``vmaskmovps``) never touches memory past the mask,
    which matters only where the span runs off the array; elsewhere, on a
    machine without AVX-512, a plain load and a select (``_unless_inside``).
    """
    n, step = _lanes(lanes), _lanes(stride)
    width = n * step

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        # The mask as an integer, bit j set for lo <= j < hi: two shifts and
        # an and-not, then one move into a mask register. (Comparing a lane
        # index vector with lo and hi took 16 vector instructions a load.)
        bits = ir.IntType(width + 1)  # room for 1 << width
        lo_v = _clamp(builder, context.cast(builder, args[3], sig.args[3], types.int64), 0, width)
        hi_v = _clamp(builder, context.cast(builder, args[4], sig.args[4], types.int64), 0, (n - 1) * step + 1)
        one = ir.Constant(bits, 1)

        def below(v):  # type: ignore[no-untyped-def]
            """The integer with the low ``v`` bits set."""
            if bits.width != 64:
                v = builder.trunc(v, bits) if bits.width < 64 else builder.zext(v, bits)
            return builder.sub(builder.shl(one, v), one)

        below_hi, below_lo = below(hi_v), below(lo_v)
        mask = builder.bitcast(builder.trunc(builder.and_(below_hi, builder.not_(below_lo)), ir.IntType(width)),
                               ir.VectorType(ir.IntType(1), width))
        fty = ir.VectorType(ir.FloatType(), width)
        ptr = builder.bitcast(_ptr(context, builder, sig.args[0], args[0], args[1]), fty.as_pointer())

        def masked():  # type: ignore[no-untyped-def]
            fnty = ir.FunctionType(fty, [fty.as_pointer(), _I32, mask.type, fty])
            fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.load.v{width}f32.p0")
            return _every(builder, builder.call(fn, [ptr, ir.Constant(_I32, 4), mask, ir.Constant(fty, None)]), step, n)

        def plain():  # type: ignore[no-untyped-def]
            lane_mask = _every(builder, mask, step, n)
            zero = ir.Constant(ir.VectorType(ir.FloatType(), n), None)
            return builder.select(lane_mask, _every(builder, builder.load(ptr, align=4), step, n), zero)

        return _unless_inside(context, builder, sig, args, width, plain, masked)
    return F32Vec(n)(arr, base, stride, lo, hi, lanes), codegen


def _every(builder, wide, step: int, n: int):  # type: ignore[no-untyped-def]
    """Lanes 0, step, 2*step, ... of ``wide`` (``wide`` itself for step 1)."""
    if step == 1:
        return wide
    return builder.shuffle_vector(wide, wide, ir.Constant(ir.VectorType(_I32, n), [i * step for i in range(n)]))


def _unless_inside(context, builder, sig, args, count: int, plain, masked):  # type: ignore[no-untyped-def]
    """``plain()`` where elements ``base .. base + count`` of the array (the
    intrinsic's first two arguments) all exist, else ``masked()``, on a
    machine without AVX-512; just ``masked()`` with it. Why: AVX-512 masks
    are free (a k register on an ordinary load or store), but AVX2's
    ``vmaskmovps`` is slow where it is microcoded (measured on a Zen 1:
    about 10 cycles a load against 1 for a plain one), and only a mask
    that runs off the array needs it: a branch, which the tiles predict."""
    if _masks_are_free():
        return masked()
    i64 = ir.IntType(64)
    start = context.cast(builder, args[1], sig.args[1], types.int64)
    size = context.make_array(sig.args[0])(context, builder, args[0]).nitems
    inside = builder.and_(builder.icmp_signed(">=", start, ir.Constant(i64, 0)),
                          builder.icmp_signed("<=", builder.add(start, ir.Constant(i64, count)), size))
    with builder.if_else(inside, likely=True) as (then, otherwise):
        with then:
            fast = plain()
            fast_block = builder.block
        with otherwise:
            slow = masked()
            slow_block = builder.block
    phi = builder.phi(fast.type)
    phi.add_incoming(fast, fast_block)
    phi.add_incoming(slow, slow_block)
    return phi


def _masks_are_free() -> bool:
    from convtune.schedules.target import host_target

    return "avx512f" in host_target().isa


@intrinsic
def vst(typingctx, arr, idx, vec):  # type: ignore[no-untyped-def]
    """``arr[idx : idx + lanes] = vec``."""
    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        ptr = _ptr(context, builder, sig.args[0], args[0], args[1])
        builder.store(args[2], builder.bitcast(ptr, args[2].type.as_pointer()), align=4)
        return context.get_dummy_value()
    return types.void(arr, idx, vec), codegen


@intrinsic(prefer_literal=True)
def vgather(typingctx, arr, base, stride, lanes):  # type: ignore[no-untyped-def]
    """``arr[base + stride * i]`` for each lane ``i``."""
    n = _lanes(lanes)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        base_v, stride_v = args[1], context.cast(builder, args[2], sig.args[2], sig.args[1])
        v = ir.Constant(ir.VectorType(ir.FloatType(), n), ir.Undefined)
        for i in range(n):
            off = builder.add(base_v, builder.mul(stride_v, ir.Constant(base_v.type, i)))
            loaded = builder.load(_ptr(context, builder, sig.args[0], args[0], off))
            x = _f32(context, builder, loaded, sig.args[0].dtype)
            v = builder.insert_element(v, x, ir.Constant(_I32, i))
        return v
    return F32Vec(n)(arr, base, stride, lanes), codegen


@intrinsic
def vscatter(typingctx, arr, base, stride, vec):  # type: ignore[no-untyped-def]
    """``arr[base + stride * i] = vec[i]`` for each lane ``i``."""
    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        base_v, stride_v = args[1], context.cast(builder, args[2], sig.args[2], sig.args[1])
        for i in range(sig.args[3].lanes):
            off = builder.add(base_v, builder.mul(stride_v, ir.Constant(base_v.type, i)))
            builder.store(builder.extract_element(args[3], ir.Constant(_I32, i)),
                          _ptr(context, builder, sig.args[0], args[0], off))
        return context.get_dummy_value()
    return types.void(arr, base, stride, vec), codegen


@intrinsic(prefer_literal=True)
def vsplat(typingctx, x, lanes):  # type: ignore[no-untyped-def]
    """A vector with ``x`` in every lane (``vbroadcastss``)."""
    n = _lanes(lanes)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return _splat(builder, _f32(context, builder, args[0], sig.args[0]), n)
    return F32Vec(n)(x, lanes), codegen


@intrinsic
def vfromtuple(typingctx, tup):  # type: ignore[no-untyped-def]
    """A vector from a tuple of scalars, one per lane."""
    if not isinstance(tup, types.UniTuple):
        raise TypingError("vfromtuple takes a tuple of numbers of one type")
    n = tup.count

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        v = ir.Constant(ir.VectorType(ir.FloatType(), n), ir.Undefined)
        for i in range(n):
            x = _f32(context, builder, builder.extract_value(args[0], i), tup.dtype)
            v = builder.insert_element(v, x, ir.Constant(_I32, i))
        return v
    return F32Vec(n)(tup), codegen


def _vector_parts(parts: types.Type) -> tuple[list[tuple[int, int]], int]:
    """(positions, lanes) of the vectors in a tuple of tuples of vectors."""
    if not (isinstance(parts, types.BaseTuple) and all(
            isinstance(p, types.UniTuple) and isinstance(p.dtype, F32Vec) for p in parts)):
        raise TypingError("expected a tuple of tuples of vectors")
    lanes = parts[0].dtype.lanes
    if any(p.dtype.lanes != lanes for p in parts):
        raise TypingError("expected vectors of one width")
    return [(i, j) for i, p in enumerate(parts) for j in range(p.count)], lanes


def _zip_rounds(builder, vs: list, lanes: int) -> list:  # type: ignore[no-untyped-def, type-arg]
    """The transpose of a power-of-two number ``B`` of ``lanes``-wide vectors:
    ``log2(B)`` rounds of zipping vector ``i`` with vector ``i + B/2`` (two
    two-source shuffles a pair, one ``vpermt2ps`` each on AVX-512). Lane
    ``j*B + i`` of the concatenated result is lane ``j`` of input ``i``.
    Vectors of another width are first widened to a power of two, with
    undefined lanes that come out after the ``lanes*B`` defined ones."""
    wide = 1 << (lanes - 1).bit_length()
    if wide != lanes:
        grow = ir.Constant(ir.VectorType(_I32, wide), list(range(lanes)) + [lanes] * (wide - lanes))
        undef = ir.Constant(ir.VectorType(ir.FloatType(), lanes), ir.Undefined)
        vs, lanes = [builder.shuffle_vector(x, undef, grow) for x in vs], wide
    b, half = len(vs), lanes // 2
    zip_lo = ir.Constant(ir.VectorType(_I32, lanes), [x for j in range(half) for x in (j, lanes + j)])
    zip_hi = ir.Constant(ir.VectorType(_I32, lanes), [x for j in range(half, lanes) for x in (j, lanes + j)])
    for _ in range(b.bit_length() - 1):
        vs = [z for i in range(b // 2) for z in (builder.shuffle_vector(vs[i], vs[i + b // 2], zip_lo),
                                                builder.shuffle_vector(vs[i], vs[i + b // 2], zip_hi))]
    return vs


def _concat(builder, vs: list):  # type: ignore[no-untyped-def, type-arg]
    while len(vs) > 1:
        width = vs[0].type.count
        both = ir.Constant(ir.VectorType(_I32, 2 * width), list(range(2 * width)))
        vs = [builder.shuffle_vector(vs[i], vs[i + 1], both) for i in range(0, len(vs), 2)]
    return vs[0]


@intrinsic
def vinterleave(typingctx, parts):  # type: ignore[no-untyped-def]
    """``B`` vectors of ``L`` lanes zipped into one of ``B*L``: lane
    ``j*B + i`` is lane ``j`` of vector ``i`` (a B x L transpose). The
    vectors come as a tuple of tuples (see ``render_numba``); ``B`` is a
    power of two. LLVM stores the result as the ``B`` vectors it is made of.
    """
    where, lanes = _vector_parts(parts)
    b = len(where)
    if b & (b - 1):
        raise TypingError("vinterleave needs a power-of-two number of vectors")

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        vs = [builder.extract_value(builder.extract_value(args[0], i), j) for i, j in where]
        flat = _concat(builder, _zip_rounds(builder, vs, lanes))
        if flat.type.count == b * lanes:
            return flat
        return builder.shuffle_vector(flat, flat, ir.Constant(ir.VectorType(_I32, b * lanes), list(range(b * lanes))))
    return F32Vec(b * lanes)(parts), codegen


@intrinsic(prefer_literal=True)
def vstrows(typingctx, arr, base, stride, parts):  # type: ignore[no-untyped-def]
    """``arr[base + l*stride + i] = vecs[i][l]``: ``T`` vectors of ``L``
    lanes written transposed, as ``L`` rows of ``T`` consecutive elements.

    The vectors are padded (with undefined lanes) to a power of two ``B``,
    transposed by zip rounds, and each row is one store of ``B`` lanes,
    masked to its first ``T``: ``L`` vector stores where the scatters were
    ``T*L`` scalar ones.
    """
    return types.void(arr, base, stride, parts), _rows_codegen(parts, _lanes(stride), masked=False)


@intrinsic(prefer_literal=True)
def vstrowsmask(typingctx, arr, base, stride, lo, hi, parts):  # type: ignore[no-untyped-def]
    """``vstrows`` writing only rows ``lo <= l < hi`` (the output channels of
    a tile's last channel block that exist)."""
    return types.void(arr, base, stride, lo, hi, parts), _rows_codegen(parts, _lanes(stride), masked=True)


def _rows_codegen(parts: types.Type, step: int, masked: bool):  # type: ignore[no-untyped-def]
    """The code of ``vstrows`` (args: arr, base, stride, parts) or, when
    ``masked``, of ``vstrowsmask`` (args: arr, base, stride, lo, hi, parts)."""
    where, lanes = _vector_parts(parts)
    t = len(where)
    b = 1 << (t - 1).bit_length()

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        vty = ir.VectorType(ir.FloatType(), lanes)
        vs = [builder.extract_value(builder.extract_value(args[-1], i), j) for i, j in where]
        flat = _concat(builder, _zip_rounds(builder, vs + [ir.Constant(vty, ir.Undefined)] * (b - t), lanes))
        rty = ir.VectorType(ir.FloatType(), b)
        mask = ir.Constant(ir.VectorType(ir.IntType(1), b), [1] * t + [0] * (b - t))
        masked_store = None if t == b else cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [rty, rty.as_pointer(), _I32, mask.type]),
            f"llvm.masked.store.v{b}f32.p0")
        for row in range(lanes):
            lanes_of_row = ir.Constant(ir.VectorType(_I32, b), list(range(row * b, row * b + b)))
            value = builder.shuffle_vector(flat, flat, lanes_of_row)
            off = builder.add(args[1], ir.Constant(args[1].type, row * step))
            ptr = builder.bitcast(_ptr(context, builder, sig.args[0], args[0], off), rty.as_pointer())
            with builder.if_then(_in_range(context, builder, sig, args, row)) if masked else nullcontext():
                if masked_store is None:
                    builder.store(value, ptr, align=4)
                else:
                    builder.call(masked_store, [value, ptr, ir.Constant(_I32, 4), mask])
        return context.get_dummy_value()
    return codegen


def _in_range(context, builder, sig, args, i: int):  # type: ignore[no-untyped-def]
    """``lo <= i < hi`` for the constant ``i`` and the intrinsic's ``lo`` and
    ``hi`` arguments (its 4th and 5th)."""
    lo, hi = (context.cast(builder, args[n], sig.args[n], types.int64) for n in (3, 4))
    at = ir.Constant(ir.IntType(64), i)
    return builder.and_(builder.icmp_signed("<=", lo, at), builder.icmp_signed("<", at, hi))


def _range_mask(context, builder, sig, args, offsets: list[int]):  # type: ignore[no-untyped-def]
    """The ``<n x i1>`` mask of ``lo <= offsets[i] < hi`` (``lo``, ``hi``: the
    intrinsic's 4th and 5th arguments): two vector compares."""
    i64, n = ir.IntType(64), len(offsets)

    def splat(k: int):  # type: ignore[no-untyped-def]
        x = context.cast(builder, args[k], sig.args[k], types.int64)
        v = builder.insert_element(ir.Constant(ir.VectorType(i64, n), ir.Undefined), x, ir.Constant(_I32, 0))
        return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, n), [0] * n))

    at = ir.Constant(ir.VectorType(i64, n), offsets)
    return builder.and_(builder.icmp_signed("<=", splat(3), at), builder.icmp_signed("<", at, splat(4)))


def _pointers(context, builder, sig, args, step: int, n: int):  # type: ignore[no-untyped-def]
    """The vector of addresses ``&arr[base + i*step]`` (llvmlite has no
    vector GEP: integer arithmetic on the base address)."""
    i64 = ir.IntType(64)
    base = builder.ptrtoint(_ptr(context, builder, sig.args[0], args[0], args[1]), i64)
    v = builder.insert_element(ir.Constant(ir.VectorType(i64, n), ir.Undefined), base, ir.Constant(_I32, 0))
    v = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, n), [0] * n))
    v = builder.add(v, ir.Constant(ir.VectorType(i64, n), [4 * i * step for i in range(n)]))
    return builder.inttoptr(v, ir.VectorType(ir.PointerType(ir.FloatType()), n))


@intrinsic(prefer_literal=True)
def vstmask(typingctx, arr, base, stride, lo, hi, vec):  # type: ignore[no-untyped-def]
    """``arr[base + i*stride] = vec[i]`` for the lanes ``lo <= i < hi`` only
    (note: lanes, where ``vldmask`` counts elements): one masked store
    (``vmaskmovps``, or a k-masked ``vmovups``), or when strided one masked
    scatter (``vscatterdps`` on AVX-512; LLVM splits it into scalar stores
    where there is none). Without AVX-512 a full mask stores plainly (why:
    ``_unless_inside``); a partial one may not: another thread may own the
    lanes it skips."""
    step = _lanes(stride)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        n, vty = sig.args[5].lanes, args[5].type
        ptr = builder.bitcast(_ptr(context, builder, sig.args[0], args[0], args[1]), vty.as_pointer())

        def masked() -> None:
            mask = _range_mask(context, builder, sig, args, list(range(n)))
            if step == 1:
                name, where = f"llvm.masked.store.v{n}f32.p0", ptr
            else:
                name, where = f"llvm.masked.scatter.v{n}f32.v{n}p0", _pointers(context, builder, sig, args, step, n)
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [vty, where.type, _I32, mask.type]), name)
            builder.call(fn, [args[5], where, ir.Constant(_I32, 4), mask])

        def plain() -> None:
            builder.store(args[5], ptr, align=4)

        if step == 1 and not _masks_are_free():
            lo, hi = (context.cast(builder, args[k], sig.args[k], types.int64) for k in (3, 4))
            i64 = ir.IntType(64)
            full = builder.and_(builder.icmp_signed("<=", lo, ir.Constant(i64, 0)),
                                builder.icmp_signed(">=", hi, ir.Constant(i64, n)))
            with builder.if_else(full, likely=True) as (then, otherwise):
                with then:
                    plain()
                with otherwise:
                    masked()
        else:
            masked()
        return context.get_dummy_value()
    return types.void(arr, base, stride, lo, hi, vec), codegen


@intrinsic(prefer_literal=True)
def vgathermask(typingctx, arr, base, stride, lo, hi, lanes):  # type: ignore[no-untyped-def]
    """Lane i = ``arr[base + i*stride]`` if ``lo <= i*stride < hi``, else 0
    (``vldmask``'s rule) for strides too wide for one load: one masked
    gather (``vgatherdps`` on AVX-512 and AVX2)."""
    n, step = _lanes(lanes), _lanes(stride)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        fty = ir.VectorType(ir.FloatType(), n)
        ptrs = _pointers(context, builder, sig, args, step, n)
        mask = _range_mask(context, builder, sig, args, [i * step for i in range(n)])
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(fty, [ptrs.type, _I32, mask.type, fty]),
                                            f"llvm.masked.gather.v{n}f32.v{n}p0")
        return builder.call(fn, [ptrs, ir.Constant(_I32, 4), mask, ir.Constant(fty, None)])
    return F32Vec(n)(arr, base, stride, lo, hi, lanes), codegen


@intrinsic(prefer_literal=True)
def vget(typingctx, vec, lane):  # type: ignore[no-untyped-def]
    """Lane ``lane`` (a literal) of a vector, as float32."""
    if not isinstance(lane, types.IntegerLiteral):
        raise TypingError("the lane must be a literal int")

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return builder.extract_element(args[0], ir.Constant(_I32, lane.literal_value))
    return types.float32(vec, lane), codegen


def _binary(name: str):  # type: ignore[no-untyped-def]
    @intrinsic
    def op(typingctx, a, b):  # type: ignore[no-untyped-def]
        def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
            x, y = args
            if name == "add":
                return builder.fadd(x, y)
            if name == "sub":
                return builder.fsub(x, y)
            if name == "mul":
                return builder.fmul(x, y)
            # min/max as compare-and-select, like the scalar path.
            return builder.select(builder.fcmp_ordered(">" if name == "max" else "<", x, y), x, y)
        return a(a, b), codegen
    op.__name__ = op.__qualname__ = f"v{name}"
    op.__doc__ = f"Lane-wise {name} of two vectors."
    return op


vadd = _binary("add")
vsub = _binary("sub")
vmul = _binary("mul")
vmin = _binary("min")
vmax = _binary("max")


@intrinsic
def vfma(typingctx, a, b, c):  # type: ignore[no-untyped-def]
    """``a * b + c`` with one rounding (``vfmadd231ps``)."""
    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        fnty = ir.FunctionType(args[0].type, [args[0].type] * 3)
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.fma.v{a.lanes}f32")
        return builder.call(fn, args)
    return a(a, b, c), codegen


@intrinsic(prefer_literal=True)
def vselect(typingctx, a, op, b, t, f):  # type: ignore[no-untyped-def]
    """Lane-wise ``t if a <op> b else f``; ``op`` is a literal like '>'."""
    if not isinstance(op, types.StringLiteral):
        raise TypingError("the comparison must be a literal string")
    cmp = op.literal_value

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return builder.select(builder.fcmp_ordered(cmp, args[0], args[2]), args[3], args[4])
    return t(a, op, b, t, f), codegen


def _call_address(context, builder, addr, argtys, vals):  # type: ignore[no-untyped-def]
    """Call the compiled numba function at integer address ``addr`` with
    ``vals`` (of types ``argtys``); an exception it raises propagates."""
    fnty = context.call_conv.get_function_type(types.void, argtys)
    fnptr = builder.inttoptr(addr, fnty.as_pointer())
    status, _ = context.call_conv.call_function(builder, fnptr, types.void, argtys, vals)
    with cgutils.if_unlikely(builder, status.is_error):
        context.call_conv.return_status_propagate(builder, status)
    return context.get_dummy_value()


def _tuple_items(builder, tup, n):  # type: ignore[no-untyped-def]
    return [builder.extract_value(tup, i) for i in range(n)]


@intrinsic
def call_stage(typingctx, addr, index, bufs):  # type: ignore[no-untyped-def]
    """Call the compiled stage at address ``addr`` as ``stage(index, *bufs)``.

    Why: Numba's parfor lowering re-types and re-compiles a ``prange`` body
    per kernel, which tripled build time. Kernels are instead compiled as
    serial stage functions, and one generic driver (``codegen.launch``),
    compiled once, runs them over a ``prange`` through this call.
    """
    if not isinstance(bufs, types.BaseTuple):
        raise TypingError("call_stage takes the buffers as a tuple")
    argtys = (types.int64,) + tuple(bufs)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        addr_v, idx_v, tup_v = args
        vals = [context.cast(builder, idx_v, sig.args[1], types.int64), *_tuple_items(builder, tup_v, len(bufs))]
        return _call_address(context, builder, addr_v, argtys, vals)
    return types.void(addr, index, bufs), codegen


@intrinsic
def call_native(typingctx, addr, args):  # type: ignore[no-untyped-def]
    """Call the compiled function at address ``addr`` (returning nothing)
    with the elements of the tuple ``args``.

    Why: a model's driver (``codegen.model_driver``) is cached on disk and
    calls parallel functions (the stage driver, the pool kernels). Calling
    them directly links their code into the cached driver, and a driver
    cached that way segfaulted every later process that loaded it (numba
    issue 8578: a cached function calling a ``parallel=True`` one). Through
    an address taken in the running process, the cached driver holds no
    code of theirs.
    """
    if not isinstance(args, types.BaseTuple):
        raise TypingError("call_native takes the arguments as a tuple")

    def codegen(context, builder, sig, llargs):  # type: ignore[no-untyped-def]
        addr_v, tup_v = llargs
        return _call_address(context, builder, addr_v, tuple(args), _tuple_items(builder, tup_v, len(args)))
    return types.void(addr, args), codegen


@intrinsic(prefer_literal=True)
def array_at(typingctx, address, size, dtype):  # type: ignore[no-untyped-def]
    """The flat array of ``size`` elements of ``dtype`` (a literal numpy
    type name) at ``address``, owning nothing: its memory must outlive it.

    Why: a model's driver (``codegen.model_driver``) took its arrays as one
    tuple argument, which numba passes as seven scalars an array: resnet18's
    segment of 116 arrays took 4.6 s to compile, mostly LLVM on that argument
    list (2.5 s with the addresses in one int64 array, each array made here).
    """
    if not isinstance(dtype, types.StringLiteral):
        raise TypingError("array_at: the dtype must be a literal string")
    aryty = types.Array(getattr(types, dtype.literal_value), 1, "C")

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        ary = make_array(aryty)(context, builder)
        data = builder.inttoptr(args[0], context.get_data_type(aryty.dtype).as_pointer())
        itemsize = context.get_constant(types.intp, aryty.dtype.bitwidth // 8)
        size_v = context.cast(builder, args[1], sig.args[1], types.intp)
        populate_array(ary, data=data, shape=[size_v], strides=[itemsize], itemsize=itemsize, meminfo=None)
        return ary._getvalue()
    return aryty(address, size, dtype), codegen


@njit(cache=True)
def checked(arr, first, last):  # type: ignore[no-untyped-def]
    """``first`` if elements ``first..last`` of ``arr`` exist, else IndexError.
    Kernels rendered with ``CONVTUNE_CHECK_BOUNDS=1`` wrap every access in it."""
    if first < 0 or last >= arr.shape[0]:
        raise IndexError("convtune kernel accessed memory outside a buffer")
    return first
