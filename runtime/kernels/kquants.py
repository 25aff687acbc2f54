"""Row kernels of the k-quants (256-element super-blocks): Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.

Same contract as legacy.py: ``dot_<type>(w, p, nb, xq, xd, xsd)`` with ``nb`` the number of
32-element groups in the row (8 per super-block) and ``deq_<type>(w, p, nb, dst, off)``
bit-exact with ggml. Activations stay in 32-element blocks (one float scale each), so the
per-group weight scale ``s`` and offset ``c`` fold into the float accumulation:

    sum_i w_i x_i  =  dx * s * sum_i u_i xq_i  +  (s * o - c) * dx * sum_i xq_i

Types whose scales cover 16 elements (Q2_K, Q3_K, Q6_K) use a different (s, c) per half of a
group; ``fma2`` applies one scale to lanes 0..3 (elements 0..15) and another to lanes 4..7.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .vector_f32 import (
    dup2_f32x4,
    fma_lane,
    i8x8_f32,
    k4_mins,
    k4_scales,
    load_f32x8,
    pair_sums8,
    q3k_scales,
    u8x8_f32,
    vfma,
    vmul,
    vsplat,
)
from .vector_ir import (
    band,
    bit_set,
    bor,
    dot_u8,
    f16,
    hsum,
    load_u8x32,
    shl,
    shr,
    store_affine,
    vzero,
)

# Bytes per super-block (see gguflite.constants.GGML_TYPE_TRAITS).
Q2_K_BYTES = 16 + 64 + 2 + 2  # scales[16]: [ min : 4 | scale : 4 ] | qs[64] | d | dmin
Q3_K_BYTES = 32 + 64 + 12 + 2  # hmask[32] | qs[64] | scales[12]: 16 x 6 bits | d
Q4_K_BYTES = 2 + 2 + 12 + 128  # d | dmin | scales[12]: 8 x (6-bit scale, 6-bit min) | qs[128]
Q5_K_BYTES = 2 + 2 + 12 + 32 + 128  # d | dmin | scales[12] | qh[32] | qs[128]
Q6_K_BYTES = 128 + 64 + 16 + 2  # ql[128] | qh[64] | scales[16]: int8 | d


@njit(cache=True)
def _scale_min_k4(w, sp, k):
    """Scale and min of group k (0..7) from the 12 bytes at ``sp`` (Q4_K / Q5_K).

        k < 4:  sc = q[k] & 63                          m = q[k + 4] & 63
        k >= 4: sc = q[k + 4] & 15 | (q[k - 4] >> 6) << 4    m = q[k + 4] >> 4 | (q[k] >> 6) << 4
    """
    q = w[sp : sp + 12]
    if k < 4:
        return np.int32(q[k]) & 63, np.int32(q[k + 4]) & 63
    sc = (np.int32(q[k + 4]) & 15) | ((np.int32(q[k - 4]) >> 6) << 4)
    m = (np.int32(q[k + 4]) >> 4) | ((np.int32(q[k]) >> 6) << 4)
    return sc, m


@njit(cache=True)
def _scale_q3(w, sp, i):
    """Signed 6-bit scale i (0..15) of Q3_K from the 12 bytes at ``sp``.

        low 4 bits: i < 8 ? q[i] & 15 : q[i - 8] >> 4      high 2 bits: q[8 + i % 4] >> 2 (i // 4)
    """
    lo = (np.int32(w[sp + i]) & 15) if i < 8 else (np.int32(w[sp + i - 8]) >> 4)
    hi = (np.int32(w[sp + 8 + i % 4]) >> (2 * (i // 4))) & 3
    return (lo | (hi << 4)) - 32


@njit(cache=True)
def _i8(v):
    return np.int32(v) - 256 if v > 127 else np.int32(v)


# -- Q4_K / Q5_K: groups of 32 with a 6-bit scale and min each: w = d * sc * u - dmin * m ------
@njit(cache=True, fastmath=True, inline="always")
def _q45_u(w, b, k, has_qh):
    """u of group k of the super-block at byte b: low/high nibbles of the 32 bytes of pair k // 2,
    plus, for Q5_K, bit k of qh[0..32] as bit 4."""
    v = load_u8x32(w, b + (48 if has_qh else 16) + 32 * (k // 2))
    if k % 2 == 0:
        return bor(band(v, 15), _q45_hbit(w, b, k, has_qh))
    return bor(shr(v, 4), _q45_hbit(w, b, k, has_qh))


@njit(cache=True, fastmath=True, inline="always")
def _q45_hbit(w, b, k, has_qh):
    """Bit 4 of the u of group k: bit k of qh[0..32] for Q5_K, 0 for Q4_K."""
    if has_qh:
        return shl(bit_set(load_u8x32(w, b + 16), 1 << k), 4)
    return band(load_u8x32(w, b + 16), 0)


@njit(cache=True, fastmath=True, inline="always")
def _q45_pair(acc0, acc1, w, b, k, g, xq, sv, has_qh):
    """Groups k, k + 1 (the low and high nibbles of the same 32 bytes) of the super-block at
    byte b, activation group g = its first group."""
    v = load_u8x32(w, b + (48 if has_qh else 16) + 16 * k)
    u0 = bor(band(v, 15), _q45_hbit(w, b, k, has_qh))
    u1 = bor(shr(v, 4), _q45_hbit(w, b, k + 1, has_qh))
    acc0 = fma_lane(acc0, dot_u8(u0, xq, 32 * g), sv, k, k)
    acc1 = fma_lane(acc1, dot_u8(u1, xq, 32 * g + 32), sv, k + 1, k + 1)
    return acc0, acc1


@njit(cache=True, fastmath=True, inline="always")
def _q45_super(acc0, acc1, biasv, w, b, g0, xq, xd, xsd, has_qh):
    """One Q4_K / Q5_K super-block at byte b (activation groups g0 .. g0 + 7). Straight-line:
    inlined into a loop it adds no reference counting (see legacy._rows_legacy)."""
    # the 8 group scales at once: (8,) d * sc[k] * dx[g0 + k]
    sv = vmul(vmul(k4_scales(w, b + 4), load_f32x8(xd, g0)), vsplat(f16(w, b)))
    # (8,) m[k] * dx * sum(xq) of group g0 + k, times dmin
    biasv = vfma(biasv, vmul(k4_mins(w, b + 4), pair_sums8(xsd, 2 * g0)), vsplat(f16(w, b + 2)))
    acc0, acc1 = _q45_pair(acc0, acc1, w, b, 0, g0, xq, sv, has_qh)
    acc0, acc1 = _q45_pair(acc0, acc1, w, b, 2, g0 + 2, xq, sv, has_qh)
    acc0, acc1 = _q45_pair(acc0, acc1, w, b, 4, g0 + 4, xq, sv, has_qh)
    acc0, acc1 = _q45_pair(acc0, acc1, w, b, 6, g0 + 6, xq, sv, has_qh)
    return acc0, acc1, biasv


@njit(cache=True, fastmath=True, inline="always")
def _dot_q45(w, p, nb, xq, xd, xsd, bytes_per, has_qh):
    acc0 = vzero()
    acc1 = vzero()
    biasv = vzero()
    for i in range(nb // 8):
        acc0, acc1, biasv = _q45_super(acc0, acc1, biasv, w, p + bytes_per * i, 8 * i, xq, xd,
                                       xsd, has_qh)
    return hsum(acc0) + hsum(acc1) - hsum(biasv)


@njit(cache=True, fastmath=True, inline="always")
def _rows_q45(w, row_bytes, nb, lo, hi, y, xq, xd, xsd, bytes_per, has_qh):
    """y[r] = row r . x for r in [lo, hi), the row loop in the same function as the block loop
    (see legacy._rows_legacy)."""
    for r in range(lo, hi):
        p = r * row_bytes
        acc0 = vzero()
        acc1 = vzero()
        biasv = vzero()
        for i in range(nb // 8):
            acc0, acc1, biasv = _q45_super(acc0, acc1, biasv, w, p + bytes_per * i, 8 * i, xq,
                                           xd, xsd, has_qh)
        y[r] = hsum(acc0) + hsum(acc1) - hsum(biasv)


@njit(cache=True)
def _deq_q45(w, p, nb, dst, off, bytes_per, has_qh):
    for i in range(nb // 8):
        b = p + bytes_per * i
        d = f16(w, b)
        dmin = f16(w, b + 2)
        for k in range(8):
            sc, m = _scale_min_k4(w, b + 4, k)
            s = d * np.float32(sc)
            c = dmin * np.float32(m)
            store_affine(dst, off + 256 * i + 32 * k, _q45_u(w, b, k, has_qh), 0, s, c, s, c)


@njit(cache=True, fastmath=True, inline="always")
def dot_q4_k(w, p, nb, xq, xd, xsd):
    return _dot_q45(w, p, nb, xq, xd, xsd, Q4_K_BYTES, False)


@njit(cache=True, fastmath=True, inline="always")
def rows_q4_k(w, row_bytes, nb, lo, hi, y, xq, xd, xsd):
    _rows_q45(w, row_bytes, nb, lo, hi, y, xq, xd, xsd, Q4_K_BYTES, False)


@njit(cache=True)
def deq_q4_k(w, p, nb, dst, off):
    _deq_q45(w, p, nb, dst, off, Q4_K_BYTES, False)


@njit(cache=True, fastmath=True, inline="always")
def dot_q5_k(w, p, nb, xq, xd, xsd):
    return _dot_q45(w, p, nb, xq, xd, xsd, Q5_K_BYTES, True)


@njit(cache=True, fastmath=True, inline="always")
def rows_q5_k(w, row_bytes, nb, lo, hi, y, xq, xd, xsd):
    _rows_q45(w, row_bytes, nb, lo, hi, y, xq, xd, xsd, Q5_K_BYTES, True)


@njit(cache=True)
def deq_q5_k(w, p, nb, dst, off):
    _deq_q45(w, p, nb, dst, off, Q5_K_BYTES, True)


# -- Q6_K: w = d * sc[16 elements] * (u - 32), u = 4 low bits from ql | 2 high bits from qh -----
@njit(cache=True, fastmath=True, inline="always")
def _q6_u(w, b, h, g):
    """u of group g (0..3) of half h (0, 1) of the super-block at byte b.

        ql0 = ql[64h : 64h + 32], ql1 = ql[64h + 32 : 64h + 64], qh = qh[32h : 32h + 32]
        g = 0: ql0 & 15 | (qh & 3) << 4          g = 1: ql1 & 15 | (qh >> 2 & 3) << 4
        g = 2: ql0 >> 4 | (qh >> 4 & 3) << 4     g = 3: ql1 >> 4 | (qh >> 6 & 3) << 4
    """
    ql = load_u8x32(w, b + 64 * h + 32 * (g % 2))
    lo = band(ql, 15) if g < 2 else shr(ql, 4)
    hi = band(shr(load_u8x32(w, b + 128 + 32 * h), 2 * g), 3)
    return bor(lo, shl(hi, 4))


@njit(cache=True, fastmath=True, inline="always")
def _q6_half(acc0, acc1, biasv, w, b, h, G, d, xq, xd, xsd):
    """Half h of the Q6_K super-block at byte b (activation groups G .. G + 3). Straight-line."""
    sc = i8x8_f32(w, b + 192 + 8 * h)  # (8,) scales of the 8 sixteens of this half
    sv = vmul(vmul(sc, dup2_f32x4(xd, G)), vsplat(d))  # (8,) d * sc * dx
    biasv = vfma(biasv, vmul(sc, load_f32x8(xsd, 2 * G)), vsplat(np.float32(-32.0) * d))
    acc0 = fma_lane(acc0, dot_u8(_q6_u(w, b, h, 0), xq, 32 * G), sv, 0, 1)
    acc1 = fma_lane(acc1, dot_u8(_q6_u(w, b, h, 1), xq, 32 * G + 32), sv, 2, 3)
    acc0 = fma_lane(acc0, dot_u8(_q6_u(w, b, h, 2), xq, 32 * G + 64), sv, 4, 5)
    acc1 = fma_lane(acc1, dot_u8(_q6_u(w, b, h, 3), xq, 32 * G + 96), sv, 6, 7)
    return acc0, acc1, biasv


@njit(cache=True, fastmath=True, inline="always")
def _q6_super(acc0, acc1, biasv, w, b, i, xq, xd, xsd):
    d = f16(w, b + 208)
    acc0, acc1, biasv = _q6_half(acc0, acc1, biasv, w, b, 0, 8 * i, d, xq, xd, xsd)
    return _q6_half(acc0, acc1, biasv, w, b, 1, 8 * i + 4, d, xq, xd, xsd)


@njit(cache=True, fastmath=True, inline="always")
def dot_q6_k(w, p, nb, xq, xd, xsd):
    acc0 = vzero()
    acc1 = vzero()
    biasv = vzero()
    for i in range(nb // 8):
        acc0, acc1, biasv = _q6_super(acc0, acc1, biasv, w, p + Q6_K_BYTES * i, i, xq, xd, xsd)
    return hsum(acc0) + hsum(acc1) + hsum(biasv)


@njit(cache=True, fastmath=True, inline="always")
def rows_q6_k(w, row_bytes, nb, lo, hi, y, xq, xd, xsd):
    """y[r] = row r . x for r in [lo, hi) (see legacy._rows_legacy for the row loop)."""
    for r in range(lo, hi):
        p = r * row_bytes
        acc0 = vzero()
        acc1 = vzero()
        biasv = vzero()
        for i in range(nb // 8):
            acc0, acc1, biasv = _q6_super(acc0, acc1, biasv, w, p + Q6_K_BYTES * i, i, xq, xd,
                                          xsd)
        y[r] = hsum(acc0) + hsum(acc1) + hsum(biasv)


@njit(cache=True)
def deq_q6_k(w, p, nb, dst, off):
    for i in range(nb // 8):
        b = p + Q6_K_BYTES * i
        d = f16(w, b + 208)
        for h in range(2):
            for g in range(4):
                s0 = d * np.float32(_i8(w[b + 192 + 8 * h + 2 * g]))
                s1 = d * np.float32(_i8(w[b + 192 + 8 * h + 2 * g + 1]))
                store_affine(dst, off + 256 * i + 128 * h + 32 * g, _q6_u(w, b, h, g), -32,
                             s0, 0.0, s1, 0.0)


# -- Q3_K: w = d * (sc - 32) * (u - 4), u = 2 bits from qs | hmask bit << 2 ---------------------
# -- Q2_K: w = d * (sc & 15) * u - dmin * (sc >> 4), u = 2 bits from qs -------------------------
@njit(cache=True, fastmath=True, inline="always")
def _q23_u(w, qs, hm, h, j):
    """u of group j (0..3) of half h: bits 2j..2j+1 of qs[32h : 32h + 32], plus for Q3_K
    (hm >= 0) bit 4h + j of hmask[0..32] as bit 2."""
    lo = band(shr(load_u8x32(w, qs + 32 * h), 2 * j), 3)
    if hm < 0:
        return lo
    return bor(lo, shl(bit_set(load_u8x32(w, hm), 1 << (4 * h + j)), 2))


@njit(cache=True, fastmath=True, inline="always")
def _q23_params(w, b, is_q3, idx):
    """(s, c, o) of the 16 elements with scale index idx of the super-block at byte b."""
    if is_q3:
        d = f16(w, b + 108)
        return d * np.float32(_scale_q3(w, b + 96, idx)), np.float32(0.0), -4
    sc = np.int32(w[b + idx])
    return (f16(w, b + 80) * np.float32(sc & 15), f16(w, b + 82) * np.float32(sc >> 4), 0)


@njit(cache=True, fastmath=True, inline="always")
def _dot_q23_half(acc0, acc1, w, qs, hm, h, G, xq, sv):
    """The 4 groups of half h of a Q2_K / Q3_K super-block into two accumulators."""
    acc0 = fma_lane(acc0, dot_u8(_q23_u(w, qs, hm, h, 0), xq, 32 * G), sv, 0, 1)
    acc1 = fma_lane(acc1, dot_u8(_q23_u(w, qs, hm, h, 1), xq, 32 * G + 32), sv, 2, 3)
    acc0 = fma_lane(acc0, dot_u8(_q23_u(w, qs, hm, h, 2), xq, 32 * G + 64), sv, 4, 5)
    acc1 = fma_lane(acc1, dot_u8(_q23_u(w, qs, hm, h, 3), xq, 32 * G + 96), sv, 6, 7)
    return acc0, acc1


@njit(cache=True, fastmath=True, inline="always")
def _q3_super(acc0, acc1, biasv, w, b, i, xq, xd, xsd):
    """Q3_K super-block i at byte b: w = d * (sc - 32) * (u - 4); the 8 scales of each half
    are unpacked as one vector [g0a, g0b, g1a, g1b, g2a, g2b, g3a, g3b] (a, b: the two sixteens
    of group g). Straight-line."""
    d = vsplat(f16(w, b + 108))
    # half 0 then half 1, written out so each scale unpack and bit test is a constant
    s8 = vmul(q3k_scales(w, b + 96, 0), d)  # (8,) d * (sc - 32)
    biasv = vfma(biasv, vmul(s8, vsplat(np.float32(-4.0))), load_f32x8(xsd, 16 * i))
    acc0, acc1 = _dot_q23_half(acc0, acc1, w, b + 32, b, 0, 8 * i, xq,
                               vmul(s8, dup2_f32x4(xd, 8 * i)))
    s8 = vmul(q3k_scales(w, b + 96, 1), d)
    biasv = vfma(biasv, vmul(s8, vsplat(np.float32(-4.0))), load_f32x8(xsd, 16 * i + 8))
    acc0, acc1 = _dot_q23_half(acc0, acc1, w, b + 32, b, 1, 8 * i + 4, xq,
                               vmul(s8, dup2_f32x4(xd, 8 * i + 4)))
    return acc0, acc1, biasv


@njit(cache=True, fastmath=True, inline="always")
def _q2_half(acc0, acc1, biasv, w, b, h, G, d, mdmin, xq, xd, xsd):
    """Half h of the Q2_K super-block at byte b: w = d * (sc & 15) * u - dmin * (sc >> 4)."""
    s8 = vmul(u8x8_f32(w, b + 8 * h, 0, 15), d)  # (8,) d * (sc & 15)
    c8 = vmul(u8x8_f32(w, b + 8 * h, 4, 15), mdmin)  # (8,) -dmin * (sc >> 4)
    biasv = vfma(biasv, c8, load_f32x8(xsd, 2 * G))
    acc0, acc1 = _dot_q23_half(acc0, acc1, w, b + 16, -1, h, G, xq, vmul(s8, dup2_f32x4(xd, G)))
    return acc0, acc1, biasv


@njit(cache=True, fastmath=True, inline="always")
def _q2_super(acc0, acc1, biasv, w, b, i, xq, xd, xsd):
    """Q2_K super-block i at byte b, scales as in _q3_super. Straight-line."""
    d = vsplat(f16(w, b + 80))
    mdmin = vsplat(-f16(w, b + 82))
    acc0, acc1, biasv = _q2_half(acc0, acc1, biasv, w, b, 0, 8 * i, d, mdmin, xq, xd, xsd)
    return _q2_half(acc0, acc1, biasv, w, b, 1, 8 * i + 4, d, mdmin, xq, xd, xsd)


@njit(cache=True, fastmath=True, inline="always")
def _dot_q23(w, p, nb, xq, xd, xsd, is_q3):
    acc0 = vzero()
    acc1 = vzero()
    biasv = vzero()
    for i in range(nb // 8):
        if is_q3:
            acc0, acc1, biasv = _q3_super(acc0, acc1, biasv, w, p + Q3_K_BYTES * i, i, xq, xd,
                                          xsd)
        else:
            acc0, acc1, biasv = _q2_super(acc0, acc1, biasv, w, p + Q2_K_BYTES * i, i, xq, xd,
                                          xsd)
    return hsum(acc0) + hsum(acc1) + hsum(biasv)


@njit(cache=True, fastmath=True, inline="always")
def _rows_q23(w, row_bytes, nb, lo, hi, y, xq, xd, xsd, is_q3):
    """y[r] = row r . x for r in [lo, hi) (see legacy._rows_legacy for the row loop)."""
    for r in range(lo, hi):
        p = r * row_bytes
        acc0 = vzero()
        acc1 = vzero()
        biasv = vzero()
        for i in range(nb // 8):
            if is_q3:
                acc0, acc1, biasv = _q3_super(acc0, acc1, biasv, w, p + Q3_K_BYTES * i, i, xq,
                                              xd, xsd)
            else:
                acc0, acc1, biasv = _q2_super(acc0, acc1, biasv, w, p + Q2_K_BYTES * i, i, xq,
                                              xd, xsd)
        y[r] = hsum(acc0) + hsum(acc1) + hsum(biasv)


@njit(cache=True, fastmath=True, inline="always")
def dot_q3_k(w, p, nb, xq, xd, xsd):
    return _dot_q23(w, p, nb, xq, xd, xsd, True)


@njit(cache=True, fastmath=True, inline="always")
def rows_q3_k(w, row_bytes, nb, lo, hi, y, xq, xd, xsd):
    _rows_q23(w, row_bytes, nb, lo, hi, y, xq, xd, xsd, True)


@njit(cache=True, fastmath=True, inline="always")
def dot_q2_k(w, p, nb, xq, xd, xsd):
    return _dot_q23(w, p, nb, xq, xd, xsd, False)


@njit(cache=True, fastmath=True, inline="always")
def rows_q2_k(w, row_bytes, nb, lo, hi, y, xq, xd, xsd):
    _rows_q23(w, row_bytes, nb, lo, hi, y, xq, xd, xsd, False)


@njit(cache=True)
def _deq_q23(w, p, nb, dst, off, is_q3):
    bytes_per = Q3_K_BYTES if is_q3 else Q2_K_BYTES
    for i in range(nb // 8):
        b = p + bytes_per * i
        qs = b + 32 if is_q3 else b + 16
        hm = b if is_q3 else -1
        for h in range(2):
            for j in range(4):
                s0, c0, o = _q23_params(w, b, is_q3, 8 * h + 2 * j)
                s1, c1, o = _q23_params(w, b, is_q3, 8 * h + 2 * j + 1)
                store_affine(dst, off + 256 * i + 128 * h + 32 * j,
                             _q23_u(w, qs, hm, h, j), o, s0, c0, s1, c1)


@njit(cache=True)
def deq_q3_k(w, p, nb, dst, off):
    _deq_q23(w, p, nb, dst, off, True)


@njit(cache=True)
def deq_q2_k(w, p, nb, dst, off):
    _deq_q23(w, p, nb, dst, off, False)
