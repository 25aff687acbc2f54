"""Scalar helpers that reproduce ggml's C arithmetic bit for bit, in NumPy and in Numba.

Bit-exactness with ggml's reference quantizers hangs on four details:

1. ``GGML_FP32_TO_FP16`` rounds to nearest even and sends overflow to +-inf (NaN -> 0x7E00).
2. C's ``roundf`` / ``lroundf`` round halves away from zero (``np.round`` rounds them to even).
3. A float -> integer cast in C truncates; libggml-base is built for baseline x86-64, where the
   cast is ``cvttss2si``: NaN, +-inf and anything outside int32 give INT32_MIN, and a cast to
   ``int8_t`` / ``uint8_t`` keeps the low byte. (Finite inputs reach this only in blocks whose
   scale underflows, e.g. all-subnormal blocks where ``1/d`` is inf.)
4. Arithmetic is sequential float32 without fused multiply-add (no FMA in baseline x86-64, and
   Numba does not contract without ``fastmath``).

Every constant below is a ``np.float32`` so Numba keeps the arithmetic in float32.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

F32_HALF = np.float32(0.5)
F32_ONE = np.float32(1.0)
F32_ZERO = np.float32(0.0)
INT32_MIN = -(1 << 31)
_F32_2_31 = np.float32(2.0**31)
_SCALE_TO_INF = np.float32(2.0**112)  # 0x1.0p+112f in ggml_compute_fp32_to_fp16
_SCALE_TO_ZERO = np.float32(2.0**-110)  # 0x1.0p-110f


# -- fp16 <-> fp32 --------------------------------------------------------------------------

def _build_fp16_table() -> np.ndarray:
    """All 65536 fp16 bit patterns -> float32, as ggml_compute_fp16_to_fp32 returns them.

    Exact for every number; a NaN comes back quiet (the final float multiply in ggml sets the
    quiet bit 0x00400000 of a signalling NaN), with its payload otherwise kept.
    """
    table = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    table = table.astype(np.float32)  # (65536,)
    bits = table.view(np.uint32)
    nan = np.isnan(table)
    bits[nan] |= np.uint32(0x00400000)
    table.flags.writeable = False
    return table


FP16_TO_F32 = _build_fp16_table()  # (65536,) float32, read-only


def fp16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """uint16 fp16 bit patterns -> float32 (ggml's conversion), any shape."""
    return FP16_TO_F32[np.asarray(bits, dtype=np.uint16)]


def f32_to_fp16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> uint16 fp16 bits as GGML_FP32_TO_FP16: nearest even, overflow -> inf.

    NumPy's cast rounds the same way; only NaN differs (ggml writes 0x7E00 with the sign).
    """
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):
        out = x.astype(np.float16).view(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        sign = (x.view(np.uint32) >> 16).astype(np.uint16) & np.uint16(0x8000)
        out = np.where(nan, sign | np.uint16(0x7E00), out)
    return out


# -- C casts and rounding, NumPy versions (reference paths) -----------------------------------

def c_f32_to_i32(v: np.ndarray) -> np.ndarray:
    """``(int32_t)v`` on x86-64 (cvttss2si): truncate; NaN/inf/out of range -> INT32_MIN.

    Returns int64 of v's shape (room to add offsets without overflow).
    """
    v = np.asarray(v, dtype=np.float32)
    ok = (v > -_F32_2_31) & (v < _F32_2_31)  # NaN compares False
    return np.where(ok, np.trunc(np.where(ok, v, F32_ZERO)), INT32_MIN).astype(np.int64)


def c_f32_to_i8(v: np.ndarray) -> np.ndarray:
    """``(int8_t)v``: the int32 cast, then the low byte read as signed. int64 result."""
    low = c_f32_to_i32(v) & 0xFF
    return np.where(low >= 0x80, low - 0x100, low)


def c_roundf(v: np.ndarray) -> np.ndarray:
    """C ``roundf``: nearest integer, halves away from zero (float32 in, float32 out)."""
    v = np.asarray(v, dtype=np.float32)
    t = np.trunc(v)  # exact
    frac = v - t  # exact: |frac| < 1 and same exponent range as v
    return (t + np.where(frac >= F32_HALF, F32_ONE, np.where(frac <= -F32_HALF, -F32_ONE,
                                                             F32_ZERO))).astype(np.float32)


def c_lroundf(v: np.ndarray) -> np.ndarray:
    """glibc ``lroundf`` on x86-64: halves away from zero; NaN/inf/too large -> INT64_MIN."""
    v = np.asarray(v, dtype=np.float32)
    ok = np.abs(v) < np.float32(2.0**63)  # NaN compares False
    r = c_roundf(np.where(ok, v, F32_ZERO))
    return np.where(ok, r, -(2.0**63)).astype(np.int64)


# -- Numba scalar versions (fast paths) --------------------------------------------------------

@intrinsic
def f32_as_u32(typingctx, x):
    """Reinterpret the bits of a float32 as uint32 (an LLVM bitcast, no memory round trip)."""
    if x != types.float32:
        return None
    sig = types.uint32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


@intrinsic
def u32_as_f32(typingctx, x):
    """Reinterpret the bits of a uint32 as float32."""
    if x != types.uint32:
        return None
    sig = types.float32(types.uint32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@njit(cache=True, inline="always")
def nb_f32_to_fp16(f: np.float32) -> np.uint16:
    """ggml_compute_fp32_to_fp16 step by step (scalar float32 -> fp16 bits)."""
    base = (abs(f) * _SCALE_TO_INF) * _SCALE_TO_ZERO
    w = f32_as_u32(f)
    shl1_w = np.uint32(w + w)
    sign = w & np.uint32(0x80000000)
    bias = shl1_w & np.uint32(0xFF000000)
    if bias < np.uint32(0x71000000):
        bias = np.uint32(0x71000000)
    base = u32_as_f32(np.uint32((bias >> np.uint32(1)) + np.uint32(0x07800000))) + base
    bits = f32_as_u32(base)
    exp_bits = (bits >> np.uint32(13)) & np.uint32(0x00007C00)
    mantissa_bits = bits & np.uint32(0x00000FFF)
    nonsign = exp_bits + mantissa_bits
    if shl1_w > np.uint32(0xFF000000):
        nonsign = np.uint32(0x7E00)
    return np.uint16((sign >> np.uint32(16)) | nonsign)


@njit(cache=True, inline="always")
def nb_c_f32_to_i32(v: np.float32) -> np.int64:
    """``(int32_t)v`` with x86 semantics (see :func:`c_f32_to_i32`)."""
    if v > -_F32_2_31 and v < _F32_2_31:
        return np.int64(v)  # truncates toward zero
    return np.int64(INT32_MIN)


@njit(cache=True, inline="always")
def nb_c_f32_to_i8(v: np.float32) -> np.int64:
    """``(int8_t)v``: low byte of the int32 cast, read as signed."""
    low = nb_c_f32_to_i32(v) & 0xFF
    return low - 0x100 if low >= 0x80 else low


@njit(cache=True, inline="always")
def nb_c_roundf(v: np.float32) -> np.float32:
    """C ``roundf`` for a float32 (halves away from zero); NaN and inf pass through."""
    if not abs(v) < np.float32(8388608.0):  # |v| >= 2**23 is integral already (or NaN/inf)
        return v
    t = np.float32(np.int64(v))  # exact truncation, |v| < 2**23
    frac = v - t
    if frac >= F32_HALF:
        t += F32_ONE
    elif frac <= -F32_HALF:
        t -= F32_ONE
    return t


@njit(cache=True, inline="always")
def nb_c_lroundf(v: np.float32) -> np.int64:
    """glibc ``lroundf`` (see :func:`c_lroundf`)."""
    if abs(v) < np.float32(2.0**63):
        return np.int64(nb_c_roundf(v))
    return np.int64(-(1 << 63))


_F32_JUST_BELOW_HALF = np.float32(0.49999997)  # nextafter(0.5f, 0)


@njit(cache=True, inline="always")
def nb_roundf_small(v: np.float32) -> np.int32:
    """``(int32_t)roundf(v)`` for finite |v| < 2**31, branch-free so loops vectorize.

    ``v + copysign(0.49999997f, v)`` then truncation: exact for every float32 (a plain
    ``+ 0.5`` would round 0.49999997 up to 1).
    """
    return np.int32(v + np.float32(np.copysign(_F32_JUST_BELOW_HALF, v)))
