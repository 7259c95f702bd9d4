"""exp, sigmoid and tanh for generated kernels, as inline LLVM IR.

Why not ``llvm.exp.v16f32``: LLVM lowers it to one libm ``expf`` call per
lane (checked on this machine: 16 calls, with the vector spilled around each),
which would turn a fused activation into the slowest part of the kernel.
Here, as in SLEEF and oneDNN, exp is a range reduction ``x = n ln2 + r``
(``|r| <= ln2 / 2``, ``ln2`` split in two for Cody-Waite), Cephes' degree-7
polynomial in ``r`` by FMAs (about 1 ulp), and a scale by ``2^n`` built in the
exponent bits: straight-line vector code with no calls and no branches.

Each function takes a vector (``F32Vec``) or a float32 scalar (a guarded tail
or a scalar epilogue) and builds the same instructions for either type.
Their instructions carry their own fast-math flags (only ``contract``), so
numba's fastmath rewrite, which flags only unflagged instructions, leaves
them alone: reassociation would fold the two-part ``n * ln2`` back into one
and lose the reduction's precision.

Edge cases: exp gives inf above ~88.72, subnormals down to ~-103.9 and 0
below, NaN for NaN. sigmoid and tanh only ever take exp of a non-positive
number (``exp(-|x|)``), so nothing overflows and every division is by a
number in [1, 2]. The divisions are exact ``vdivps``: a reciprocal estimate
and a Newton step (what ``arcp`` with ``ninf`` allows) left sigmoid(0) and
sigmoid(inf) an ulp below 0.5 and 1.
"""
from __future__ import annotations

from typing import Callable

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from convtune.codegen.intrinsics import F32Vec

_FLAGS = ("contract",)
_LOG2E = 1.44269504088896341
_LN2_HI, _LN2_LO = 0.693359375, -2.12194440e-4  # Cephes: n * _LN2_HI is exact for |n| < 2^9
_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
"""exp(r) = 1 + r + r^2 * poly(r) on |r| <= ln2 / 2 (Cephes expf)."""
_EXP_LO, _EXP_HI = -104.0, 89.0
"""Inputs are clamped here: below, exp rounds to 0; above, it overflows to inf."""
_TANH_SMALL = 0.625
_TANH_POLY = (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1, -3.33332819422e-1)
"""tanh(x) = x + x^3 * poly(x^2) for |x| < 0.625 (Cephes tanhf), where
(1 - e) / (1 + e) would lose relative precision to cancellation."""

Build = Callable[[ir.IRBuilder, ir.Value], ir.Value]


def _like(ty: ir.Type, element: ir.Type) -> ir.Type:
    """``element`` with the shape of ``ty`` (scalar or vector)."""
    return ir.VectorType(element, ty.count) if isinstance(ty, ir.VectorType) else element


def _const(ty: ir.Type, value: float | int) -> ir.Constant:
    if isinstance(ty, ir.VectorType):
        return ir.Constant(ty, [value] * ty.count)
    return ir.Constant(ty, value)


def _call(builder: ir.IRBuilder, name: str, *args: ir.Value) -> ir.Value:
    """``llvm.<name>`` (fma, rint) on float32 scalars or vectors."""
    ty = args[0].type
    suffix = f"v{ty.count}f32" if isinstance(ty, ir.VectorType) else "f32"
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty] * len(args)), f"llvm.{name}.{suffix}")
    return builder.call(fn, args)


def _poly(builder: ir.IRBuilder, x: ir.Value, coefs: tuple[float, ...]) -> ir.Value:
    """Horner's rule with FMAs, highest coefficient first."""
    acc = _const(x.type, coefs[0])
    for c in coefs[1:]:
        acc = _call(builder, "fma", acc, x, _const(x.type, c))
    return acc


def _pow2(builder: ir.IRBuilder, n: ir.Value) -> ir.Value:
    """``2^n`` for an integer ``n`` in [-126, 127], from the exponent bits."""
    biased = builder.add(n, _const(n.type, 127))
    return builder.bitcast(builder.shl(biased, _const(n.type, 23)), _like(n.type, ir.FloatType()))


def build_exp(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """``exp(x)`` lane-wise, relative error about 1e-7 wherever it is normal."""
    ty = x.type
    lo, hi = _const(ty, _EXP_LO), _const(ty, _EXP_HI)
    above_lo = builder.select(builder.fcmp_ordered(">", x, lo, flags=_FLAGS), x, lo)  # NaN -> lo: finite from here
    xc = builder.select(builder.fcmp_ordered("<", above_lo, hi, flags=_FLAGS), above_lo, hi)
    n = _call(builder, "rint", builder.fmul(xc, _const(ty, _LOG2E), flags=_FLAGS))
    r = _call(builder, "fma", n, _const(ty, -_LN2_HI), xc)
    r = _call(builder, "fma", n, _const(ty, -_LN2_LO), r)
    p = _poly(builder, r, _EXP_POLY)
    er = builder.fadd(_call(builder, "fma", p, builder.fmul(r, r, flags=_FLAGS), r), _const(ty, 1.0), flags=_FLAGS)
    # 2^n in two factors: n reaches -150 and 128 after the clamp, outside
    # what one exponent field holds; the products round once, to the true
    # subnormal or to inf.
    ni = builder.fptosi(n, _like(ty, ir.IntType(32)))
    half = builder.ashr(ni, _const(ni.type, 1))
    y = builder.fmul(builder.fmul(er, _pow2(builder, half), flags=_FLAGS),
                     _pow2(builder, builder.sub(ni, half)), flags=_FLAGS)
    return builder.select(builder.fcmp_unordered("uno", x, x, flags=_FLAGS), x, y)


def _sign_split(builder: ir.IRBuilder, x: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(|x|, the sign bit of x as an integer)."""
    ity = _like(x.type, ir.IntType(32))
    bits = builder.bitcast(x, ity)
    sign = builder.and_(bits, _const(ity, -0x80000000))
    return builder.bitcast(builder.xor(bits, sign), x.type), sign


def build_sigmoid(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """``1 / (1 + exp(-x))`` as ``s = 1 / (1 + e)``, ``e = exp(-|x|)``, and
    ``e * s`` for negative x: the denominator stays in [1, 2] and the small
    results of negative x keep their relative precision."""
    ty = x.type
    a, _ = _sign_split(builder, x)
    e = build_exp(builder, builder.fneg(a, flags=_FLAGS))
    s = builder.fdiv(_const(ty, 1.0), builder.fadd(e, _const(ty, 1.0), flags=_FLAGS), flags=_FLAGS)
    negative = builder.fcmp_ordered("<", x, _const(ty, 0.0), flags=_FLAGS)
    return builder.select(negative, builder.fmul(e, s, flags=_FLAGS), s)


def build_tanh(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """``tanh(x)`` as ``sign(x) * (1 - e) / (1 + e)``, ``e = exp(-2|x|)``
    (in [0, 1]: no overflow at either end), or the odd polynomial near 0."""
    ty = x.type
    a, sign = _sign_split(builder, x)
    e = build_exp(builder, builder.fmul(a, _const(ty, -2.0), flags=_FLAGS))
    one = _const(ty, 1.0)
    big = builder.fdiv(builder.fsub(one, e, flags=_FLAGS), builder.fadd(one, e, flags=_FLAGS), flags=_FLAGS)
    z = builder.fmul(a, a, flags=_FLAGS)
    small = _call(builder, "fma", builder.fmul(_poly(builder, z, _TANH_POLY), z, flags=_FLAGS), a, a)
    t = builder.select(builder.fcmp_ordered("<", a, _const(ty, _TANH_SMALL), flags=_FLAGS), small, big)
    ity = sign.type
    return builder.bitcast(builder.or_(builder.bitcast(t, ity), sign), ty)


def _lanewise(name: str, build: Build):  # type: ignore[no-untyped-def]
    """A numba intrinsic applying ``build`` to a vector, or to a float as float32."""
    @intrinsic
    def fn(typingctx, x):  # type: ignore[no-untyped-def]
        if isinstance(x, F32Vec):
            ret = x
        elif isinstance(x, types.Float):
            ret = types.float32
        else:
            raise TypingError(f"v{name} takes a float32 vector or a float, got {x}")

        def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
            value = args[0] if isinstance(x, F32Vec) else context.cast(builder, args[0], sig.args[0], types.float32)
            return build(builder, value)
        return ret(x), codegen
    fn.__name__ = fn.__qualname__ = f"v{name}"
    fn.__doc__ = f"Lane-wise {name} of a float32 vector or scalar (see the module docstring)."
    return fn


vexp = _lanewise("exp", build_exp)
vsigmoid = _lanewise("sigmoid", build_sigmoid)
vtanh = _lanewise("tanh", build_tanh)
