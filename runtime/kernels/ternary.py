"""Row kernels of the ternary types TQ1_0 and TQ2_0 (256-element blocks, w = d * (t - 1)).

Same contract as legacy.py. Trits t in {0, 1, 2} are the unsigned lanes u, the offset is -1.

    TQ2_0: qs[64] | d: f16.  Element 128c + 32l + m = (qs[32c + m] >> 2l) & 3.
    TQ1_0: qs[48] | qh[4] | d: f16. Five trits per byte in base-3 fixed point: the trit n of
           byte q is ((q * 3**n mod 256) * 3) >> 8.
           elements   0..159: 32n + m       <- qs[m],      n = 0..4
           elements 160..239: 160 + 16n + m <- qs[32 + m], n = 0..4
           elements 240..255: 240 + 4n + j  <- qh[j],      n = 0..3
"""

from __future__ import annotations

from numba import njit

from .vector_f32 import ldf, pair_sums8, vfma, vsplat
from .vector_ir import (
    band,
    dot_u8,
    dup16,
    f16,
    fma2,
    hsum,
    load_u8x32,
    mul8,
    mul_halves,
    shr,
    store_affine,
    tq1_tail,
    trit,
    vzero,
)

TQ1_0_BYTES = 48 + 4 + 2
TQ2_0_BYTES = 64 + 2
_POW3 = (1, 3, 9, 27, 81)


@njit(cache=True, fastmath=True, inline="always")
def _tq2_u(w, b, k):
    """Trits of group k (0..7) of the TQ2_0 block at byte b: (32,) in {0, 1, 2}."""
    return band(shr(load_u8x32(w, b + 32 * (k // 4)), 2 * (k % 4)), 3)


@njit(cache=True, fastmath=True, inline="always")
def _tq1_u(w, b, k):
    """Trits of group k (0..7) of the TQ1_0 block at byte b: (32,) in {0, 1, 2}."""
    if k < 5:
        return trit(mul8(load_u8x32(w, b), _POW3[k]))
    if k == 5:
        return trit(mul_halves(dup16(w, b + 32), 1, 3))
    if k == 6:
        return trit(mul_halves(dup16(w, b + 32), 9, 27))
    return trit(tq1_tail(w, b + 32, b + 48))


@njit(cache=True, fastmath=True, inline="always")
def _tq_group(acc, u, xq, xd, G, d):
    s = d * ldf(xd, G)
    return fma2(acc, dot_u8(u, xq, 32 * G), s, s)


@njit(cache=True, fastmath=True, inline="always")
def dot_tq1_0(w, p, nb, xq, xd, xsd):
    """TQ1_0 row dot; the 8 groups of a block are written out (no vector merges across
    branches, which Numba would route through memory)."""
    acc0 = vzero()
    acc1 = vzero()
    biasv = vzero()
    for i in range(nb // 8):
        b = p + TQ1_0_BYTES * i
        d = f16(w, b + TQ1_0_BYTES - 2)
        G = 8 * i
        v = load_u8x32(w, b)
        acc0 = _tq_group(acc0, trit(v), xq, xd, G, d)
        acc1 = _tq_group(acc1, trit(mul8(v, 3)), xq, xd, G + 1, d)
        acc0 = _tq_group(acc0, trit(mul8(v, 9)), xq, xd, G + 2, d)
        acc1 = _tq_group(acc1, trit(mul8(v, 27)), xq, xd, G + 3, d)
        acc0 = _tq_group(acc0, trit(mul8(v, 81)), xq, xd, G + 4, d)
        v2 = dup16(w, b + 32)
        acc1 = _tq_group(acc1, trit(mul_halves(v2, 1, 3)), xq, xd, G + 5, d)
        acc0 = _tq_group(acc0, trit(mul_halves(v2, 9, 27)), xq, xd, G + 6, d)
        acc1 = _tq_group(acc1, trit(tq1_tail(w, b + 32, b + 48)), xq, xd, G + 7, d)
        biasv = vfma(biasv, pair_sums8(xsd, 2 * G), vsplat(-d))  # o = -1
    return hsum(acc0) + hsum(acc1) + hsum(biasv)


@njit(cache=True, fastmath=True, inline="always")
def dot_tq2_0(w, p, nb, xq, xd, xsd):
    acc0 = vzero()
    acc1 = vzero()
    biasv = vzero()
    for i in range(nb // 8):
        b = p + TQ2_0_BYTES * i
        d = f16(w, b + TQ2_0_BYTES - 2)
        G = 8 * i
        for c in range(2):
            v = load_u8x32(w, b + 32 * c)
            acc0 = _tq_group(acc0, band(v, 3), xq, xd, G + 4 * c, d)
            acc1 = _tq_group(acc1, band(shr(v, 2), 3), xq, xd, G + 4 * c + 1, d)
            acc0 = _tq_group(acc0, band(shr(v, 4), 3), xq, xd, G + 4 * c + 2, d)
            acc1 = _tq_group(acc1, shr(v, 6), xq, xd, G + 4 * c + 3, d)
        biasv = vfma(biasv, pair_sums8(xsd, 2 * G), vsplat(-d))  # o = -1
    return hsum(acc0) + hsum(acc1) + hsum(biasv)


@njit(cache=True)
def _deq_tq(w, p, nb, dst, off, is_tq1):
    bytes_per = TQ1_0_BYTES if is_tq1 else TQ2_0_BYTES
    for i in range(nb // 8):
        b = p + bytes_per * i
        d = f16(w, b + bytes_per - 2)
        for k in range(8):
            u = _tq1_u(w, b, k) if is_tq1 else _tq2_u(w, b, k)
            store_affine(dst, off + 256 * i + 32 * k, u, -1, d, 0.0, d, 0.0)


@njit(cache=True)
def deq_tq1_0(w, p, nb, dst, off):
    _deq_tq(w, p, nb, dst, off, True)


@njit(cache=True)
def deq_tq2_0(w, p, nb, dst, off):
    _deq_tq(w, p, nb, dst, off, False)
