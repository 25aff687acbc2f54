"""SIMD building blocks of the ternary row kernels (ternary.py, TQ2_0 and TQ1_0): int16
accumulation of a whole 256-block, the base-3 trit extraction of TQ1_0 and the block tail in
128-bit lanes.

See vector_ir.py for the vector types and conventions: array offsets are in elements of the
array, nothing checks bounds, the callers own that. Every intrinsic has a generic-IR lowering
(vector_ir.PORTABLE) that gives the same integers.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .vector_ir import (
    I8,
    I16,
    I32,
    PORTABLE,
    VF4,
    F32x4,
    U8x32,
    V8x16,
    V8x32,
    V16x8,
    V16x16,
    V16x32,
    Vec,
    _as_intp,
    _const,
    _idx,
    _load,
    _opaque,
    _ptr,
    _splat,
    _x86,
)

# -- int16 accumulation over a whole 256-block ----------------------------------------------------
# With one activation scale per 256 weights (ternary.quantize_act_k), the 8 groups of a block
# share every factor but the integers, so their pmaddubsw pair sums add up in int16 and one
# pmaddwd + one int -> float conversion serve the whole block:
#
#     I16x16  <16 x i16>  lane j = sum over groups of u[2j] * x[2j] + u[2j+1] * x[2j+1]
#
# Bound: u <= 3 (a TQ2_0 code may be 3 in a corrupt block), |x| <= 127: one pair <= 762, the 8
# groups of a block <= 6096 < 32767, so no lane saturates or wraps, and the AVX2 and portable
# lowerings agree exactly. TQ2_0 also multiplies codes left in place, u << 2 (<= 12: one pair
# <= 3048, its four factor-4 groups <= 12192), and shifts that sum back with sra16 (exact: a
# multiple of 4).
I16x16 = Vec("I16x16", V16x16)


@intrinsic
def maddubs(typingctx, u, xq, xoff):
    """Pair sums of 32 unsigned weights (each <= 48) times ``xq[xoff:xoff+32]`` (int8):
    lane j = u[2j] * x[2j] + u[2j+1] * x[2j+1] (vpmaddubsw; never saturates at these bounds)."""

    def codegen(context, builder, sig, args):
        uv, xarr, xo = args
        s = builder.load(_ptr(context, builder, sig.args[1], xarr,
                              _as_intp(context, builder, sig.args[2], xo), V8x32), align=1)
        if not PORTABLE:
            return _x86(builder, "llvm.x86.avx2.pmadd.ub.sw", V16x16, [uv, s])
        prod = builder.mul(builder.zext(uv, V16x32), builder.sext(s, V16x32))  # (32,) i16
        even = builder.shuffle_vector(prod, prod, _idx(range(0, 32, 2)))
        odd = builder.shuffle_vector(prod, prod, _idx(range(1, 32, 2)))
        return builder.add(even, odd)  # (16,) i16, exact

    return I16x16(u, xq, xoff), codegen


@intrinsic
def add16(typingctx, a, b):
    """a + b lane by lane (I16x16, wrapping; the callers stay within the bound above)."""

    def codegen(context, builder, sig, args):
        return builder.add(args[0], args[1])

    return I16x16(a, b), codegen


@intrinsic
def sra16(typingctx, a, k):
    """a >> k lane by lane, arithmetic (I16x16; ``k`` a scalar, the same for every lane)."""

    def codegen(context, builder, sig, args):
        k16 = builder.trunc(context.cast(builder, args[1], sig.args[1], types.int64), I16)
        return builder.ashr(args[0], _splat(builder, k16, V16x16))

    return I16x16(a, k), codegen


# -- TQ1_0: powers of 3 and trits, without byte multiplies ------------------------------------
@intrinsic(prefer_literal=True)
def pow3_halves(typingctx, v, n0, n1):
    """Wrapping u8 ``v * 3**k`` with shifts and adds (x86 has no byte multiply): lanes 0..15
    by 3**n0, lanes 16..31 by 3**n1, for integer constants 0 <= n0, n1 <= 4.

        v * 9 = (v << 3) + v        (a byte shift is vpsllw + vpand)
        v * 3 = v + v + v           (on a subset of lanes: v + ((v + v) & mask))
    """
    if not all(isinstance(t, types.IntegerLiteral) for t in (n0, n1)):
        return None
    ns0 = [n0.literal_value] * 16 + [n1.literal_value] * 16
    if not all(0 <= n <= 4 for n in ns0):
        return None

    def codegen(context, builder, sig, args):
        out = args[0]
        ns = list(ns0)
        while any(ns):
            if min(ns) >= 2:  # every lane times 9
                out = builder.add(builder.shl(out, _const(V8x32, [3] * 32)), out)
                ns = [n - 2 for n in ns]
                out = _opaque(builder, out)
            elif min(ns) >= 1:  # every lane times 3
                out = builder.add(out, builder.add(out, out))
                ns = [n - 1 for n in ns]
                out = _opaque(builder, out)
            else:  # times 3 where still needed
                live = _const(V8x32, [255 if n else 0 for n in ns])
                out = builder.add(out, builder.and_(builder.add(out, out), live))
                ns = [max(n - 1, 0) for n in ns]
                out = _opaque(builder, out)
        return out

    return U8x32(v, n0, n1), codegen


@intrinsic
def tq1_qh_merge(typingctx, y, a, off_qh):
    """The last TQ1_0 group, trits still packed: lanes 0..15 of ``y`` (qs[32 + i] * 81, mod
    256), then lane 16 + 4n + j = qh[j] * 3**n (mod 256) from the 4 bytes at ``off_qh``."""

    def codegen(context, builder, sig, args):
        yv, arr, o = args
        p = _ptr(context, builder, sig.args[1], arr, _as_intp(context, builder, sig.args[2], o),
                 ir.VectorType(I8, 4))
        qh = builder.load(p, align=1)  # (4,)
        qh16 = builder.shuffle_vector(qh, qh, _idx([i % 4 for i in range(16)]))  # (16,)
        qh16 = builder.mul(qh16, _const(V8x16, [3 ** (i // 4) for i in range(16)]))
        lo = builder.shuffle_vector(yv, yv, _idx(range(16)))  # (16,)
        return builder.shuffle_vector(lo, qh16, _idx(range(32)))

    return U8x32(y, a, off_qh), codegen


@intrinsic(prefer_literal=True)
def xor_halves(typingctx, v, k0, k1):
    """Lanes 0..15 of ``v`` xor k0, lanes 16..31 xor k1 (integer constants 0..255)."""
    if not all(isinstance(t, types.IntegerLiteral) for t in (k0, k1)):
        return None
    ks = [k0.literal_value] * 16 + [k1.literal_value] * 16

    def codegen(context, builder, sig, args):
        return builder.xor(args[0], _const(V8x32, [k & 255 for k in ks]))

    return U8x32(v, k0, k1), codegen


@intrinsic
def trit_cmp(typingctx, v):
    """TQ1_0 trit extraction from bytes stored offset, v = q ^ 128 (signed: q - 128): the trit
    (3q) >> 8 is [q >= 86] + [q >= 171] = [v > -43] + [v > 42], computed as |m1 + m2| from the
    two compare masks (2 vpcmpgtb, vpaddb, vpabsb: 4 operations and no zero register; the
    earlier vpsubusb / vpavgb form took 5). The offset survives the powers of 3:
    128 * 3**n = 128 (mod 256)."""

    def codegen(context, builder, sig, args):
        (q,) = args
        m1 = _opaque(builder, builder.sext(builder.icmp_signed(">", q, _const(V8x32, [-43] * 32)),
                                           V8x32))
        m2 = _opaque(builder, builder.sext(builder.icmp_signed(">", q, _const(V8x32, [42] * 32)),
                                           V8x32))
        s = builder.add(m1, m2)  # (32,) i8: 0, -1 or -2
        fabs = builder.module.declare_intrinsic(
            "llvm.abs.v32i8", fnty=ir.FunctionType(V8x32, [V8x32, ir.IntType(1)]))
        return builder.call(fabs, [s, ir.Constant(ir.IntType(1), 0)])  # vpabsb

    return U8x32(v), codegen


# -- the block tail in 128-bit lanes (fewer uops than 256-bit on znver1) --------------------------
# A block's I16x16 sums are folded to 8 lanes (lane j + lane j + 8: only the block total matters),
# less 8 int16 activation sums of the block, then pmaddwd to 4 int32, converted and scaled in
# F32x4. Bound: the callers' lanes are <= 6096 in magnitude (see I16x16 above, after TQ2_0's
# shift), so a folded lane <= 12192, less a 32-element activation sum (<= 4064): <= 16256.
@intrinsic
def scale4(typingctx, w, off, xd, xoff):
    """[d] * 4 * xd[xoff : xoff + 4], d the f16 at byte ``off`` of ``w`` (F32x4; xd float32,
    the activation scale stored 4 times per block by ternary.quantize_act_k)."""

    def codegen(context, builder, sig, args):
        wa, o, xa, xo = args
        h = builder.load(_ptr(context, builder, sig.args[0], wa,
                              _as_intp(context, builder, sig.args[1], o), ir.HalfType()), align=1)
        d = builder.fpext(_splat(builder, h, ir.VectorType(ir.HalfType(), 4)), VF4)
        return builder.fmul(d, _load(context, builder, sig, xa, xo, VF4, k=2))

    return F32x4(w, off, xd, xoff), codegen


@intrinsic
def fold_fma4(typingctx, acc, s16, xs, xoff, sv):
    """acc + float(t) * sv, t (4 x i32) the pair sums of lo + hi - xs, where lo / hi are lanes
    0..7 / 8..15 of the I16x16 ``s16`` and xs the 8 int16 at element offset ``xoff`` of ``xs``
    (any dtype: the bytes are reinterpreted)."""

    def codegen(context, builder, sig, args):
        a, v, xa, xo, sc = args
        lo = builder.shuffle_vector(v, v, _idx(range(8)))
        hi = builder.shuffle_vector(v, v, _idx(range(8, 16)))
        h = builder.sub(builder.add(lo, hi), _load(context, builder, sig, xa, xo, V16x8, k=2))
        if not PORTABLE:
            t = _x86(builder, "llvm.x86.sse2.pmadd.wd", ir.VectorType(I32, 4),
                     [h, _const(V16x8, [1] * 8)])
        else:
            V32x4 = ir.VectorType(I32, 4)
            t = builder.add(builder.sext(builder.shuffle_vector(h, h, _idx([0, 2, 4, 6])), V32x4),
                            builder.sext(builder.shuffle_vector(h, h, _idx([1, 3, 5, 7])), V32x4))
        prod = builder.fmul(builder.sitofp(t, VF4), sc, flags=("contract",))
        return builder.fadd(a, prod, flags=("contract",))

    return F32x4(acc, s16, xs, xoff, sv), codegen
