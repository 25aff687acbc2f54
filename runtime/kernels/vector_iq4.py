"""Row kernels of IQ4_NL and IQ4_XS, and the table-lookup intrinsics they need.

Both types store 4-bit indices into ggml's 16-entry signed table ``kvalues_iq4nl``
(``gguflite.constants.IQ4NL_VALUES``), 16 bytes per 32 values with the layout of Q4_0
(byte i = [ q(16 + i) : 4 | q(i) : 4 ]):

    IQ4_NL  block of 32 (18 bytes):   d: f16 | qs[16]              w = d * T[q]
    IQ4_XS  super-block of 256 (136): d: f16 | scales_h: u16 | scales_l[4] | qs[128]
            group k (0..7):  ls_k = (scales_l[k // 2] >> 4 (k % 2)) & 15
                                    | ((scales_h >> 2k) & 3) << 4
                             w = (d * (ls_k - 32)) * T[q]

Same contract as legacy.py / kquants.py: ``dot_<type>(w, p, nb, xq, xd, xsd)`` (one row, ``nb``
32-element groups), ``rows_<type>(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)`` (the drivers'
row-range form) and ``deq_<type>(w, p, nb, dst, off)``, bit-exact with ggml's
``dequantize_row_iq4_nl`` / ``dequantize_row_iq4_xs``. The weights are signed, so a group's
dot product is ``sum_i T[q_i] * xq_i`` through the sign trick (as vector_ir.dot_s8, as ggml's
``vec_dot_iq4_nl_q8_0``): |T| <= 127 and |xq| <= 127 never saturate the 16-bit pair sums.

The lookup ``T[q]`` for 32 lanes is one ``pshufb`` (table select within each 128-bit half) on
AVX2, and the dot products use ``vpdpbusd`` where AVX512-VNNI is there (vector_ir.VNNI); the
portable lowering (GGUFLITE_PORTABLE_SIMD=1 or a non-AVX2 host) is a tree of 15 vector selects
on the four index bits, generic LLVM IR giving the same bytes.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ...constants import IQ4NL_VALUES
from .vector_f32 import fma_lane, ldf, load_f32x8, vmul, vsplat
from .vector_ir import (
    F32,
    I8,
    I16,
    I32,
    PORTABLE,
    VF8,
    VNNI,
    F32x8,
    I32x8,
    U8x32,
    V8x16,
    V8x32,
    V16x32,
    V32x8,
    _as_intp,
    _const,
    _dot_u8_s8,
    _idx,
    _load,
    _pairsum_i16_to_i32,
    _pairsum_i32,
    _ptr,
    _splat,
    _x86,
    f16,
    fma2,
    hsum,
    vzero,
)

IQ4_NL_BYTES = 2 + 16  # d: f16 | qs[16]
IQ4_XS_BYTES = 2 + 2 + 4 + 128  # d: f16 | scales_h: u16 | scales_l[4] | qs[128]


# -- intrinsics ------------------------------------------------------------------------------------
def _lookup(builder, idx):
    """<32 x i8> indices in [0, 16) -> <32 x i8> IQ4NL_VALUES[idx]."""
    if not PORTABLE:
        table = _const(V8x32, list(IQ4NL_VALUES) * 2)  # pshufb selects within each 128-bit half
        return _x86(builder, "llvm.x86.avx2.pshuf.b", V8x32, [table, idx])
    # a binary tree of selects: level b picks between pairs of candidates on index bit b
    zero = ir.Constant(V8x32, None)
    cands = [_const(V8x32, [v] * 32) for v in IQ4NL_VALUES]
    for bit in range(4):
        hit = builder.icmp_unsigned("!=", builder.and_(idx, _const(V8x32, [1 << bit] * 32)), zero)
        cands = [builder.select(hit, cands[2 * k + 1], cands[2 * k])
                 for k in range(len(cands) // 2)]
    return cands[0]


@intrinsic
def iq4_values(typingctx, a, off):
    """The 32 table values of one group from its 16 index bytes at ``off``, as int8 bit patterns:
    lane i = T[lo(byte i)], lane 16 + i = T[hi(byte i)]."""

    def codegen(context, builder, sig, args):
        v = _load(context, builder, sig, args[0], args[1], V8x16)  # (16,)
        lo = builder.and_(v, _const(V8x16, [15] * 16))
        hi = builder.and_(builder.lshr(v, _const(V8x16, [4] * 16)), _const(V8x16, [15] * 16))
        return _lookup(builder, builder.shuffle_vector(lo, hi, _idx(range(32))))

    return U8x32(a, off), codegen


@intrinsic
def dot_s8v(typingctx, v, xq, xoff):
    """Products of the 32 int8 weights in ``v`` (a U8x32 of int8 bit patterns, each > -128)
    with ``xq[xoff:xoff+32]`` (int8), summed per run of 4 lanes: the sign trick of
    vector_ir.dot_s8 on a weight vector instead of memory."""

    def codegen(context, builder, sig, args):
        wv, xarr, xo = args
        xv = builder.load(_ptr(context, builder, sig.args[1], xarr,
                               _as_intp(context, builder, sig.args[2], xo), V8x32), align=1)
        if not PORTABLE:
            zero = ir.Constant(V8x32, None)
            neg = builder.icmp_signed("<", wv, zero)
            aw = builder.select(neg, builder.sub(zero, wv), wv)
            sx = _x86(builder, "llvm.x86.avx2.psign.b", V8x32, [xv, wv])
            if VNNI:  # one vpdpbusd for vpmaddubsw + vpmaddwd
                return _x86(builder, "llvm.x86.avx512.vpdpbusd.256", V32x8,
                            [ir.Constant(V32x8, None), builder.bitcast(aw, V32x8),
                             builder.bitcast(sx, V32x8)])
            return _dot_u8_s8(builder, aw, sx)
        prod = builder.mul(builder.sext(wv, V16x32), builder.sext(xv, V16x32))  # (32,) i16
        return _pairsum_i32(builder, _pairsum_i16_to_i32(builder, prod))

    return I32x8(v, xq, xoff), codegen


@intrinsic
def store_s8v(typingctx, dst, off, v, d):
    """dst[off + i] = d * float(int8 v[i]) for i < 32 (float32 multiply, as ggml). A 2-D uint8
    ``dst`` is a packed tile of the int8 matrix product: q = v, s = d (vector_gemm)."""
    from . import vector_gemm

    if vector_gemm.is_pack(dst):
        return types.none(dst, off, v, d), vector_gemm.pack_s8v_codegen

    def codegen(context, builder, sig, args):
        darr, doff, wv, dd = args
        VF32 = ir.VectorType(F32, 32)
        s = _splat(builder, context.cast(builder, dd, sig.args[3], types.float32), VF32)
        y = builder.fmul(s, builder.sitofp(wv, VF32))
        p = _ptr(context, builder, sig.args[0], darr,
                 _as_intp(context, builder, sig.args[1], doff), VF32)
        builder.store(y, p, align=4)
        return context.get_dummy_value()

    return types.none(dst, off, v, d), codegen


@intrinsic
def iq4xs_scales(typingctx, a, off):
    """The 8 group scales ls_k - 32 of an IQ4_XS super-block as float32, from scales_h (u16) at
    ``off`` and scales_l[4] at ``off + 2``."""

    def codegen(context, builder, sig, args):
        arr, o = args
        base = _as_intp(context, builder, sig.args[1], o)
        h = builder.load(_ptr(context, builder, sig.args[0], arr, base, I16), align=1)
        hv = _splat(builder, builder.zext(h, I32), V32x8)
        hi = builder.and_(builder.lshr(hv, _const(V32x8, [2 * k for k in range(8)])),
                          _const(V32x8, [3] * 8))
        lo_off = builder.add(base, ir.Constant(base.type, 2))
        lb = builder.load(_ptr(context, builder, sig.args[0], arr, lo_off, ir.VectorType(I8, 4)),
                          align=1)
        l32 = builder.zext(lb, ir.VectorType(I32, 4))
        lo = builder.shuffle_vector(l32, l32, _idx([k // 2 for k in range(8)]))
        lo = builder.and_(builder.lshr(lo, _const(V32x8, [4 * (k % 2) for k in range(8)])),
                          _const(V32x8, [15] * 8))
        ls = builder.or_(lo, builder.shl(hi, _const(V32x8, [4] * 8)))
        return builder.sitofp(builder.sub(ls, _const(V32x8, [32] * 8)), VF8)

    return F32x8(a, off), codegen


# -- IQ4_NL ----------------------------------------------------------------------------------------
@njit(cache=True, fastmath=True, inline="always")
def _nl_step(acc, w, b, j, xq, xd):
    """Block j of an IQ4_NL row, its bytes at b: acc += d * dx * dot(T[q], xq). Straight-line
    (see legacy._rows_legacy)."""
    s = f16(w, b) * ldf(xd, j)
    return fma2(acc, dot_s8v(iq4_values(w, b + 2), xq, 32 * j), s, s)


@njit(cache=True, fastmath=True, inline="always")
def dot_iq4_nl(w, p, nb, xq, xd, xsd):
    acc0 = vzero()
    acc1 = vzero()
    for j in range(0, nb - 1, 2):
        b = p + IQ4_NL_BYTES * j
        acc0 = _nl_step(acc0, w, b, j, xq, xd)
        acc1 = _nl_step(acc1, w, b + IQ4_NL_BYTES, j + 1, xq, xd)
    if nb % 2:
        acc0 = _nl_step(acc0, w, p + IQ4_NL_BYTES * (nb - 1), nb - 1, xq, xd)
    return hsum(acc0) + hsum(acc1)


@njit(cache=True, fastmath=True, inline="always")
def rows_iq4_nl(w, row_bytes, nb, lo, hi, y, xq, xd, xsd):
    """y[r] = row r . x for r in [lo, hi): dot_iq4_nl with the row loop in the same function
    (see legacy._rows_legacy for why)."""
    for r in range(lo, hi):
        p = r * row_bytes
        acc0 = vzero()
        acc1 = vzero()
        for j in range(0, nb - 1, 2):
            b = p + IQ4_NL_BYTES * j
            acc0 = _nl_step(acc0, w, b, j, xq, xd)
            acc1 = _nl_step(acc1, w, b + IQ4_NL_BYTES, j + 1, xq, xd)
        if nb % 2:
            acc0 = _nl_step(acc0, w, p + IQ4_NL_BYTES * (nb - 1), nb - 1, xq, xd)
        y[r] = hsum(acc0) + hsum(acc1)


@njit(cache=True)
def deq_iq4_nl(w, p, nb, dst, off):
    for j in range(nb):
        b = p + IQ4_NL_BYTES * j
        store_s8v(dst, off + 32 * j, iq4_values(w, b + 2), f16(w, b))


# -- IQ4_XS ----------------------------------------------------------------------------------------
@njit(cache=True, fastmath=True, inline="always")
def _xs_pair(acc0, acc1, w, b, k, g0, xq, sv):
    """Groups k, k + 1 of the super-block at byte b (activation groups g0 + k, g0 + k + 1)."""
    acc0 = fma_lane(acc0, dot_s8v(iq4_values(w, b + 8 + 16 * k), xq, 32 * (g0 + k)), sv, k, k)
    acc1 = fma_lane(acc1, dot_s8v(iq4_values(w, b + 24 + 16 * k), xq, 32 * (g0 + k + 1)), sv,
                    k + 1, k + 1)
    return acc0, acc1


@njit(cache=True, fastmath=True, inline="always")
def _xs_super(acc0, acc1, w, b, g0, xq, xd):
    """One IQ4_XS super-block at byte b (activation groups g0 .. g0 + 7). Straight-line."""
    sv = vmul(vmul(iq4xs_scales(w, b + 2), load_f32x8(xd, g0)), vsplat(f16(w, b)))  # (8,)
    acc0, acc1 = _xs_pair(acc0, acc1, w, b, 0, g0, xq, sv)
    acc0, acc1 = _xs_pair(acc0, acc1, w, b, 2, g0, xq, sv)
    acc0, acc1 = _xs_pair(acc0, acc1, w, b, 4, g0, xq, sv)
    acc0, acc1 = _xs_pair(acc0, acc1, w, b, 6, g0, xq, sv)
    return acc0, acc1


@njit(cache=True, fastmath=True, inline="always")
def dot_iq4_xs(w, p, nb, xq, xd, xsd):
    acc0 = vzero()
    acc1 = vzero()
    for i in range(nb // 8):
        acc0, acc1 = _xs_super(acc0, acc1, w, p + IQ4_XS_BYTES * i, 8 * i, xq, xd)
    return hsum(acc0) + hsum(acc1)


@njit(cache=True, fastmath=True, inline="always")
def rows_iq4_xs(w, row_bytes, nb, lo, hi, y, xq, xd, xsd):
    """y[r] = row r . x for r in [lo, hi) (see rows_iq4_nl)."""
    for r in range(lo, hi):
        p = r * row_bytes
        acc0 = vzero()
        acc1 = vzero()
        for i in range(nb // 8):
            acc0, acc1 = _xs_super(acc0, acc1, w, p + IQ4_XS_BYTES * i, 8 * i, xq, xd)
        y[r] = hsum(acc0) + hsum(acc1)


@njit(cache=True)
def deq_iq4_xs(w, p, nb, dst, off):
    for i in range(nb // 8):
        b = p + IQ4_XS_BYTES * i
        d = f16(w, b)
        sh = np.int32(w[b + 2]) | (np.int32(w[b + 3]) << 8)
        for k in range(8):
            ls = ((np.int32(w[b + 4 + k // 2]) >> (4 * (k % 2))) & 15) | (((sh >> (2 * k)) & 3)
                                                                         << 4)
            dl = d * np.float32(ls - 32)  # ggml: const float dl = d * (ls - 32)
            store_s8v(dst, off + 256 * i + 32 * k, iq4_values(w, b + 8 + 16 * k), dl)
