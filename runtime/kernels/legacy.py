"""Row kernels of the legacy 32-element block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.

Each type has two functions over one row that starts at byte ``p`` of the flat weight bytes
``w`` and holds ``nb`` blocks:

- ``dot_<type>(w, p, nb, xq, xd, xsd) -> float``: the row times the quantized activations
  (see activations.py), in place on the stored bytes;
- ``deq_<type>(w, p, nb, dst, off)``: the row dequantized to ``dst[off : off + 32 * nb]``,
  bit-exact with ggml's ``dequantize_row_*``.

Every weight is written ``w = s * (u + o) - c`` with ``u`` an unsigned integer lane, ``o`` a
per-type integer offset and (s, c) per block, so that with ``x ~= dx * xq``

    sum_i w_i x_i = dx * s * sum_i u_i xq_i  +  (s * o - c) * dx * sum_i xq_i
                    ---- fma2(dot_u8) ----     ----- xsd (precomputed) -----
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .vector_f32 import ldf
from .vector_ir import (
    bits32,
    bor,
    dot_s8,
    dot_u8,
    f16,
    fma2,
    hsum,
    nibbles16,
    shl,
    store_affine,
    store_s8,
    vzero,
)

# Bytes per block (see gguflite.constants.GGML_TYPE_TRAITS).
Q4_0_BYTES = 2 + 16  # d: f16 | qs[16]: byte i = [ q(16 + i) : 4 | q(i) : 4 ]
Q4_1_BYTES = 2 + 2 + 16  # d: f16 | m: f16 | qs[16]
Q5_0_BYTES = 2 + 4 + 16  # d: f16 | qh: u32, bit i = fifth bit of q(i) | qs[16]
Q5_1_BYTES = 2 + 2 + 4 + 16  # d: f16 | m: f16 | qh: u32 | qs[16]
Q8_0_BYTES = 2 + 32  # d: f16 | qs[32]: int8


@njit(cache=True, fastmath=True, inline="always")
def _u_q5(w, b):
    """u = q | fifth bit << 4 of the block whose qh starts at byte b: (32,) in [0, 31]."""
    return bor(nibbles16(w, b + 4), shl(bits32(w, b), 4))


@njit(cache=True, fastmath=True, inline="always")
def _unpack(w, b, five_bits):
    """u of the block whose quant bytes (qh for 5-bit types, else qs) start at byte b."""
    return _u_q5(w, b) if five_bits else nibbles16(w, b)


@njit(cache=True, fastmath=True, inline="always")
def _apply(acc, bias, u, d, c, xq, xd, xsd, j):
    """One activation's share of an unpacked block (u, d, c = m or o * d) against its block j:
    acc += d * dx_j * dot(u, xq_j) (F32x8) and the scalar bias += c * dx_j * sum(xq_j). The
    one-row and the four-row kernels both run exactly this, in this order."""
    s = d * ldf(xd, j)
    acc = fma2(acc, dot_u8(u, xq, 32 * j), s, s)
    bias += c * (ldf(xsd, 2 * j) + ldf(xsd, 2 * j + 1))
    return acc, bias


@njit(cache=True, fastmath=True, inline="always")
def _block(w, b, five_bits, qoff, has_min, o):
    """The block whose bytes start at b, unpacked: (u, d, c) with c = m (-c is the minimum)
    or o * d."""
    d = f16(w, b)
    c = f16(w, b + 2) if has_min else np.float32(o) * d
    return _unpack(w, b + qoff, five_bits), d, c


@njit(cache=True, fastmath=True, inline="always")
def _legacy_step(acc, bias, w, b, j, xq, xd, xsd, five_bits, qoff, has_min, o):
    """Block j of a row, its bytes at b: acc += d * dx * dot(u, xq) (F32x8), and the scalar
    bias += (d * o | m) * dx * sum(xq). Straight-line (no loop), so inlining it into a loop
    adds no reference counting (see rows_q8_0)."""
    u, d, c = _block(w, b, five_bits, qoff, has_min, o)
    return _apply(acc, bias, u, d, c, xq, xd, xsd, j)


@njit(cache=True, fastmath=True, inline="always")
def _legacy_step4(a0, a1, a2, a3, c0, c1, c2, c3, w, b, j, xq, xd, xsd, g0, g1, g2, g3,
                  five_bits, qoff, has_min, o):
    """_legacy_step for four activations whose blocks start at block g_k of the flat xq / xd /
    xsd: the block is unpacked once, then each activation runs _apply (as alone)."""
    u, d, c = _block(w, b, five_bits, qoff, has_min, o)
    a0, c0 = _apply(a0, c0, u, d, c, xq, xd, xsd, g0 + j)
    a1, c1 = _apply(a1, c1, u, d, c, xq, xd, xsd, g1 + j)
    a2, c2 = _apply(a2, c2, u, d, c, xq, xd, xsd, g2 + j)
    a3, c3 = _apply(a3, c3, u, d, c, xq, xd, xsd, g3 + j)
    return a0, a1, a2, a3, c0, c1, c2, c3


@njit(cache=True, fastmath=True, inline="always")
def _dot_legacy(w, p, nb, xq, xd, xsd, five_bits, bytes_per, qoff, has_min, o):
    """Row dot of a 32-block type with w = d * (u + o) [+ m]; two accumulators so consecutive
    blocks do not wait on each other's fused multiply-add."""
    acc0 = vzero()
    acc1 = vzero()
    bias = np.float32(0.0)
    for j in range(0, nb - 1, 2):
        b = p + bytes_per * j
        acc0, bias = _legacy_step(acc0, bias, w, b, j, xq, xd, xsd, five_bits, qoff, has_min, o)
        acc1, bias = _legacy_step(acc1, bias, w, b + bytes_per, j + 1, xq, xd, xsd, five_bits,
                                  qoff, has_min, o)
    if nb % 2:
        acc0, bias = _legacy_step(acc0, bias, w, p + bytes_per * (nb - 1), nb - 1, xq, xd, xsd,
                                  five_bits, qoff, has_min, o)
    return hsum(acc0) + hsum(acc1) + bias


@njit(cache=True, fastmath=True, inline="always")
def _rows_legacy(w, row_bytes, nb, lo, hi, y, xq, xd, xsd, five_bits, bytes_per, qoff, has_min,
                 o):
    """y[r] = row r . x for r in [lo, hi): _dot_legacy with the row loop in the same function.

    Why not call _dot_legacy per row: an inline="always" helper that takes arrays and contains
    a loop leaves an atomic incref/decref of each array per call (Numba's reference-count
    pruning does not see across the loop); per 576-wide row that cost ~60 % of the work, and
    with 2 threads both cores hammer the same counters.
    """
    for r in range(lo, hi):
        p = r * row_bytes
        acc0 = vzero()
        acc1 = vzero()
        bias = np.float32(0.0)
        for j in range(0, nb - 1, 2):
            b = p + bytes_per * j
            acc0, bias = _legacy_step(acc0, bias, w, b, j, xq, xd, xsd, five_bits, qoff,
                                      has_min, o)
            acc1, bias = _legacy_step(acc1, bias, w, b + bytes_per, j + 1, xq, xd, xsd,
                                      five_bits, qoff, has_min, o)
        if nb % 2:
            acc0, bias = _legacy_step(acc0, bias, w, p + bytes_per * (nb - 1), nb - 1, xq, xd,
                                      xsd, five_bits, qoff, has_min, o)
        y[r] = hsum(acc0) + hsum(acc1) + bias


@njit(cache=True, inline="always")
def _first_blocks(nb, s0, count):
    """The first activation block of rows s0 .. s0 + 3 of the flat activations (nb blocks a
    row), the last of the ``count`` rows repeated in the lanes past it."""
    return (nb * s0, nb * (s0 + min(1, count - 1)), nb * (s0 + min(2, count - 1)),
            nb * (s0 + min(3, count - 1)))


@njit(cache=True, fastmath=True, inline="always")
def _rows_legacy4(w, row_bytes, nb, lo, hi, Y, s0, count, xq, xd, xsd, five_bits, bytes_per,
                  qoff, has_min, o):
    """Y[s0 + k, r] = row r . x_{s0 + k} for k < count (<= 4) and r in [lo, hi), each equal to
    what _rows_legacy gives that activation alone (the same _apply sequence per activation;
    the drivers compile without reassociation, dispatch.ROW_FASTMATH). xq / xd / xsd: the
    activations' quantized rows, flat (row s at xq[32 nb s:], xd[nb s:], xsd[2 nb s:]); a
    count below 4 repeats the last activation in the unused lanes."""
    g0, g1, g2, g3 = _first_blocks(nb, s0, count)
    for r in range(lo, hi):
        p = r * row_bytes
        a0, a1, a2, a3 = vzero(), vzero(), vzero(), vzero()
        e0, e1, e2, e3 = vzero(), vzero(), vzero(), vzero()
        c0 = c1 = c2 = c3 = np.float32(0.0)
        for j in range(0, nb - 1, 2):
            b = p + bytes_per * j
            a0, a1, a2, a3, c0, c1, c2, c3 = _legacy_step4(
                a0, a1, a2, a3, c0, c1, c2, c3, w, b, j, xq, xd, xsd, g0, g1, g2, g3,
                five_bits, qoff, has_min, o)
            e0, e1, e2, e3, c0, c1, c2, c3 = _legacy_step4(
                e0, e1, e2, e3, c0, c1, c2, c3, w, b + bytes_per, j + 1, xq, xd, xsd, g0, g1,
                g2, g3, five_bits, qoff, has_min, o)
        if nb % 2:
            a0, a1, a2, a3, c0, c1, c2, c3 = _legacy_step4(
                a0, a1, a2, a3, c0, c1, c2, c3, w, p + bytes_per * (nb - 1), nb - 1, xq, xd,
                xsd, g0, g1, g2, g3, five_bits, qoff, has_min, o)
        Y[s0, r] = hsum(a0) + hsum(e0) + c0
        if count > 1:
            Y[s0 + 1, r] = hsum(a1) + hsum(e1) + c1
        if count > 2:
            Y[s0 + 2, r] = hsum(a2) + hsum(e2) + c2
        if count > 3:
            Y[s0 + 3, r] = hsum(a3) + hsum(e3) + c3


@njit(cache=True, fastmath=True, inline="always")
def dot_q4_0(w, p, nb, xq, xd, xsd):
    return _dot_legacy(w, p, nb, xq, xd, xsd, False, Q4_0_BYTES, 2, False, -8)


@njit(cache=True, fastmath=True, inline="always")
def rows_q4_0(w, row_bytes, nb, lo, hi, y, xq, xd, xsd):
    _rows_legacy(w, row_bytes, nb, lo, hi, y, xq, xd, xsd, False, Q4_0_BYTES, 2, False, -8)


@njit(cache=True, fastmath=True, inline="always")
def rows4_q4_0(w, row_bytes, nb, lo, hi, Y, s0, count, xq, xd, xsd):
    _rows_legacy4(w, row_bytes, nb, lo, hi, Y, s0, count, xq, xd, xsd, False, Q4_0_BYTES, 2, False, -8)


@njit(cache=True)
def deq_q4_0(w, p, nb, dst, off):
    for j in range(nb):
        b = p + Q4_0_BYTES * j
        d = f16(w, b)
        store_affine(dst, off + 32 * j, nibbles16(w, b + 2), -8, d, 0.0, d, 0.0)


@njit(cache=True, fastmath=True, inline="always")
def dot_q4_1(w, p, nb, xq, xd, xsd):
    return _dot_legacy(w, p, nb, xq, xd, xsd, False, Q4_1_BYTES, 4, True, 0)


@njit(cache=True, fastmath=True, inline="always")
def rows_q4_1(w, row_bytes, nb, lo, hi, y, xq, xd, xsd):
    _rows_legacy(w, row_bytes, nb, lo, hi, y, xq, xd, xsd, False, Q4_1_BYTES, 4, True, 0)


@njit(cache=True, fastmath=True, inline="always")
def rows4_q4_1(w, row_bytes, nb, lo, hi, Y, s0, count, xq, xd, xsd):
    _rows_legacy4(w, row_bytes, nb, lo, hi, Y, s0, count, xq, xd, xsd, False, Q4_1_BYTES, 4, True, 0)


@njit(cache=True)
def deq_q4_1(w, p, nb, dst, off):
    for j in range(nb):
        b = p + Q4_1_BYTES * j
        d = f16(w, b)
        m = f16(w, b + 2)
        store_affine(dst, off + 32 * j, nibbles16(w, b + 4), 0, d, -m, d, -m)


@njit(cache=True, fastmath=True, inline="always")
def dot_q5_0(w, p, nb, xq, xd, xsd):
    return _dot_legacy(w, p, nb, xq, xd, xsd, True, Q5_0_BYTES, 2, False, -16)


@njit(cache=True, fastmath=True, inline="always")
def rows_q5_0(w, row_bytes, nb, lo, hi, y, xq, xd, xsd):
    _rows_legacy(w, row_bytes, nb, lo, hi, y, xq, xd, xsd, True, Q5_0_BYTES, 2, False, -16)


@njit(cache=True, fastmath=True, inline="always")
def rows4_q5_0(w, row_bytes, nb, lo, hi, Y, s0, count, xq, xd, xsd):
    _rows_legacy4(w, row_bytes, nb, lo, hi, Y, s0, count, xq, xd, xsd, True, Q5_0_BYTES, 2, False, -16)


@njit(cache=True)
def deq_q5_0(w, p, nb, dst, off):
    for j in range(nb):
        b = p + Q5_0_BYTES * j
        d = f16(w, b)
        store_affine(dst, off + 32 * j, _u_q5(w, b + 2), -16, d, 0.0, d, 0.0)


@njit(cache=True, fastmath=True, inline="always")
def dot_q5_1(w, p, nb, xq, xd, xsd):
    return _dot_legacy(w, p, nb, xq, xd, xsd, True, Q5_1_BYTES, 4, True, 0)


@njit(cache=True, fastmath=True, inline="always")
def rows_q5_1(w, row_bytes, nb, lo, hi, y, xq, xd, xsd):
    _rows_legacy(w, row_bytes, nb, lo, hi, y, xq, xd, xsd, True, Q5_1_BYTES, 4, True, 0)


@njit(cache=True, fastmath=True, inline="always")
def rows4_q5_1(w, row_bytes, nb, lo, hi, Y, s0, count, xq, xd, xsd):
    _rows_legacy4(w, row_bytes, nb, lo, hi, Y, s0, count, xq, xd, xsd, True, Q5_1_BYTES, 4, True, 0)


@njit(cache=True)
def deq_q5_1(w, p, nb, dst, off):
    for j in range(nb):
        b = p + Q5_1_BYTES * j
        d = f16(w, b)
        m = f16(w, b + 2)
        store_affine(dst, off + 32 * j, _u_q5(w, b + 4), 0, d, -m, d, -m)


@njit(cache=True, fastmath=True, inline="always")
def _q8_0_step(acc, w, b, j, xq, xd):
    """Block j of a Q8_0 row, its bytes at b: acc += d * dx * dot(q, xq). Straight-line."""
    s = f16(w, b) * ldf(xd, j)
    return fma2(acc, dot_s8(w, b + 2, xq, 32 * j), s, s)


@njit(cache=True, fastmath=True, inline="always")
def dot_q8_0(w, p, nb, xq, xd, xsd):
    acc0 = vzero()
    acc1 = vzero()
    for j in range(0, nb - 1, 2):
        b = p + Q8_0_BYTES * j
        acc0 = _q8_0_step(acc0, w, b, j, xq, xd)
        acc1 = _q8_0_step(acc1, w, b + Q8_0_BYTES, j + 1, xq, xd)
    if nb % 2:
        acc0 = _q8_0_step(acc0, w, p + Q8_0_BYTES * (nb - 1), nb - 1, xq, xd)
    return hsum(acc0) + hsum(acc1)


@njit(cache=True, fastmath=True, inline="always")
def rows_q8_0(w, row_bytes, nb, lo, hi, y, xq, xd, xsd):
    """y[r] = row r . x for r in [lo, hi): dot_q8_0 with the row loop in the same function
    (see _rows_legacy for why)."""
    for r in range(lo, hi):
        p = r * row_bytes
        acc0 = vzero()
        acc1 = vzero()
        for j in range(0, nb - 1, 2):
            b = p + Q8_0_BYTES * j
            acc0 = _q8_0_step(acc0, w, b, j, xq, xd)
            acc1 = _q8_0_step(acc1, w, b + Q8_0_BYTES, j + 1, xq, xd)
        if nb % 2:
            acc0 = _q8_0_step(acc0, w, p + Q8_0_BYTES * (nb - 1), nb - 1, xq, xd)
        y[r] = hsum(acc0) + hsum(acc1)


@njit(cache=True, fastmath=True, inline="always")
def rows4_q8_0(w, row_bytes, nb, lo, hi, Y, s0, count, xq, xd, xsd):
    """rows_q8_0 for up to four activations (see _rows_legacy4): the scale is read once per
    block, and each activation runs _q8_0_step as alone."""
    g0, g1, g2, g3 = _first_blocks(nb, s0, count)
    for r in range(lo, hi):
        p = r * row_bytes
        a0, a1, a2, a3 = vzero(), vzero(), vzero(), vzero()
        e0, e1, e2, e3 = vzero(), vzero(), vzero(), vzero()
        for j in range(0, nb - 1, 2):
            b = p + Q8_0_BYTES * j
            a0, a1, a2, a3 = _q8_0_step4(a0, a1, a2, a3, w, b, j, xq, xd, g0, g1, g2, g3)
            e0, e1, e2, e3 = _q8_0_step4(e0, e1, e2, e3, w, b + Q8_0_BYTES, j + 1, xq, xd, g0,
                                         g1, g2, g3)
        if nb % 2:
            a0, a1, a2, a3 = _q8_0_step4(a0, a1, a2, a3, w, p + Q8_0_BYTES * (nb - 1), nb - 1,
                                         xq, xd, g0, g1, g2, g3)
        Y[s0, r] = hsum(a0) + hsum(e0)
        if count > 1:
            Y[s0 + 1, r] = hsum(a1) + hsum(e1)
        if count > 2:
            Y[s0 + 2, r] = hsum(a2) + hsum(e2)
        if count > 3:
            Y[s0 + 3, r] = hsum(a3) + hsum(e3)


@njit(cache=True, fastmath=True, inline="always")
def _q8_0_step4(a0, a1, a2, a3, w, b, j, xq, xd, g0, g1, g2, g3):
    """_q8_0_step for four activations (blocks from g_k of the flat xq / xd)."""
    d = f16(w, b)
    s = d * ldf(xd, g0 + j)
    a0 = fma2(a0, dot_s8(w, b + 2, xq, 32 * (g0 + j)), s, s)
    s = d * ldf(xd, g1 + j)
    a1 = fma2(a1, dot_s8(w, b + 2, xq, 32 * (g1 + j)), s, s)
    s = d * ldf(xd, g2 + j)
    a2 = fma2(a2, dot_s8(w, b + 2, xq, 32 * (g2 + j)), s, s)
    s = d * ldf(xd, g3 + j)
    a3 = fma2(a3, dot_s8(w, b + 2, xq, 32 * (g3 + j)), s, s)
    return a0, a1, a2, a3


@njit(cache=True)
def deq_q8_0(w, p, nb, dst, off):
    for j in range(nb):
        b = p + Q8_0_BYTES * j
        store_s8(dst, off + 32 * j, w, b + 2, f16(w, b))
