"""Vector table lookups for the KM mat-vec: 8 codes -> 8 codebook values -> a fused multiply-add.

Numba does not vectorize a loop of table lookups (``t[q[j]] * x[j]``): LLVM would need a
gather. These intrinsics emit the lookup directly as LLVM vector IR. Eight codes are taken from
one packed 32-bit word (``word >> (step * lane) & mask``, which is exactly the KM2 / KM3 / KM4
bit layout), looked up in a codebook held in one or two ``<8 x float>`` registers, multiplied
by eight activations and added to an ``<8 x float>`` accumulator::

    word (u32)  ──lshr by step*[0..7], and mask──▶  idx <8 x i32>
    idx, table <8 x float>  ──vpermps──▶  values <8 x float>      (KM4: two tables + select)
    acc += values * x[off : off + 8]

On x86 with AVX2 the lookup is ``llvm.x86.avx2.permps`` (one instruction for 8 lanes); elsewhere,
or with ``GGUFLITE_PORTABLE_SIMD=1``, it is generic IR (a variable ``extractelement`` per lane)
with the same result.

Numba's on-disk cache of ``km_numba.km_matvec`` is keyed on km_numba.py only: after editing this
file, delete ``gguflite/quants/__pycache__/km_numba*.nb*`` (or touch km_numba.py).
"""

from __future__ import annotations

import os

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, models, register_model

_I32 = ir.IntType(32)
_F32 = ir.FloatType()
_VI8 = ir.VectorType(_I32, 8)
_VF8 = ir.VectorType(_F32, 8)


def _host_has_avx2() -> bool:
    try:
        return "+avx2" in llvm.get_host_cpu_features().flatten().split(",")
    except RuntimeError:  # llvmlite raises when the host features are unknown
        return False


PORTABLE = os.environ.get("GGUFLITE_PORTABLE_SIMD", "") == "1" or not _host_has_avx2()


class _F32x8Type(types.Type):
    """An ``<8 x float>`` passed by value between the intrinsics below."""

    def __init__(self) -> None:
        super().__init__(name="KMF32x8")


F32x8 = _F32x8Type()


@register_model(_F32x8Type)
class _F32x8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VF8)


def _splat(builder, scalar, vec_type: ir.VectorType):
    undef = ir.Constant(vec_type, None)
    v = builder.insert_element(undef, scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, undef, ir.Constant(_VI8, [0] * vec_type.count))


def _f32_ptr(context, builder, arrty, arr, off, offty):
    data = context.make_array(arrty)(context, builder, arr).data
    off = context.cast(builder, off, offty, types.intp)
    return builder.bitcast(builder.gep(data, [off]), _VF8.as_pointer())


def _permute(builder, table, idx):
    """values[i] = table[idx[i] & 7]."""
    if not PORTABLE:
        fnty = ir.FunctionType(_VF8, [_VF8, _VI8])
        fn = builder.module.declare_intrinsic("llvm.x86.avx2.permps", fnty=fnty)
        return builder.call(fn, [table, idx])
    out = ir.Constant(_VF8, None)
    seven = ir.Constant(_I32, 7)
    for lane in range(8):
        k = builder.and_(builder.extract_element(idx, ir.Constant(_I32, lane)), seven)
        out = builder.insert_element(out, builder.extract_element(table, k),
                                     ir.Constant(_I32, lane))
    return out


@intrinsic
def vzero(typingctx):
    """A zero accumulator."""

    def codegen(context, builder, sig, args):
        return ir.Constant(_VF8, [0.0] * 8)

    return F32x8(), codegen


@intrinsic
def hsum(typingctx, acc):
    """Sum of the 8 lanes -> float32."""

    def codegen(context, builder, sig, args):
        (v,) = args
        lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, 4), [0, 1, 2, 3]))
        hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, 4), [4, 5, 6, 7]))
        s = builder.fadd(lo, hi)
        s2 = ir.VectorType(_I32, 2)
        s = builder.fadd(builder.shuffle_vector(s, s, ir.Constant(s2, [0, 1])),
                         builder.shuffle_vector(s, s, ir.Constant(s2, [2, 3])))
        return builder.fadd(builder.extract_element(s, ir.Constant(_I32, 0)),
                            builder.extract_element(s, ir.Constant(_I32, 1)))

    return types.float32(acc), codegen


@intrinsic
def load8(typingctx, a, off):
    """a[off : off + 8] of a float32 array (unaligned)."""

    def codegen(context, builder, sig, args):
        return builder.load(_f32_ptr(context, builder, sig.args[0], args[0], args[1],
                                     sig.args[1]), align=4)

    return F32x8(a, off), codegen


@intrinsic
def lut_fma(typingctx, acc, word, step, mask, tlo, thi, x, xoff):
    """acc + table[(word >> step * i) & mask] * x[xoff + i] for lanes i = 0..7.

    ``table`` is ``tlo`` for codes < 8 and ``thi`` for codes 8..15 (KM4); KM2 / KM3 pass the
    same table twice. ``word`` holds the 8 packed codes in its low ``8 * step`` bits.
    """

    def codegen(context, builder, sig, args):
        acc_v, w, st, mk, lo, hi, xa, xo = args
        w = context.cast(builder, w, sig.args[1], types.uint32)
        st = context.cast(builder, st, sig.args[2], types.uint32)
        mk = context.cast(builder, mk, sig.args[3], types.uint32)
        shifts = builder.mul(_splat(builder, st, _VI8), ir.Constant(_VI8, list(range(8))))
        idx = builder.and_(builder.lshr(_splat(builder, w, _VI8), shifts),
                           _splat(builder, mk, _VI8))  # (8,) codes
        v_lo = _permute(builder, lo, idx)
        v_hi = _permute(builder, hi, idx)
        high = builder.icmp_unsigned(">", idx, ir.Constant(_VI8, [7] * 8))
        vals = builder.select(high, v_hi, v_lo)  # (8,) codebook values
        xv = builder.load(_f32_ptr(context, builder, sig.args[6], xa, xo, sig.args[7]), align=4)
        return builder.fadd(acc_v, builder.fmul(vals, xv, flags=("contract",)),
                            flags=("contract",))

    return F32x8(acc, word, step, mask, tlo, thi, x, xoff), codegen
