"""SIMD building blocks of the KM v2 row kernels (km_rows.py): codebook lookup, code unpacking,
the scale / min words of four chunks at once as int16 lanes, and the integer dot products
scaled per block (vpmaddwd by the block scale instead of ones).

See vector_ir.py for the vector types (U8x32, I32x8, F32x8) and conventions: array offsets are
in elements of the array, nothing checks bounds, the callers own that.

The codebook lookup is one ``vpshufb`` (``llvm.x86.avx2.pshuf.b``): the row's codebook, 16 bytes
read at the codebook's offset, sits in both 128-bit lanes of the table, and each code (< 16)
selects its entry within its own lane. KM3 / KM2 rows have only 8 / 4 entries; the 16-byte
read then also covers the first bytes after the codebook (still inside the row), which no code
ever selects, so the tables need no padding in memory. With ``vector_ir.PORTABLE`` the lookup
is a compare-and-select chain over the 16 entries in generic vector IR (same bytes).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .vector_ir import (
    I8,
    I32,
    PORTABLE,
    VF4,
    F32x4,
    I32x8,
    U8x32,
    V8x16,
    V8x32,
    V16x8,
    V16x16,
    V16x32,
    V32x8,
    Vec,
    _as_intp,
    _const,
    _idx,
    _load,
    _ptr,
    _splat,
    _x86,
)


def _lookup16(builder, table, idx):
    """<32 x i8> table (16 entries repeated per 128-bit lane), <32 x i8> codes < 16 -> entries."""
    if not PORTABLE:
        return _x86(builder, "llvm.x86.avx2.pshuf.b", V8x32, [table, idx])
    out = ir.Constant(V8x32, None)
    for k in range(16):
        entry = builder.shuffle_vector(table, table, _idx([k] * 32))  # (32,) table[k]
        hit = builder.icmp_unsigned("==", idx, _const(V8x32, [k] * 32))
        out = builder.select(hit, entry, out)
    return out


@intrinsic
def lut16(typingctx, table, codes):
    """lane i = table[codes[i]] for codes < 16; ``table`` from ``vector_ir.dup16`` (the 16
    bytes at the row's codebook offset in both halves)."""

    def codegen(context, builder, sig, args):
        return _lookup16(builder, args[0], args[1])

    return U8x32(table, codes), codegen


@intrinsic
def km2_pair(typingctx, a, off):
    """The 16 KM2 code bytes of a chunk at ``off`` -> 32 lanes [b, b >> 2], unmasked.

        code byte i (0..15) = [ q(48+i) : 2 | q(32+i) : 2 | q(16+i) : 2 | q(i) : 2 ]
        lane i = byte i, lane 16 + i = byte i >> 2, so
        block A (columns 0..31)  = pair & 3          (lane t holds q(t))
        block B (columns 32..63) = (pair >> 4) & 3   (lane t holds q(32 + t))
    """

    def codegen(context, builder, sig, args):
        v = _load(context, builder, sig, args[0], args[1], V8x16)  # (16,)
        v2 = builder.lshr(v, _const(V8x16, [2] * 16))
        return builder.shuffle_vector(v, v2, _idx(range(32)))

    return U8x32(a, off), codegen


def _km3_high(half: int):
    """Bit 2 of the KM3 codes of block ``half`` (0: columns 0..31, 1: 32..63) of a chunk."""

    def typer(typingctx, a, off):
        def codegen(context, builder, sig, args):
            # 8 bytes at off: byte i, bit u = high bit of q(8u + i). Lane t of block `half`
            # is column c = 32 half + t = 8u + i with i = t % 8, u = 4 half + t // 8.
            v = _load(context, builder, sig, args[0], args[1], ir.VectorType(I8, 8))  # (8,)
            rep = builder.shuffle_vector(v, v, _idx([t % 8 for t in range(32)]))  # (32,)
            mask = _const(V8x32, [1 << (4 * half + t // 8) for t in range(32)])
            hit = builder.icmp_unsigned("!=", builder.and_(rep, mask), ir.Constant(V8x32, None))
            return builder.select(hit, _const(V8x32, [4] * 32), ir.Constant(V8x32, None))

        return U8x32(a, off), codegen

    return typer


km3_high0 = intrinsic(_km3_high(0))  # (32,) 4 * high bit of q(t), t = 0..31
km3_high1 = intrinsic(_km3_high(1))  # (32,) 4 * high bit of q(32 + t)


def _words4(context, builder, sig, args):
    """The scale / min words of 4 chunks: <4 x i32>, word k read at off + k * stride.

    A 4-byte load per chunk: bits 24..31 hold a code byte of the same chunk, which no field
    reads (the highest, m1, is bits 18..23), so nothing needs masking.
    """
    arr, o, st = args
    base = _as_intp(context, builder, sig.args[1], o)
    stride = _as_intp(context, builder, sig.args[2], st)
    words = ir.Constant(V32x4, None)
    for k in range(4):
        off = builder.add(base, builder.mul(stride, ir.Constant(base.type, k)))
        p = _ptr(context, builder, sig.args[0], arr, off, I32)
        words = builder.insert_element(words, builder.load(p, align=1), ir.Constant(I32, k))
    return words


# -- scales and mins of four chunks as int16 lanes -----------------------------------------------
# With one activation step per 256 columns and integer multipliers t per 32
# (km_rows.quantize_act_km), the block scales s and mins m apply in the integer domain as s * t
# and m * t (vpmullw), one 16-bit lane per block:
#
#     word v of chunk k = [ m1 : 6 | s1 : 6 | m0 : 6 | s0 : 6 ]   (bits 23 .. 0)
#     scales <8 x i16>: lane 2k = s0, 2k + 1 = s1 of chunk k    (i32 lane k: bits 16..21 = s1,
#     mins   <8 x i16>: lane 2k = m0, 2k + 1 = m1                 bits 0..5 = s0; mins alike)
#
# (each i32 lane read as two little-endian i16 lanes), so a chunk's two blocks are lanes 2k,
# 2k + 1 and the 8 blocks of 4 chunks are in column order.
V32x4 = ir.VectorType(I32, 4)
I32x4 = Vec("I32x4", V32x4)  # the raw words of 4 chunks
I16x8 = Vec("I16x8", V16x8)  # 8 blocks' scales (or mins)


@intrinsic
def km_words4(typingctx, a, off, stride):
    """The 24-bit scale / min words of 4 chunks (lane k read at byte off + k * stride of the uint8
    array ``a``; with stride 0, one chunk's word in every lane)."""

    def codegen(context, builder, sig, args):
        return _words4(context, builder, sig, args)

    return I32x4(a, off, stride), codegen


def _fields16(builder, words, lo_shift, hi_shift_left):
    """<4 x i32> words -> <8 x i16>: lane 2k = (v >> lo_shift) & 63, lane 2k + 1 = the field at
    bit 16 - hi_shift_left of v, both six bits."""
    c63 = _const(V32x4, [63] * 4)
    lo = builder.and_(builder.lshr(words, _const(V32x4, [lo_shift] * 4)), c63)
    if hi_shift_left >= 0:
        hi = builder.shl(words, _const(V32x4, [hi_shift_left] * 4))
    else:
        hi = builder.lshr(words, _const(V32x4, [-hi_shift_left] * 4))
    hi = builder.and_(hi, _const(V32x4, [63 << 16] * 4))
    return builder.bitcast(builder.or_(lo, hi), V16x8)


@intrinsic
def km_scales(typingctx, words):
    """The 8 block scales of ``km_words4``'s chunks: lane 2k = s0, 2k + 1 = s1 of chunk k."""

    def codegen(context, builder, sig, args):
        return _fields16(builder, args[0], 0, 4)  # s1 at bit 12 -> 16

    return I16x8(words), codegen


def _madd16(builder, a, b):
    """<n x i16> x <n x i16> -> <n/2 x i32>: lane k = a[2k] b[2k] + a[2k+1] b[2k+1] (pmaddwd)."""
    n = a.type.count
    out = ir.VectorType(I32, n // 2)
    if not PORTABLE:
        name = "llvm.x86.avx2.pmadd.wd" if n == 16 else "llvm.x86.sse2.pmadd.wd"
        return _x86(builder, name, out, [a, b])
    wide = ir.VectorType(I32, n)
    prod = builder.mul(builder.sext(a, wide), builder.sext(b, wide))
    even = builder.shuffle_vector(prod, prod, _idx(range(0, n, 2)))
    odd = builder.shuffle_vector(prod, prod, _idx(range(1, n, 2)))
    return builder.add(even, odd)


@intrinsic
def km_min_fma(typingctx, acc, words, tv, xsd, off, dk):
    """acc + dk * float((m * t) . A) over the 4 chunks of ``words`` (F32x4): lane k =
    m0 t[2k] A[2k] + m1 t[2k + 1] A[2k + 1], with m0, m1 the mins of chunk k, t (I16x8) the
    activation's block multipliers and A the 8 int16 block sums at float32 element ``off`` of
    ``xsd`` (its bytes read as int16, as km_rows.quantize_act_km writes them).
    Bounds: m * t <= 63 * 64 (int16), |A| <= 32 * 127: a lane <= 2 * 4032 * 4064, exact."""

    def codegen(context, builder, sig, args):
        a, wv, t, xarr, o, d = args
        m16 = builder.mul(_fields16(builder, wv, 6, -2), t)  # m0 at bit 6 -> 0, m1 at 18 -> 16
        sums = _load(context, builder, sig, xarr, o, V16x8, k=3)  # (8,) i16
        prod = _madd16(builder, m16, sums)  # (4,) i32
        dv = _splat(builder, context.cast(builder, d, sig.args[5], types.float32), VF4)
        p = builder.fmul(builder.sitofp(prod, VF4), dv, flags=("contract",))
        return builder.fadd(a, p, flags=("contract",))

    return F32x4(acc, words, tv, xsd, off, dk), codegen


@intrinsic
def km_min_dot0(typingctx, words, tv, xsd, off):
    """m0 t[0] A[0] + m1 t[1] A[1] (int32) for the chunk whose word is lane 0 of ``words``: lane
    0 of km_min_fma's integer dot (row tails; the other lanes' bytes are read, not used)."""

    def codegen(context, builder, sig, args):
        wv, t, xarr, o = args
        m16 = builder.mul(_fields16(builder, wv, 6, -2), t)
        sums = _load(context, builder, sig, xarr, o, V16x8, k=2)  # (8,) i16
        return builder.extract_element(_madd16(builder, m16, sums), ir.Constant(I32, 0))

    return types.int32(words, tv, xsd, off), codegen


@intrinsic
def km_final(typingctx, acc, accm, d, dmin):
    """d * (sum of the 8 lanes of acc) - dmin * (sum of the 4 lanes of accm), float32: the
    halves of acc added first, then one 4-lane sum of d * acc - dmin * accm."""

    def codegen(context, builder, sig, args):
        a, m, dd, dm = args
        lo = builder.shuffle_vector(a, a, _idx(range(4)))
        hi = builder.shuffle_vector(a, a, _idx(range(4, 8)))
        dv = _splat(builder, context.cast(builder, dd, sig.args[2], types.float32), VF4)
        mv = _splat(builder, context.cast(builder, dm, sig.args[3], types.float32), VF4)
        v = builder.fsub(builder.fmul(builder.fadd(lo, hi), dv), builder.fmul(m, mv))
        s = builder.fadd(builder.shuffle_vector(v, v, _idx([0, 1])),
                         builder.shuffle_vector(v, v, _idx([2, 3])))
        return builder.fadd(builder.extract_element(s, ir.Constant(I32, 0)),
                            builder.extract_element(s, ir.Constant(I32, 1)))

    return types.float32(acc, accm, d, dmin), codegen


@intrinsic
def load_i16x8(typingctx, a, off):
    """8 int16 at element ``off`` of array ``a`` (any dtype: its bytes read as int16)."""

    def codegen(context, builder, sig, args):
        return _load(context, builder, sig, args[0], args[1], V16x8)

    return I16x8(a, off), codegen


@intrinsic
def mul16(typingctx, a, b):
    """a * b lane by lane (I16x8, vpmullw; the callers keep products below 2**15)."""

    def codegen(context, builder, sig, args):
        return builder.mul(args[0], args[1])

    return I16x8(a, b), codegen


@intrinsic(prefer_literal=True)
def dot_scaled(typingctx, u, xq, xoff, sv, lane):
    """s * (products of 32 unsigned weights u (each <= 127) with ``xq[xoff:xoff+32]`` (int8)),
    s = lane ``lane`` (an integer constant 0..7) of the I16x8 ``sv``: vpmaddubsw, then vpmaddwd
    with s in every 16-bit lane (instead of ones). I32x8, lane k: elements 4k .. 4k + 3.

    Bounds: a vpmaddubsw pair <= 2 * 127 * 127 = 32258 (exact in int16, KM5); with
    s <= 63 * 64 = 4032 (block scale times activation multiplier), two pairs <= 2.6e8 per lane,
    the 8 blocks of a group <= 2.081e9 < 2**31 - 1."""
    if not isinstance(lane, types.IntegerLiteral) or not 0 <= lane.literal_value < 8:
        return None
    k = lane.literal_value

    def codegen(context, builder, sig, args):
        uv, xarr, xo, s = args[:4]
        xv = builder.load(_ptr(context, builder, sig.args[1], xarr,
                               _as_intp(context, builder, sig.args[2], xo), V8x32), align=1)
        bc = builder.shuffle_vector(s, s, _idx([k] * 16))  # (16,) i16, s_k everywhere
        if not PORTABLE:
            p16 = _x86(builder, "llvm.x86.avx2.pmadd.ub.sw", V16x16, [uv, xv])
        else:
            prod = builder.mul(builder.zext(uv, V16x32), builder.sext(xv, V16x32))  # exact
            p16 = builder.add(builder.shuffle_vector(prod, prod, _idx(range(0, 32, 2))),
                              builder.shuffle_vector(prod, prod, _idx(range(1, 32, 2))))
        return _madd16(builder, p16, bc)

    return I32x8(u, xq, xoff, sv, lane), codegen


@intrinsic
def iadd(typingctx, a, b):
    """a + b lane by lane (I32x8; the callers stay within int32, see dot_scaled)."""

    def codegen(context, builder, sig, args):
        return builder.add(args[0], args[1])

    return I32x8(a, b), codegen


@intrinsic
def izero(typingctx):
    """A zero I32x8."""

    def codegen(context, builder, sig, args):
        return ir.Constant(V32x8, None)

    return I32x8(), codegen


@intrinsic
def add_lane0(typingctx, acc, f):
    """acc with f added to lane 0 (F32x4)."""

    def codegen(context, builder, sig, args):
        a, v = args
        v = context.cast(builder, v, sig.args[1], types.float32)
        zero = ir.Constant(I32, 0)
        return builder.insert_element(a, builder.fadd(builder.extract_element(a, zero), v), zero)

    return F32x4(acc, f), codegen
