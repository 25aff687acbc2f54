"""SIMD building blocks of the int8 matrix product (gemm.py): packed weight groups and their dot
products with int8 activations of several tokens.

A weight tile is *packed* once and then multiplied with every token of a prefill chunk. Each
group of 32 weights becomes one record of ``REC`` bytes::

    [ q : 32 x int8 | sv : 8 x float32 = [s0] * 4 ++ [s1] * 4 | corr : 8 x int32 |
      f0 f1 : float32 | 24 bytes unused ]

(q and sv fill the first cache line: the kernel of the super-block types reads only that
line in its inner loop; see gemm.py).

with ``w_i = s_h * q_i + f_h`` for the element i of half h (0: elements 0..15, 1: 16..31).
Every row kernel's dequantizer already writes ``w = s * (u + o) - c`` through ``store_affine``
(or ``store_s8`` for Q8_0); given a 2-D uint8 destination of ``REC``-byte records instead of a
float32 row, the same two intrinsics write the packed record, so each type's packing *is* its
exact dequantizer: ``q = u + o``, ``f = -c``.

With the activation of a 32-block ``x ~= dx * xq`` (activations.py) and ``xsd_h = dx * sum xq``
over half h, the group's contribution is

    sum_i w_i x_i = dx * (s_h * sum_i q_i xq_i)  +  f_h * xsd_h

The integer dots ``sum q_i xq_i`` (lane k of an I32x8 covers elements 4k .. 4k+3) have three
lowerings, chosen once per process (``GEMM_PATH``):

- ``vnni``: AVX-512 VNNI ``vpdpbusd`` (unsigned x signed bytes accumulated into int32 lanes).
  The activations are stored offset by 128 (``xu = xq + 128``, unsigned), and the record's
  ``corr`` lanes (``-128 * sum`` of the lane's four q) seed the accumulator, so one
  instruction gives the exact signed dot.
- ``avx2``: ``pmaddubsw`` / ``pmaddwd`` on ``|q|`` and ``xq * sign(q)`` (|q| <= 128 and
  |xq| <= 127, so the 16-bit pair sums cannot saturate); ``corr`` is zero.
- ``portable``: generic vector IR (widen, multiply, pairwise add) on the offset activations,
  plus ``corr``; the same integers on any CPU.

``GGUFLITE_GEMM_PATH`` (``vnni``, ``avx2``, ``portable``) overrides the choice (tests); a path
the host cannot run is refused. ``GGUFLITE_PORTABLE_SIMD=1`` implies ``portable``. Numba's
cache keys compiled code on the CPU, not on this choice, so a run with an override compiles
into a cache directory of its own (gguflite._numba_cache.separate_lowering_overrides).
"""

from __future__ import annotations

import os

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .vector_f32 import F32x8
from .vector_ir import (
    F32,
    I8,
    I32,
    PORTABLE,
    V8x32,
    V16x16,
    V16x32,
    V32x8,
    VF8,
    I32x8,
    _as_intp,
    _const,
    _idx,
    _pairsum_i16_to_i32,
    _pairsum_i32,
    _splat,
    _x86,
)

REC = 128
"""Bytes of one packed group (two cache lines): q (32) | sv (32) | corr (32) | f0 f1 (8)."""
Q_AT, S_AT, CORR_AT, F_AT = 0, 32, 64, 96

PATHS = ("vnni", "avx2", "portable")


def _host_features() -> set[str]:
    try:
        return set(llvm.get_host_cpu_features().flatten().split(","))
    except RuntimeError:  # llvmlite raises when the host features are unknown
        return set()


def _choose_path() -> str:
    feats = _host_features()
    runnable = ["portable"]
    if "+avx2" in feats:
        runnable.insert(0, "avx2")
        if "+avx512vnni" in feats and "+avx512vl" in feats:
            runnable.insert(0, "vnni")
    wanted = os.environ.get("GGUFLITE_GEMM_PATH", "")
    if PORTABLE:
        wanted = wanted or "portable"
    if not wanted:
        return runnable[0]
    if wanted not in PATHS:
        raise ValueError(f"GGUFLITE_GEMM_PATH={wanted!r}: expected one of {', '.join(PATHS)}")
    if wanted not in runnable:
        raise ValueError(f"GGUFLITE_GEMM_PATH={wanted!r}: this CPU can run "
                         f"{', '.join(runnable)}")
    return wanted


GEMM_PATH = _choose_path()
"""The integer dot product lowering of this process: "vnni", "avx2" or "portable"."""
OFFSET_ACTIVATIONS = GEMM_PATH != "avx2"
"""True when the activations are stored as unsigned ``xq + 128`` (and ``corr`` is not zero)."""


def _byte_ptr(context, builder, arrty, arr, off):
    """``i8*`` to byte ``off`` of any C-contiguous array (1-D or 2-D)."""
    data = context.make_array(arrty)(context, builder, arr).data
    base = builder.bitcast(data, I8.as_pointer())
    return builder.gep(base, [off])


def _at(builder, p, byte_off: int, elty: ir.Type):
    return builder.bitcast(builder.gep(p, [ir.Constant(ir.IntType(64), byte_off)]),
                           elty.as_pointer())


def is_pack(arr) -> bool:
    """True for the Numba type of a packed tile: a 2-D uint8 array of REC-byte records."""
    return isinstance(arr, types.Array) and arr.ndim == 2 and arr.dtype == types.uint8


def _store_record(context, builder, sig, dst, off, q, s0, c0, s1, c1):
    """Write group ``off // 32`` of a packed tile: q (<32 x i8>), its corr, sv, -c0 -c1."""
    o = _as_intp(context, builder, sig.args[1], off)
    rec = builder.mul(builder.ashr(o, ir.Constant(o.type, 5)), ir.Constant(o.type, REC))
    p = _byte_ptr(context, builder, sig.args[0], dst, rec)
    builder.store(q, _at(builder, p, Q_AT, V8x32), align=1)
    if GEMM_PATH == "vnni":  # lane k: -(128 * (q[4k] + ... + q[4k + 3])), one vpdpbusd
        sums = _x86(builder, "llvm.x86.avx512.vpdpbusd.256", V32x8,
                    [ir.Constant(V32x8, None), builder.bitcast(_const(V8x32, [128] * 32), V32x8),
                     builder.bitcast(q, V32x8)])
        corr = builder.sub(ir.Constant(V32x8, None), sums)
    elif OFFSET_ACTIVATIONS:
        wide = builder.sext(q, ir.VectorType(I32, 32))
        sums = _pairsum_i32(builder, builder.add(
            builder.shuffle_vector(wide, wide, _idx(range(0, 32, 2))),
            builder.shuffle_vector(wide, wide, _idx(range(1, 32, 2)))))
        corr = builder.mul(sums, _const(V32x8, [-128] * 8))
    else:
        corr = ir.Constant(V32x8, None)
    builder.store(corr, _at(builder, p, CORR_AT, V32x8), align=1)
    # the scales already spread over their lanes ([s0] * 4 ++ [s1] * 4): one load per use
    sv = builder.shuffle_vector(_splat(builder, s0, VF8), _splat(builder, s1, VF8),
                                _idx([0, 1, 2, 3, 12, 13, 14, 15]))
    builder.store(sv, _at(builder, p, S_AT, VF8), align=1)
    for k, v in enumerate((c0, c1)):
        builder.store(builder.fsub(ir.Constant(F32, 0.0), v), _at(builder, p, F_AT + 4 * k, F32),
                      align=1)


def pack_affine_codegen(context, builder, sig, args):
    """store_affine's lowering for a packed destination (see vector_ir.store_affine)."""
    d, doff, uv, oo, a0, b0, a1, b1 = args
    s0, c0, s1, c1 = (context.cast(builder, v, t, types.float32)
                      for v, t in zip((a0, b0, a1, b1), sig.args[4:], strict=True))
    o8 = builder.trunc(context.cast(builder, oo, sig.args[3], types.int64), I8)
    q = builder.add(uv, _splat(builder, o8, V8x32))  # u + o, exact in int8 for every type
    _store_record(context, builder, sig, d, doff, q, s0, c0, s1, c1)
    return context.get_dummy_value()


def pack_s8_codegen(context, builder, sig, args):
    """store_s8's lowering for a packed destination: q = the 32 int8 weights, s = d, f = 0."""
    d, doff, warr, wo, dd = args
    p = _byte_ptr(context, builder, sig.args[2], warr, _as_intp(context, builder, sig.args[3],
                                                                   wo))
    q = builder.load(builder.bitcast(p, V8x32.as_pointer()), align=1)
    s = context.cast(builder, dd, sig.args[4], types.float32)
    zero = ir.Constant(F32, 0.0)
    _store_record(context, builder, sig, d, doff, q, s, zero, s, zero)
    return context.get_dummy_value()


def pack_s8v_codegen(context, builder, sig, args):
    """vector_iq4.store_s8v's lowering for a packed destination: q = the 32 int8 values (the
    IQ4 codebook entries), s = d, f = 0."""
    d, doff, q, dd = args
    s = context.cast(builder, dd, sig.args[3], types.float32)
    zero = ir.Constant(F32, 0.0)
    _store_record(context, builder, sig, d, doff, q, s, zero, s, zero)
    return context.get_dummy_value()


# -- the dot products of a packed group with one token's activation block ------------------------
def _qdot_typer(with_corr: bool):
    def typer(typingctx, pack, rec, xa, xoff):
        def codegen(context, builder, sig, args):
            parr, ro, xarr, xo = args
            p = _byte_ptr(context, builder, sig.args[0], parr, _as_intp(context, builder,
                                                                         sig.args[1], ro))
            q = builder.load(_at(builder, p, Q_AT, V8x32), align=1)
            xp = _byte_ptr(context, builder, sig.args[2], xarr, _as_intp(context, builder,
                                                                          sig.args[3], xo))
            x = builder.load(builder.bitcast(xp, V8x32.as_pointer()), align=1)
            if GEMM_PATH == "avx2":  # signed activations: nothing to correct
                zero = ir.Constant(V8x32, None)
                aq = builder.select(builder.icmp_signed("<", q, zero), builder.sub(zero, q), q)
                sx = _x86(builder, "llvm.x86.avx2.psign.b", V8x32, [x, q])
                p16 = _x86(builder, "llvm.x86.avx2.pmadd.ub.sw", V16x16, [aq, sx])
                return _x86(builder, "llvm.x86.avx2.pmadd.wd", V32x8,
                            [p16, _const(V16x16, [1] * 16)])
            corr = (builder.load(_at(builder, p, CORR_AT, V32x8), align=1) if with_corr
                    else ir.Constant(V32x8, None))
            if GEMM_PATH == "vnni":
                return _x86(builder, "llvm.x86.avx512.vpdpbusd.256", V32x8,
                            [corr, builder.bitcast(x, V32x8), builder.bitcast(q, V32x8)])
            prod = builder.mul(builder.zext(x, V16x32), builder.sext(q, V16x32))  # exact, i16
            return builder.add(_pairsum_i32(builder, _pairsum_i16_to_i32(builder, prod)), corr)

        return I32x8(pack, rec, xa, xoff), codegen

    return typer


qdot = intrinsic(_qdot_typer(True))
qdot.__doc__ = """I32x8: the record at byte ``rec`` of flat uint8 ``pack`` times the 32 activation
bytes ``xa[xoff:xoff+32]`` (uint8 ``xq + 128`` or int8 ``xq``, as OFFSET_ACTIVATIONS says):
the exact signed dot, corr included."""
qdot_raw = intrinsic(_qdot_typer(False))
qdot_raw.__doc__ = """qdot without the record's corr (the dot of ``xq + 128`` on the offset
paths): for callers that add ``corr`` themselves, once per super-block (corr_scaled)."""


@intrinsic
def corr_scaled(typingctx, pack, rec):
    """F32x8 float(corr) * sv of the record at byte ``rec``: what qdot_raw leaves out, times the
    group's scales (zero on the avx2 path)."""

    def codegen(context, builder, sig, args):
        parr, ro = args
        p = _byte_ptr(context, builder, sig.args[0], parr, _as_intp(context, builder,
                                                                     sig.args[1], ro))
        corr = builder.load(_at(builder, p, CORR_AT, V32x8), align=1)
        sv = builder.load(_at(builder, p, S_AT, VF8), align=1)
        return builder.fmul(builder.sitofp(corr, VF8), sv)

    return F32x8(pack, rec), codegen


@intrinsic
def store_f32x8(typingctx, dst, off, v):
    """dst[off : off + 8] = v for a float32 array ``dst``."""

    def codegen(context, builder, sig, args):
        arr, o, vec = args
        p = _byte_ptr(context, builder, sig.args[0], arr,
                      builder.mul(_as_intp(context, builder, sig.args[1], o),
                                  ir.Constant(ir.IntType(64), 4)))
        builder.store(vec, builder.bitcast(p, VF8.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.none(dst, off, v), codegen


@intrinsic
def group_scales(typingctx, pack, rec):
    """F32x8 [s0] * 4 ++ [s1] * 4 of the record at byte ``rec`` of flat uint8 ``pack``."""

    def codegen(context, builder, sig, args):
        parr, ro = args
        p = _byte_ptr(context, builder, sig.args[0], parr, _as_intp(context, builder,
                                                                     sig.args[1], ro))
        return builder.load(_at(builder, p, S_AT, VF8), align=1)

    return F32x8(pack, rec), codegen


@intrinsic
def fma_s(typingctx, acc, dot, sv):
    """acc + float(dot) * sv (F32x8): a group of a 256-block whose activations share one
    scale, applied once per block (fold)."""

    def codegen(context, builder, sig, args):
        a, d, s = args
        prod = builder.fmul(builder.sitofp(d, VF8), s, flags=("contract",))
        return builder.fadd(a, prod, flags=("contract",))

    return F32x8(acc, dot, sv), codegen


@intrinsic
def fma_dx(typingctx, acc, dot, sv, dx):
    """acc + float(dot) * sv * dx (F32x8; dx a float32 scalar)."""

    def codegen(context, builder, sig, args):
        a, d, s, x = args
        x = context.cast(builder, x, sig.args[3], types.float32)
        scale = builder.fmul(s, _splat(builder, x, VF8), flags=("contract",))
        prod = builder.fmul(builder.sitofp(d, VF8), scale, flags=("contract",))
        return builder.fadd(a, prod, flags=("contract",))

    return F32x8(acc, dot, sv, dx), codegen


