"""Float-vector intrinsics (F32x8): per-group scales of whole super-blocks, the float weight
types, and lane-indexed scale broadcasts. See vector_ir.py for the vector types and conventions.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .vector_ir import (
    F32,
    I8,
    I16,
    I32,
    PORTABLE,
    VF8,
    F32x8,
    V32x8,
    _as_intp,
    _const,
    _idx,
    _load,
    _ptr,
    _splat,
    _x86,
)


# -- float vectors: per-group scales of a whole super-block at once (F32x8) ----------------------
def _f32_array_ptr(context, builder, sig, args, k, vt):
    return _ptr(context, builder, sig.args[k], args[k],
                _as_intp(context, builder, sig.args[k + 1], args[k + 1]), vt)


@intrinsic
def load_f32x8(typingctx, a, off):
    """a[off : off + 8] of a float32 array."""

    def codegen(context, builder, sig, args):
        return builder.load(_f32_array_ptr(context, builder, sig, args, 0, VF8), align=4)

    return F32x8(a, off), codegen


@intrinsic
def dup2_f32x4(typingctx, a, off):
    """[a0, a0, a1, a1, a2, a2, a3, a3] from a[off : off + 4] of a float32 array."""

    def codegen(context, builder, sig, args):
        v = builder.load(_f32_array_ptr(context, builder, sig, args, 0, ir.VectorType(F32, 4)),
                         align=4)
        return builder.shuffle_vector(v, v, _idx([0, 0, 1, 1, 2, 2, 3, 3]))

    return F32x8(a, off), codegen


@intrinsic
def pair_sums8(typingctx, a, off):
    """lane k = a[off + 2k] + a[off + 2k + 1] for k < 8 (float32 array)."""

    def codegen(context, builder, sig, args):
        v = builder.load(_f32_array_ptr(context, builder, sig, args, 0, ir.VectorType(F32, 16)),
                         align=4)
        return builder.fadd(builder.shuffle_vector(v, v, _idx(range(0, 16, 2))),
                            builder.shuffle_vector(v, v, _idx(range(1, 16, 2))))

    return F32x8(a, off), codegen


@intrinsic
def vsplat(typingctx, f):
    """[f] * 8."""

    def codegen(context, builder, sig, args):
        return _splat(builder, context.cast(builder, args[0], sig.args[0], types.float32), VF8)

    return F32x8(f), codegen


@intrinsic
def vadd(typingctx, a, b):
    """a + b lane by lane (F32x8)."""

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])

    return F32x8(a, b), codegen


@intrinsic
def vmul(typingctx, a, b):
    """a * b lane by lane (F32x8)."""

    def codegen(context, builder, sig, args):
        return builder.fmul(args[0], args[1])

    return F32x8(a, b), codegen


@intrinsic
def vfma(typingctx, acc, a, b):
    """acc + a * b lane by lane (F32x8)."""

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], builder.fmul(args[1], args[2], flags=("contract",)),
                            flags=("contract",))

    return F32x8(acc, a, b), codegen


@intrinsic
def fma_lane(typingctx, acc, dot, sv, k0, k1):
    """acc + float(dot) * ([sv[k0]] * 4 ++ [sv[k1]] * 4): the scales of the two halves of a group
    taken from lanes of a per-super-block scale vector."""

    def codegen(context, builder, sig, args):
        a, d, s, i0, i1 = args
        i0 = builder.trunc(context.cast(builder, i0, sig.args[3], types.int64), I32)
        i1 = builder.trunc(context.cast(builder, i1, sig.args[4], types.int64), I32)
        idx = builder.shuffle_vector(_splat(builder, i0, V32x8), _splat(builder, i1, V32x8),
                                     _idx([0, 1, 2, 3, 12, 13, 14, 15]))
        if PORTABLE:
            scale = ir.Constant(VF8, None)
            for lane in range(8):
                li = builder.extract_element(idx, ir.Constant(I32, lane))
                scale = builder.insert_element(scale, builder.extract_element(s, li),
                                               ir.Constant(I32, lane))
        else:
            scale = _x86(builder, "llvm.x86.avx2.permps", VF8, [s, idx])
        prod = builder.fmul(builder.sitofp(d, VF8), scale, flags=("contract",))
        return builder.fadd(a, prod, flags=("contract",))

    return F32x8(acc, dot, sv, k0, k1), codegen


@intrinsic
def k4_scales(typingctx, a, off):
    """The 8 six-bit scales of a Q4_K / Q5_K super-block (12 bytes at ``off``) as float32.

        j < 4:  q[j] & 63                    j >= 4: q[j + 4] & 15 | (q[j - 4] >> 6) << 4
    """

    def codegen(context, builder, sig, args):
        q = builder.zext(_load(context, builder, sig, args[0], args[1], ir.VectorType(I8, 12)),
                         ir.VectorType(I32, 12))  # (12,)
        lo = builder.shuffle_vector(q, q, _idx([0, 1, 2, 3, 8, 9, 10, 11]))
        hi = builder.shuffle_vector(q, q, _idx([0, 1, 2, 3, 0, 1, 2, 3]))
        part_lo = builder.and_(lo, _const(V32x8, [63] * 4 + [15] * 4))
        part_hi = builder.and_(builder.shl(builder.lshr(hi, _const(V32x8, [6] * 8)),
                                           _const(V32x8, [4] * 8)),
                               _const(V32x8, [0] * 4 + [0x30] * 4))
        return builder.sitofp(builder.or_(part_lo, part_hi), VF8)

    return F32x8(a, off), codegen


@intrinsic
def k4_mins(typingctx, a, off):
    """The 8 six-bit mins of a Q4_K / Q5_K super-block (12 bytes at ``off``) as float32.

        j < 4:  q[j + 4] & 63                j >= 4: q[j + 4] >> 4 | (q[j] >> 6) << 4
    """

    def codegen(context, builder, sig, args):
        q = builder.zext(_load(context, builder, sig, args[0], args[1], ir.VectorType(I8, 12)),
                         ir.VectorType(I32, 12))  # (12,)
        lo = builder.shuffle_vector(q, q, _idx([4, 5, 6, 7, 8, 9, 10, 11]))
        hi = builder.shuffle_vector(q, q, _idx([0, 1, 2, 3, 4, 5, 6, 7]))
        part_lo = builder.and_(builder.lshr(lo, _const(V32x8, [0] * 4 + [4] * 4)),
                               _const(V32x8, [63] * 4 + [15] * 4))
        part_hi = builder.and_(builder.shl(builder.lshr(hi, _const(V32x8, [6] * 8)),
                                           _const(V32x8, [4] * 8)),
                               _const(V32x8, [0] * 4 + [0x30] * 4))
        return builder.sitofp(builder.or_(part_lo, part_hi), VF8)

    return F32x8(a, off), codegen


@intrinsic
def i8x8_f32(typingctx, a, off):
    """8 signed bytes at ``off`` as float32 (Q6_K scales)."""

    def codegen(context, builder, sig, args):
        v = _load(context, builder, sig, args[0], args[1], ir.VectorType(I8, 8))
        return builder.sitofp(v, VF8)

    return F32x8(a, off), codegen



@intrinsic
def ldf(typingctx, a, i):
    """a[i] of a float32 array, with no negative-index wraparound or bounds check (hot loops)."""

    def codegen(context, builder, sig, args):
        return builder.load(_f32_array_ptr(context, builder, sig, args, 0, F32), align=4)

    return types.float32(a, i), codegen


@intrinsic
def q3k_scales(typingctx, a, off, half):
    """The 8 signed scales (sc - 32) of half ``half`` (0, 1) of a Q3_K super-block as float32,
    from the 12 bytes at ``off``: scale i (0..15) has low 4 bits q[i] & 15 (i < 8) or
    q[i - 8] >> 4 (i >= 8) and high 2 bits (q[8 + i % 4] >> 2 (i // 4)) & 3."""

    def codegen(context, builder, sig, args):
        arr, o, h = args
        q = builder.zext(_load(context, builder, sig, arr, o, ir.VectorType(I8, 12)),
                         ir.VectorType(I32, 12))  # (12,)
        h32 = builder.trunc(context.cast(builder, h, sig.args[2], types.int64), I32)
        out = []
        for hv in (0, 1):
            ii = [8 * hv + k for k in range(8)]
            lo_src = builder.shuffle_vector(q, q, _idx([i if i < 8 else i - 8 for i in ii]))
            lo = builder.and_(builder.lshr(lo_src, _const(V32x8, [0 if i < 8 else 4 for i in ii])),
                              _const(V32x8, [15] * 8))
            hi_src = builder.shuffle_vector(q, q, _idx([8 + i % 4 for i in ii]))
            hi = builder.and_(builder.lshr(hi_src, _const(V32x8, [2 * (i // 4) for i in ii])),
                              _const(V32x8, [3] * 8))
            sc = builder.sub(builder.or_(lo, builder.shl(hi, _const(V32x8, [4] * 8))),
                             _const(V32x8, [32] * 8))
            out.append(builder.sitofp(sc, VF8))
        is_hi = builder.icmp_signed("!=", h32, ir.Constant(I32, 0))
        return builder.select(is_hi, out[1], out[0])

    return F32x8(a, off, half), codegen


@intrinsic
def u8x8_f32(typingctx, a, off, shift, mask):
    """8 bytes at ``off``, each (b >> shift) & mask, as float32 (Q2_K scales and mins)."""

    def codegen(context, builder, sig, args):
        arr, o, s, m = args
        v = builder.zext(_load(context, builder, sig, arr, o, ir.VectorType(I8, 8)), V32x8)
        s32 = builder.trunc(context.cast(builder, s, sig.args[2], types.int64), I32)
        m32 = builder.trunc(context.cast(builder, m, sig.args[3], types.int64), I32)
        v = builder.and_(builder.lshr(v, _splat(builder, s32, V32x8)), _splat(builder, m32, V32x8))
        return builder.sitofp(v, VF8)

    return F32x8(a, off, shift, mask), codegen


# -- float weights (F32 / F16 / BF16): 32 weights times 32 float32 activations ------------------
def _float_fma(kind: str):
    def typer(typingctx, acc, w, woff, x, xoff):
        def codegen(context, builder, sig, args):
            a, warr, wo, xarr, xo = args
            wo = _as_intp(context, builder, sig.args[2], wo)
            xo = _as_intp(context, builder, sig.args[4], xo)
            VF32 = ir.VectorType(F32, 32)
            if kind == "f32":
                wv = builder.load(_ptr(context, builder, sig.args[1], warr, wo, VF32), align=1)
            elif kind == "f16":
                h = builder.load(_ptr(context, builder, sig.args[1], warr, wo,
                                      ir.VectorType(ir.HalfType(), 32)), align=1)
                wv = builder.fpext(h, VF32)
            else:  # bf16: the high half of a float32
                b = builder.load(_ptr(context, builder, sig.args[1], warr, wo,
                                      ir.VectorType(I16, 32)), align=1)
                bits = builder.shl(builder.zext(b, ir.VectorType(I32, 32)),
                                   _const(ir.VectorType(I32, 32), [16] * 32))
                wv = builder.bitcast(bits, VF32)
            xv = builder.load(_ptr(context, builder, sig.args[3], xarr, xo, VF32), align=4)
            p = builder.fmul(wv, xv, flags=("contract", "reassoc"))  # (32,)
            parts = [builder.shuffle_vector(p, p, _idx(range(8 * k, 8 * k + 8)))
                     for k in range(4)]
            s = builder.fadd(builder.fadd(parts[0], parts[1], flags=("reassoc",)),
                             builder.fadd(parts[2], parts[3], flags=("reassoc",)),
                             flags=("reassoc",))
            return builder.fadd(a, s, flags=("contract", "reassoc"))

        return F32x8(acc, w, woff, x, xoff), codegen

    return typer


fma_f32x32 = intrinsic(_float_fma("f32"))
fma_f16x32 = intrinsic(_float_fma("f16"))
fma_bf16x32 = intrinsic(_float_fma("bf16"))
