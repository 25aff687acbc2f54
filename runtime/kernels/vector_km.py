"""SIMD building blocks of the KM v2 row kernels (km_rows.py): codebook lookup, code unpacking
and the per-chunk scale / min words of four chunks at once.

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
from numba.extending import intrinsic

from .vector_ir import (
    I8,
    I32,
    PORTABLE,
    VF8,
    F32x8,
    I32x8,
    U8x32,
    V8x16,
    V8x32,
    V32x8,
    _as_intp,
    _const,
    _idx,
    _load,
    _ptr,
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
    words = ir.Constant(ir.VectorType(I32, 4), None)
    for k in range(4):
        off = builder.add(base, builder.mul(stride, ir.Constant(base.type, k)))
        p = _ptr(context, builder, sig.args[0], arr, off, I32)
        words = builder.insert_element(words, builder.load(p, align=1), ir.Constant(I32, k))
    return words


def _six_bits(builder, words, shifts):
    """(8,) float32: lane 2k + h = (words[k] >> shifts[h]) & 63."""
    w8 = builder.shuffle_vector(words, words, _idx([k // 2 for k in range(8)]))  # (8,) i32
    sh = _const(V32x8, [shifts[k % 2] for k in range(8)])
    return builder.sitofp(builder.and_(builder.lshr(w8, sh), _const(V32x8, [63] * 8)), VF8)


@intrinsic
def km_scales4(typingctx, a, off, stride):
    """The 8 six-bit block scales of 4 consecutive chunks as float32:
    lane 2k = s0 of chunk k, lane 2k + 1 = s1 of chunk k (the chunk's two 32-column blocks).

        word v = byte0 | byte1 << 8 | byte2 << 16:   s0 = v & 63      m0 = (v >> 6) & 63
                                                      s1 = (v >> 12) & 63   m1 = (v >> 18) & 63
    """

    def codegen(context, builder, sig, args):
        return _six_bits(builder, _words4(context, builder, sig, args), (0, 12))

    return F32x8(a, off, stride), codegen


@intrinsic
def km_mins4(typingctx, a, off, stride):
    """The 8 six-bit block mins of 4 consecutive chunks as float32 (lanes as km_scales4)."""

    def codegen(context, builder, sig, args):
        return _six_bits(builder, _words4(context, builder, sig, args), (6, 18))

    return F32x8(a, off, stride), codegen


# -- eight blocks' integer dot products -> one vector, then one float multiply-add ---------------
def _hadd(builder, a, b):
    """AVX2 phaddd: [a0+a1, a2+a3, b0+b1, b2+b3 | a4+a5, a6+a7, b4+b5, b6+b7] (per 128 bits)."""
    if not PORTABLE:
        return _x86(builder, "llvm.x86.avx2.phadd.d", V32x8, [a, b])
    even = builder.shuffle_vector(a, b, _idx([0, 2, 8, 10, 4, 6, 12, 14]))
    odd = builder.shuffle_vector(a, b, _idx([1, 3, 9, 11, 5, 7, 13, 15]))
    return builder.add(even, odd)


@intrinsic
def sums8(typingctx, d0, d1, d2, d3, d4, d5, d6, d7):
    """lane g = the sum of the 8 lanes of d_g (I32x8 each), for g = 0..7 -> I32x8.

    A phaddd tree: h01 = hadd(d0, d1) = [d0:01, d0:23, d1:01, d1:23 | d0:45, d0:67, d1:45, d1:67],
    then hadd(h01, h23) = [d0..d3 low halves | d0..d3 high halves]; the two 128-bit halves of
    that and of the same for d4..d7 are added crosswise.
    """

    def codegen(context, builder, sig, args):
        h01, h23 = _hadd(builder, args[0], args[1]), _hadd(builder, args[2], args[3])
        h45, h67 = _hadd(builder, args[4], args[5]), _hadd(builder, args[6], args[7])
        a, b = _hadd(builder, h01, h23), _hadd(builder, h45, h67)
        lo = builder.shuffle_vector(a, b, _idx([0, 1, 2, 3, 8, 9, 10, 11]))
        hi = builder.shuffle_vector(a, b, _idx([4, 5, 6, 7, 12, 13, 14, 15]))
        return builder.add(lo, hi)

    return I32x8(d0, d1, d2, d3, d4, d5, d6, d7), codegen


@intrinsic
def cvt_fma(typingctx, acc, v, s):
    """acc + float(v) * s lane by lane (F32x8, I32x8, F32x8)."""

    def codegen(context, builder, sig, args):
        a, iv, sv = args
        prod = builder.fmul(builder.sitofp(iv, VF8), sv, flags=("contract",))
        return builder.fadd(a, prod, flags=("contract",))

    return F32x8(acc, v, s), codegen
