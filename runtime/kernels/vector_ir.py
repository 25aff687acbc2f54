"""SIMD building blocks for the kernels: Numba intrinsics that emit LLVM vector IR.

Numba widens small-integer arithmetic to 64 bits, which defeats int8 SIMD. The intrinsics here
build LLVM vector instructions directly and pass the vectors between each other as first-class
Numba values, so a kernel reads like plain Python over 32-element groups:

    u = lo4(load_u8x32(w, p))                   # 32 x u8, the low nibbles
    acc = fma2(acc, dot_u8(u, xq, 32 * j), f0, f1)

Vector types (LLVM vectors; Numba sees opaque values):

    U8x32   <32 x i8>   32 weights of one group, read as unsigned
    I32x8   <8 x i32>   partial dot products; lane k sums elements 4k .. 4k+3, so lanes 0..3
                        cover elements 0..15 and lanes 4..7 elements 16..31
    F32x8   <8 x float> a running float accumulator

Every array argument is a 1-D array (read-only or not) and every offset is in bytes of that
array's elements (uint8 arrays: bytes). No op checks bounds; the callers own that.

Two lowerings exist for the integer dot products. On x86 with AVX2 they use
``llvm.x86.avx2.pmadd.ub.sw`` / ``pmadd.wd`` / ``psign.b`` (one instruction per 32 products);
elsewhere, or when the environment variable ``GGUFLITE_PORTABLE_SIMD=1`` is set, they use
generic vector IR (zext/sext, mul, pairwise add) that gives the same integers. The kernels never
reach saturation: weights are at most 63 and activations at most 127 in magnitude
(63 * 127 * 2 < 32767), and signed 8-bit weights go through the sign trick, where |w| <= 127.
"""

from __future__ import annotations

import os

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, models, register_model

I8, I16, I32, I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
F32 = ir.FloatType()
V8x32 = ir.VectorType(I8, 32)
V8x16 = ir.VectorType(I8, 16)
V16x16 = ir.VectorType(I16, 16)
V16x32 = ir.VectorType(I16, 32)
V32x8 = ir.VectorType(I32, 8)
V32x16 = ir.VectorType(I32, 16)
VF8 = ir.VectorType(F32, 8)


def _host_has(*features: str) -> bool:
    """True when the host CPU has every one of ``features`` (LLVM names: "avx2", ...)."""
    try:
        have = set(llvm.get_host_cpu_features().flatten().split(","))
    except RuntimeError:  # llvmlite raises when the host features are unknown
        return False
    return all("+" + f in have for f in features)


PORTABLE = os.environ.get("GGUFLITE_PORTABLE_SIMD", "") == "1" or not _host_has("avx2")
"""True when the integer dot products use generic vector IR instead of the AVX2 intrinsics."""
VNNI = (not PORTABLE and os.environ.get("GGUFLITE_NO_VNNI", "") != "1"
        and _host_has("avx512vnni", "avx512vl"))
"""True when AVX512-VNNI's 256-bit ``vpdpbusd`` may replace vpmaddubsw + vpmaddwd (the same
integers where those never saturate). Used by the kernels where it measured faster (IQ4: 10 %
on 576 / 1536-wide rows, 1 thread, AMD EPYC Zen 4), not by _dot_u8_s8: there it made Q8_0 25 %
slower. ``GGUFLITE_NO_VNNI=1`` turns it off (such a run gets its own Numba cache directory:
gguflite._numba_cache.separate_lowering_overrides)."""


class Vec(types.Type):
    """An LLVM vector passed by value between intrinsics."""

    def __init__(self, label: str, llvm_type: ir.VectorType):
        self.llvm_type = llvm_type
        super().__init__(name=label)


U8x32 = Vec("U8x32", V8x32)
I32x8 = Vec("I32x8", V32x8)
F32x8 = Vec("F32x8", VF8)


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, fe_type.llvm_type)


# -- IR helpers ---------------------------------------------------------------------------------
def _ptr(context, builder, arrty, arr, off, elty: ir.Type):
    """Pointer to ``arr.data + off`` (offset in array elements) cast to ``elty*``."""
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.bitcast(builder.gep(data, [off]), elty.as_pointer())


def _as_intp(context, builder, ty, val):
    return context.cast(builder, val, ty, types.intp)


def _splat(builder, scalar, vec_type: ir.VectorType):
    undef = ir.Constant(vec_type, None)
    v = builder.insert_element(undef, scalar, ir.Constant(I32, 0))
    return builder.shuffle_vector(v, undef, ir.Constant(ir.VectorType(I32, vec_type.count),
                                                        [0] * vec_type.count))


def _const(vec_type: ir.VectorType, values):
    return ir.Constant(vec_type, list(values))


def _idx(values):
    values = list(values)
    return ir.Constant(ir.VectorType(I32, len(values)), values)


def _x86(builder, name: str, ret: ir.Type, args):
    fnty = ir.FunctionType(ret, [a.type for a in args])
    fn = builder.module.declare_intrinsic(name, fnty=fnty)
    return builder.call(fn, args)


def _opaque(builder, v):
    """``v`` through an empty inline-asm statement on x86 (no instruction; portable: ``v``): an
    optimization barrier that keeps LLVM from folding a chain of cheap byte steps into one
    multiply, which x86 can only do through vpmullw on widened halves."""
    if PORTABLE:
        return v
    return builder.asm(ir.FunctionType(v.type, [v.type]), "", "=x,0", [v], False)


def _pairsum_i16_to_i32(builder, v16):
    """<32 x i16> -> <16 x i32>: lane k = v[2k] + v[2k+1] (sign-extended)."""
    even = builder.sext(builder.shuffle_vector(v16, v16, _idx(range(0, 32, 2))), V32x16)
    odd = builder.sext(builder.shuffle_vector(v16, v16, _idx(range(1, 32, 2))), V32x16)
    return builder.add(even, odd)


def _pairsum_i32(builder, v32):
    """<16 x i32> -> <8 x i32>: lane k = v[2k] + v[2k+1]."""
    even = builder.shuffle_vector(v32, v32, _idx(range(0, 16, 2)))
    odd = builder.shuffle_vector(v32, v32, _idx(range(1, 16, 2)))
    return builder.add(even, odd)


def _dot_u8_s8(builder, u, s):
    """sum of u[i] * s[i] over each run of 4 lanes: <32 x u8>, <32 x i8> -> <8 x i32>."""
    if not PORTABLE:
        p16 = _x86(builder, "llvm.x86.avx2.pmadd.ub.sw", V16x16, [u, s])  # (16,) i16
        ones = _const(V16x16, [1] * 16)
        return _x86(builder, "llvm.x86.avx2.pmadd.wd", V32x8, [p16, ones])  # (8,) i32
    prod = builder.mul(builder.zext(u, V16x32), builder.sext(s, V16x32))  # (32,) i16, exact
    return _pairsum_i32(builder, _pairsum_i16_to_i32(builder, prod))


# -- float accumulators -------------------------------------------------------------------------
@intrinsic
def vzero(typingctx):
    """A zero F32x8 accumulator."""

    def codegen(context, builder, sig, args):
        return ir.Constant(VF8, None)

    return F32x8(), codegen


@intrinsic
def hsum(typingctx, acc):
    """Sum of the 8 lanes of an F32x8 -> float32."""

    def codegen(context, builder, sig, args):
        (v,) = args
        lo = builder.shuffle_vector(v, v, _idx(range(4)))
        hi = builder.shuffle_vector(v, v, _idx(range(4, 8)))
        s = builder.fadd(lo, hi)  # (4,)
        s = builder.fadd(builder.shuffle_vector(s, s, _idx([0, 1])),
                         builder.shuffle_vector(s, s, _idx([2, 3])))  # (2,)
        return builder.fadd(builder.extract_element(s, ir.Constant(I32, 0)),
                            builder.extract_element(s, ir.Constant(I32, 1)))

    return types.float32(acc), codegen


@intrinsic
def fma2(typingctx, acc, dot, f0, f1):
    """acc + float(dot) * [f0] * 4 ++ [f1] * 4: lanes 0..3 hold elements 0..15, 4..7 16..31."""

    def codegen(context, builder, sig, args):
        a, d, x0, x1 = args
        x0 = context.cast(builder, x0, sig.args[2], types.float32)
        x1 = context.cast(builder, x1, sig.args[3], types.float32)
        v0 = _splat(builder, x0, VF8)
        v1 = _splat(builder, x1, VF8)
        scale = builder.shuffle_vector(v0, v1, _idx([0, 1, 2, 3, 8, 9, 10, 11]))
        prod = builder.fmul(builder.sitofp(d, VF8), scale, flags=("contract",))
        return builder.fadd(a, prod, flags=("contract",))

    return F32x8(acc, dot, f0, f1), codegen


# -- scalar loads --------------------------------------------------------------------------------
@intrinsic
def f16(typingctx, a, off):
    """The IEEE half at byte ``off`` of uint8 array ``a``, as float32 (exact)."""

    def codegen(context, builder, sig, args):
        arr, o = args
        p = _ptr(context, builder, sig.args[0], arr, _as_intp(context, builder, sig.args[1], o),
                 ir.HalfType())
        return builder.fpext(builder.load(p, align=1), F32)

    return types.float32(a, off), codegen


@intrinsic
def bf16(typingctx, a, off):
    """The bfloat16 at byte ``off`` of uint8 array ``a``, as float32 (exact)."""

    def codegen(context, builder, sig, args):
        arr, o = args
        p = _ptr(context, builder, sig.args[0], arr, _as_intp(context, builder, sig.args[1], o),
                 I16)
        bits = builder.shl(builder.zext(builder.load(p, align=1), I32), ir.Constant(I32, 16))
        return builder.bitcast(bits, F32)

    return types.float32(a, off), codegen


@intrinsic
def f32at(typingctx, a, off):
    """The float32 at byte ``off`` of uint8 array ``a``."""

    def codegen(context, builder, sig, args):
        arr, o = args
        p = _ptr(context, builder, sig.args[0], arr, _as_intp(context, builder, sig.args[1], o),
                 F32)
        return builder.load(p, align=1)

    return types.float32(a, off), codegen


# -- loading and unpacking weight groups (all results U8x32) ------------------------------------
def _load(context, builder, sig, arr, o, vt, k=0):
    off = _as_intp(context, builder, sig.args[k + 1], o)
    return builder.load(_ptr(context, builder, sig.args[k], arr, off, vt), align=1)


@intrinsic
def load_u8x32(typingctx, a, off):
    """The 32 bytes ``a[off:off+32]``."""

    def codegen(context, builder, sig, args):
        return _load(context, builder, sig, args[0], args[1], V8x32)

    return U8x32(a, off), codegen


@intrinsic
def nibbles16(typingctx, a, off):
    """16 bytes at ``off`` -> 32 lanes: the 16 low nibbles, then the 16 high nibbles.

        byte i = [ hi(i) : 4 | lo(i) : 4 ]   ->   lane i = lo(i), lane 16 + i = hi(i)
    """

    def codegen(context, builder, sig, args):
        v = _load(context, builder, sig, args[0], args[1], V8x16)  # (16,)
        lo = builder.and_(v, _const(V8x16, [15] * 16))
        hi = builder.lshr(v, _const(V8x16, [4] * 16))
        return builder.shuffle_vector(lo, hi, _idx(range(32)))

    return U8x32(a, off), codegen


@intrinsic
def dup16(typingctx, a, off):
    """16 bytes at ``off`` repeated twice: lane i and lane 16 + i = a[off + i]."""

    def codegen(context, builder, sig, args):
        v = _load(context, builder, sig, args[0], args[1], V8x16)  # (16,)
        return builder.shuffle_vector(v, v, _idx(list(range(16)) * 2))

    return U8x32(a, off), codegen


@intrinsic
def bits32(typingctx, a, off):
    """The 32 bits of the 4 little-endian bytes at ``off`` -> lane i = bit i (0 or 1)."""

    def codegen(context, builder, sig, args):
        v = _load(context, builder, sig, args[0], args[1], ir.VectorType(I8, 4))  # (4,)
        rep = builder.shuffle_vector(v, v, _idx([i // 8 for i in range(32)]))  # byte i // 8
        mask = _const(V8x32, [1 << (i % 8) for i in range(32)])
        hit = builder.icmp_unsigned("!=", builder.and_(rep, mask), ir.Constant(V8x32, None))
        return builder.zext(hit, V8x32)

    return U8x32(a, off), codegen


def _u8_binop(op: str):
    def typer(typingctx, v, k):
        def codegen(context, builder, sig, args):
            vec, s = args
            if isinstance(sig.args[1], Vec):
                rhs = s  # lane by lane
            else:  # a scalar, applied to every lane
                s8 = builder.trunc(context.cast(builder, s, sig.args[1], types.int64), I8)
                rhs = _splat(builder, s8, V8x32)
            return getattr(builder, op)(vec, rhs)

        return U8x32(v, k), codegen

    return typer


# Lane-wise u8 operations with a scalar (applied to every lane) or a U8x32 right operand:
shr = intrinsic(_u8_binop("lshr"))  # logical right shift
shl = intrinsic(_u8_binop("shl"))  # left shift
band = intrinsic(_u8_binop("and_"))  # bitwise and
bor = intrinsic(_u8_binop("or_"))  # bitwise or
mul8 = intrinsic(_u8_binop("mul"))  # wrapping multiply


# -- dot products with the int8 activations (results I32x8) -------------------------------------
@intrinsic
def dot_u8(typingctx, u, xq, xoff):
    """Products of 32 unsigned weights (each <= 63) with ``xq[xoff:xoff+32]`` (int8)."""

    def codegen(context, builder, sig, args):
        uv, xarr, xo = args
        s = builder.load(_ptr(context, builder, sig.args[1], xarr,
                              _as_intp(context, builder, sig.args[2], xo), V8x32), align=1)
        return _dot_u8_s8(builder, uv, s)

    return I32x8(u, xq, xoff), codegen


@intrinsic
def dot_s8(typingctx, w, woff, xq, xoff):
    """Products of the 32 int8 weights at ``w[woff:]`` with ``xq[xoff:xoff+32]`` (int8).

    Sign trick: w * x = |w| * (x * sign(w)), so the unsigned-by-signed product applies.
    """

    def codegen(context, builder, sig, args):
        warr, wo, xarr, xo = args
        wv = builder.load(_ptr(context, builder, sig.args[0], warr,
                               _as_intp(context, builder, sig.args[1], wo), V8x32), align=1)
        xv = builder.load(_ptr(context, builder, sig.args[2], xarr,
                               _as_intp(context, builder, sig.args[3], xo), V8x32), align=1)
        if not PORTABLE:
            zero = ir.Constant(V8x32, None)
            neg = builder.icmp_signed("<", wv, zero)
            aw = builder.select(neg, builder.sub(zero, wv), wv)
            sx = _x86(builder, "llvm.x86.avx2.psign.b", V8x32, [xv, wv])
            return _dot_u8_s8(builder, aw, sx)
        prod = builder.mul(builder.sext(wv, V16x32), builder.sext(xv, V16x32))  # (32,) i16
        return _pairsum_i32(builder, _pairsum_i16_to_i32(builder, prod))

    return I32x8(w, woff, xq, xoff), codegen


# -- dequantizing stores -------------------------------------------------------------------------
@intrinsic
def store_affine(typingctx, dst, off, u, o, s0, c0, s1, c1):
    """dst[off + i] = s * float(u[i] + o) - c, with (s0, c0) for lanes 0..15 and (s1, c1) for
    16..31; a multiply then a subtract, both rounded (no fused multiply-add), as ggml does.

    A 2-D uint8 ``dst`` is a packed tile of the int8 matrix product: the group is written as
    its record (vector_gemm), q = u + o and f = -c."""
    from . import vector_gemm

    if vector_gemm.is_pack(dst):
        return types.none(dst, off, u, o, s0, c0, s1, c1), vector_gemm.pack_affine_codegen

    def codegen(context, builder, sig, args):
        d, doff, uv, oo, a0, b0, a1, b1 = args
        cast = [context.cast(builder, v, t, types.float32)
                for v, t in zip((a0, b0, a1, b1), sig.args[4:], strict=True)]
        o32 = builder.trunc(context.cast(builder, oo, sig.args[3], types.int64), I32)
        q = builder.add(builder.zext(uv, ir.VectorType(I32, 32)),
                        _splat(builder, o32, ir.VectorType(I32, 32)))  # (32,) i32
        qf = builder.sitofp(q, ir.VectorType(F32, 32))
        VF32 = ir.VectorType(F32, 32)
        half = _idx(list(range(16)) + list(range(32, 48)))
        sv = builder.shuffle_vector(_splat(builder, cast[0], VF32), _splat(builder, cast[2], VF32),
                                    half)
        cv = builder.shuffle_vector(_splat(builder, cast[1], VF32), _splat(builder, cast[3], VF32),
                                    half)
        y = builder.fsub(builder.fmul(qf, sv), cv)
        p = _ptr(context, builder, sig.args[0], d, _as_intp(context, builder, sig.args[1], doff),
                 VF32)
        builder.store(y, p, align=4)
        return context.get_dummy_value()

    return types.none(dst, off, u, o, s0, c0, s1, c1), codegen


@intrinsic
def store_s8(typingctx, dst, off, w, woff, d):
    """dst[off + i] = d * float(int8 w[woff + i]) for i < 32 (a 2-D uint8 ``dst``: the packed
    record, as store_affine)."""
    from . import vector_gemm

    if vector_gemm.is_pack(dst):
        return types.none(dst, off, w, woff, d), vector_gemm.pack_s8_codegen

    def codegen(context, builder, sig, args):
        darr, doff, warr, wo, dd = args
        VF32 = ir.VectorType(F32, 32)
        wv = builder.load(_ptr(context, builder, sig.args[2], warr,
                               _as_intp(context, builder, sig.args[3], wo), V8x32), align=1)
        s = _splat(builder, context.cast(builder, dd, sig.args[4], types.float32), VF32)
        y = builder.fmul(s, builder.sitofp(wv, VF32))
        p = _ptr(context, builder, sig.args[0], darr,
                 _as_intp(context, builder, sig.args[1], doff), VF32)
        builder.store(y, p, align=4)
        return context.get_dummy_value()

    return types.none(dst, off, w, woff, d), codegen


@intrinsic
def bit_set(typingctx, v, mask):
    """1 in every lane where ``lane & mask`` is non-zero, else 0 (a variable bit test without a
    per-byte shift, which x86 lacks)."""

    def codegen(context, builder, sig, args):
        vec, m = args
        m8 = builder.trunc(context.cast(builder, m, sig.args[1], types.int64), I8)
        hit = builder.icmp_unsigned("!=", builder.and_(vec, _splat(builder, m8, V8x32)),
                                    ir.Constant(V8x32, None))
        return builder.zext(hit, V8x32)

    return U8x32(v, mask), codegen


# -- 128-bit float accumulators (fewer uops than 256-bit on znver1; KM and ternary kernels) ------
VF4 = ir.VectorType(F32, 4)
V16x8 = ir.VectorType(I16, 8)
F32x4 = Vec("F32x4", VF4)


@intrinsic
def vzero4(typingctx):
    """A zero F32x4 accumulator."""

    def codegen(context, builder, sig, args):
        return ir.Constant(VF4, None)

    return F32x4(), codegen


@intrinsic
def hsum4(typingctx, acc):
    """Sum of the 4 lanes of an F32x4 -> float32: (l0 + l2) + (l1 + l3)."""

    def codegen(context, builder, sig, args):
        (v,) = args
        s = builder.fadd(builder.shuffle_vector(v, v, _idx([0, 1])),
                         builder.shuffle_vector(v, v, _idx([2, 3])))  # (2,)
        return builder.fadd(builder.extract_element(s, ir.Constant(I32, 0)),
                            builder.extract_element(s, ir.Constant(I32, 1)))

    return types.float32(acc), codegen
