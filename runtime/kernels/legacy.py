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
def _dot_legacy(w, p, nb, xq, xd, xsd, five_bits, bytes_per, qoff, has_min, o):
    """Row dot of a 32-block type with w = d * (u + o) [+ m]; two accumulators so consecutive
    blocks do not wait on each other's fused multiply-add."""
    acc0 = vzero()
    acc1 = vzero()
    bias = np.float32(0.0)
    for j in range(0, nb - 1, 2):
        b = p + bytes_per * j
        d0 = f16(w, b)
        d1 = f16(w, b + bytes_per)
        s0 = d0 * ldf(xd, j)
        s1 = d1 * ldf(xd, j + 1)
        acc0 = fma2(acc0, dot_u8(_unpack(w, b + qoff, five_bits), xq, 32 * j), s0, s0)
        u1 = _unpack(w, b + bytes_per + qoff, five_bits)
        acc1 = fma2(acc1, dot_u8(u1, xq, 32 * j + 32), s1, s1)
        x0 = ldf(xsd, 2 * j) + ldf(xsd, 2 * j + 1)
        x1 = ldf(xsd, 2 * j + 2) + ldf(xsd, 2 * j + 3)
        if has_min:  # c = -m
            bias += f16(w, b + 2) * x0 + f16(w, b + bytes_per + 2) * x1
        else:
            bias += np.float32(o) * (d0 * x0 + d1 * x1)
    if nb % 2:
        j = nb - 1
        b = p + bytes_per * j
        d0 = f16(w, b)
        s0 = d0 * ldf(xd, j)
        acc0 = fma2(acc0, dot_u8(_unpack(w, b + qoff, five_bits), xq, 32 * j), s0, s0)
        x0 = ldf(xsd, 2 * j) + ldf(xsd, 2 * j + 1)
        bias += f16(w, b + 2) * x0 if has_min else np.float32(o) * d0 * x0
    return hsum(acc0) + hsum(acc1) + bias


@njit(cache=True, fastmath=True, inline="always")
def dot_q4_0(w, p, nb, xq, xd, xsd):
    return _dot_legacy(w, p, nb, xq, xd, xsd, False, Q4_0_BYTES, 2, False, -8)


@njit(cache=True)
def deq_q4_0(w, p, nb, dst, off):
    for j in range(nb):
        b = p + Q4_0_BYTES * j
        d = f16(w, b)
        store_affine(dst, off + 32 * j, nibbles16(w, b + 2), -8, d, 0.0, d, 0.0)


@njit(cache=True, fastmath=True, inline="always")
def dot_q4_1(w, p, nb, xq, xd, xsd):
    return _dot_legacy(w, p, nb, xq, xd, xsd, False, Q4_1_BYTES, 4, True, 0)


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


@njit(cache=True)
def deq_q5_0(w, p, nb, dst, off):
    for j in range(nb):
        b = p + Q5_0_BYTES * j
        d = f16(w, b)
        store_affine(dst, off + 32 * j, _u_q5(w, b + 2), -16, d, 0.0, d, 0.0)


@njit(cache=True, fastmath=True, inline="always")
def dot_q5_1(w, p, nb, xq, xd, xsd):
    return _dot_legacy(w, p, nb, xq, xd, xsd, True, Q5_1_BYTES, 4, True, 0)


@njit(cache=True)
def deq_q5_1(w, p, nb, dst, off):
    for j in range(nb):
        b = p + Q5_1_BYTES * j
        d = f16(w, b)
        m = f16(w, b + 2)
        store_affine(dst, off + 32 * j, _u_q5(w, b + 4), 0, d, -m, d, -m)


@njit(cache=True, fastmath=True, inline="always")
def dot_q8_0(w, p, nb, xq, xd, xsd):
    acc0 = vzero()
    acc1 = vzero()
    for j in range(0, nb - 1, 2):
        b = p + Q8_0_BYTES * j
        s0 = f16(w, b) * ldf(xd, j)
        s1 = f16(w, b + Q8_0_BYTES) * ldf(xd, j + 1)
        acc0 = fma2(acc0, dot_s8(w, b + 2, xq, 32 * j), s0, s0)
        acc1 = fma2(acc1, dot_s8(w, b + Q8_0_BYTES + 2, xq, 32 * j + 32), s1, s1)
    if nb % 2:
        j = nb - 1
        b = p + Q8_0_BYTES * j
        s0 = f16(w, b) * ldf(xd, j)
        acc0 = fma2(acc0, dot_s8(w, b + 2, xq, 32 * j), s0, s0)
    return hsum(acc0) + hsum(acc1)


@njit(cache=True)
def deq_q8_0(w, p, nb, dst, off):
    for j in range(nb):
        b = p + Q8_0_BYTES * j
        store_s8(dst, off + 32 * j, w, b + 2, f16(w, b))
