"""Row kernels of gguflite's KM v2 types (KM2, KM3, KM4): learned per-row codebooks on Q4_K-like
affine 32-column blocks. Layout (spec/extensions-km.md, ``gguflite.quants.km``):

    row   = d: f16 | dmin: f16 | cb[K]: u8 (<= 127, K = 2**bits) | chunk 0 | chunk 1 | ...
    chunk = 3 bytes  v = [ m1 : 6 | s1 : 6 | m0 : 6 | s0 : 6 ]   (bit 23 .. bit 0, little endian)
          | 8 * bits bytes of codes for columns 64j .. 64j + 63:
              KM4: byte i (0..31)  = [ q(32+i) : 4 | q(i) : 4 ]
              KM2: byte i (0..15)  = [ q(48+i) : 2 | q(32+i) : 2 | q(16+i) : 2 | q(i) : 2 ]
              KM3: 16 bytes as KM2 (the low two bits) | 8 bytes: byte i, bit u = bit 2 of q(8u+i)
    weight W[r, 64j + t] = d * s * cb[q(t)] - dmin * m   (s, m: s0, m0 for t < 32, else s1, m1)

Same contract as legacy.py / kquants.py: ``dot_km<b>(w, p, nb, xq, xd, xsd)`` with ``nb`` the
number of 32-element activation blocks, which for KM is ``2 * n_chunks`` (the activation padded
with zeros to a multiple of 64, and ``xsd`` holding sums per 32, see
:func:`quantize_act_padded`), and
``deq_km<b>(w, p, n, dst, off)`` writing the ``n`` real columns of the row to ``dst[off:]``.

With ``x ~= dx_g * xq`` per 32-block g (activations.py), the row dot is

    sum_g dx_g * d * s_g * sum_i cb[q_i] * xq_i  -  dmin * sum_g m_g * dx_g * sum_i xq_i
          ---- lut16 (vpshufb) + dot_u8 ----               ---- xsd (precomputed) ----

cb[q] <= 127 and |xq| <= 127 keep vpmaddubsw's pairwise i16 sums exact (2 * 127 * 127 < 2**15).
Four chunks (eight blocks) at a time take their scales and mins as float vectors.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .activations import quantize_act
from .vector_f32 import ldf, load_f32x8, vfma, vmul
from .vector_ir import (
    band,
    bor,
    dot_u8,
    dup16,
    f16,
    fma2,
    hsum,
    load_u8x32,
    shr,
    store_affine,
    vzero,
)
from .vector_km import (
    cvt_fma,
    km2_pair,
    km3_high0,
    km3_high1,
    km_mins4,
    km_scales4,
    lut16,
    sums8,
)

# Pseudo kind ids of the KM types in the drivers (dispatch.py); ggml type ids are < 1000.
KM2_KIND, KM3_KIND, KM4_KIND = 1002, 1003, 1004
KM_KINDS = {2: KM2_KIND, 3: KM3_KIND, 4: KM4_KIND}  # bits -> kind


@njit(cache=True)
def is_km_kind(kind):
    return kind == KM2_KIND or kind == KM3_KIND or kind == KM4_KIND


@njit(cache=True)
def padded_cols(n):
    """Columns of a KM row with padding: n rounded up to a multiple of 64."""
    return (n + 63) // 64 * 64


def chunk_bytes(bits: int) -> int:
    """Bytes of one 64-column chunk: the 3-byte scale / min word and 8 * bits code bytes."""
    return 3 + 8 * bits


def row_bytes(cols: int, bits: int) -> int:
    """Bytes of one KM row (same as gguflite.quants.km.row_bytes)."""
    return 4 + (1 << bits) + (cols + 63) // 64 * chunk_bytes(bits)


# -- activations ----------------------------------------------------------------------------------
@njit(cache=True)
def quantize_act_padded(x, xq, xd, xsd):
    """quantize_act of x padded with zeros to ``xq.size`` (a multiple of 64) elements, with
    the block sums per 32 instead of per 16 (the KM kernels' layout).

    x : (n,) float32, any n; outputs xq : (n_p,) int8, xd : (n_p // 32,) float32 and
    xsd : (n_p // 16,) float32 of which the first n_p // 32 are set:
    xsd[g] = xd[g] * sum(xq[32g : 32g + 32]) (one rounding).
    A padded block quantizes exactly as its real elements would in a block of their own (zeros
    change neither the block maximum nor the sums), and pure padding blocks get xq = dx = 0.
    """
    n = x.size
    n_p = xq.size
    n32 = n // 32 * 32
    quantize_act(x[:n32], xq[:n32], xd[: n32 // 32], xsd[: n32 // 16])
    if n_p > n32:
        tmp = np.zeros(n_p - n32, np.float32)
        tmp[: n - n32] = x[n32:]
        quantize_act(tmp, xq[n32:], xd[n32 // 32 :], xsd[n32 // 16 :])
    for g in range(n_p // 32):
        s = 0
        for i in range(32):
            s += np.int32(xq[32 * g + i])
        xsd[g] = xd[g] * np.float32(s)


# -- codes of one chunk ----------------------------------------------------------------------------
@njit(cache=True, fastmath=True, inline="always")
def _codes(w, c, bits):
    """Codes of the two blocks of the chunk whose code bytes start at ``c``: (qa, qb), each
    U8x32 with lane t = q(t) (block A) or q(32 + t) (block B)."""
    if bits == 4:
        v = load_u8x32(w, c)
        return band(v, 15), shr(v, 4)
    pair = km2_pair(w, c)
    qa = band(pair, 3)
    qb = band(shr(pair, 4), 3)
    if bits == 3:
        return bor(qa, km3_high0(w, c + 16)), bor(qb, km3_high1(w, c + 16))
    return qa, qb


@njit(cache=True, inline="always")
def _code(w, c, t, bits):
    """Scalar code q(t) (t = 0..63) of the chunk whose code bytes start at ``c``."""
    if bits == 4:
        b = np.int32(w[c + t % 32])
        return b & 15 if t < 32 else b >> 4
    lo = (np.int32(w[c + t % 16]) >> (2 * (t // 16))) & 3
    if bits == 3:
        return lo | (((np.int32(w[c + 16 + t % 8]) >> (t // 8)) & 1) << 2)
    return lo


@njit(cache=True, inline="always")
def _word(w, b):
    """The 24-bit scale / min word at byte b."""
    return np.int32(w[b]) | (np.int32(w[b + 1]) << 8) | (np.int32(w[b + 2]) << 16)


# -- dot ------------------------------------------------------------------------------------------
# Steps without loops, so that the row-range kernels below hold the row loop and the chunk loop
# in one function (an inline single-row kernel with a loop, called per row, leaves an atomic
# incref / decref of each array per row: see legacy._rows_legacy).
@njit(cache=True, fastmath=True, inline="always")
def _km_group(acc, biasv, w, b, g, cs, tbl, xq, xd, xsd, bits):
    """4 chunks (8 blocks, 256 columns) starting at byte b, activation block g:
    acc += s * dx * sum cb[q] xq (lane k: block g + k), biasv += m * dx * sum xq."""
    sv = vmul(km_scales4(w, b, cs), load_f32x8(xd, g))  # (8,) s * dx
    biasv = vfma(biasv, km_mins4(w, b, cs), load_f32x8(xsd, g))  # (8,) m * dx * sum xq
    qa, qb = _codes(w, b + 3, bits)
    d0 = dot_u8(lut16(tbl, qa), xq, 32 * g)  # (8,) i32 partial sums of block g
    d1 = dot_u8(lut16(tbl, qb), xq, 32 * g + 32)
    qa, qb = _codes(w, b + cs + 3, bits)
    d2 = dot_u8(lut16(tbl, qa), xq, 32 * g + 64)
    d3 = dot_u8(lut16(tbl, qb), xq, 32 * g + 96)
    qa, qb = _codes(w, b + 2 * cs + 3, bits)
    d4 = dot_u8(lut16(tbl, qa), xq, 32 * g + 128)
    d5 = dot_u8(lut16(tbl, qb), xq, 32 * g + 160)
    qa, qb = _codes(w, b + 3 * cs + 3, bits)
    d6 = dot_u8(lut16(tbl, qa), xq, 32 * g + 192)
    d7 = dot_u8(lut16(tbl, qb), xq, 32 * g + 224)
    return cvt_fma(acc, sums8(d0, d1, d2, d3, d4, d5, d6, d7), sv), biasv


@njit(cache=True, fastmath=True, inline="always")
def _km_chunk(acc0, acc1, bias, w, b, j, tbl, xq, xd, xsd, bits):
    """One chunk (blocks 2j, 2j + 1) at byte b, its scales read one at a time (row tails)."""
    v = _word(w, b)
    s0 = np.float32(v & 63) * ldf(xd, 2 * j)
    s1 = np.float32((v >> 12) & 63) * ldf(xd, 2 * j + 1)
    bias += (np.float32((v >> 6) & 63) * ldf(xsd, 2 * j)
             + np.float32((v >> 18) & 63) * ldf(xsd, 2 * j + 1))
    qa, qb = _codes(w, b + 3, bits)
    acc0 = fma2(acc0, dot_u8(lut16(tbl, qa), xq, 64 * j), s0, s0)
    acc1 = fma2(acc1, dot_u8(lut16(tbl, qb), xq, 64 * j + 32), s1, s1)
    return acc0, acc1, bias


@njit(cache=True, fastmath=True, inline="always")
def _rows_km(w, row_bytes, nb, lo, hi, y, xq, xd, xsd, bits):
    """y[r] = row r . x for r in [lo, hi)."""
    cs = 3 + 8 * bits  # chunk bytes
    n_chunks = nb // 2
    n4 = n_chunks // 4 * 4
    for r in range(lo, hi):
        p = r * row_bytes
        tbl = dup16(w, p + 4)  # the codebook in both 128-bit lanes (KM3 / KM2: 8 / 4 used)
        c0 = p + 4 + (1 << bits)
        acc0 = vzero()  # lane k: sum of s * dx * sum_i cb[q_i] xq_i over blocks 8t + k (no d)
        acc1 = vzero()
        biasv = vzero()  # lane k: sum of m * dx * sum_i xq_i (no dmin)
        for j in range(0, n4, 4):  # 4 chunks = 8 blocks = 256 columns
            acc0, biasv = _km_group(acc0, biasv, w, c0 + cs * j, 2 * j, cs, tbl, xq, xd, xsd,
                                    bits)
        bias = np.float32(0.0)
        for j in range(n4, n_chunks):  # the last n_chunks % 4 chunks
            acc0, acc1, bias = _km_chunk(acc0, acc1, bias, w, c0 + cs * j, j, tbl, xq, xd,
                                         xsd, bits)
        y[r] = f16(w, p) * (hsum(acc0) + hsum(acc1)) - f16(w, p + 2) * (hsum(biasv) + bias)


@njit(cache=True, fastmath=True, inline="always")
def rows_km4(w, row_bytes, nb, lo, hi, y, xq, xd, xsd):
    _rows_km(w, row_bytes, nb, lo, hi, y, xq, xd, xsd, 4)


@njit(cache=True, fastmath=True, inline="always")
def rows_km3(w, row_bytes, nb, lo, hi, y, xq, xd, xsd):
    _rows_km(w, row_bytes, nb, lo, hi, y, xq, xd, xsd, 3)


@njit(cache=True, fastmath=True, inline="always")
def rows_km2(w, row_bytes, nb, lo, hi, y, xq, xd, xsd):
    _rows_km(w, row_bytes, nb, lo, hi, y, xq, xd, xsd, 2)


@njit(cache=True, fastmath=True)
def dot_km(w, p, nb, xq, xd, xsd, bits):
    """One row (at byte p) . x: the single-row form of rows_km<bits> (tests, other callers)."""
    y = np.empty(2, np.float32)
    if bits == 4:
        rows_km4(w, p, nb, 1, 2, y, xq, xd, xsd)  # row 1 of rows p bytes long starts at p
    elif bits == 3:
        rows_km3(w, p, nb, 1, 2, y, xq, xd, xsd)
    else:
        rows_km2(w, p, nb, 1, 2, y, xq, xd, xsd)
    return y[1]


@njit(cache=True, fastmath=True)
def dot_km4(w, p, nb, xq, xd, xsd):
    return dot_km(w, p, nb, xq, xd, xsd, 4)


@njit(cache=True, fastmath=True)
def dot_km3(w, p, nb, xq, xd, xsd):
    return dot_km(w, p, nb, xq, xd, xsd, 3)


@njit(cache=True, fastmath=True)
def dot_km2(w, p, nb, xq, xd, xsd):
    return dot_km(w, p, nb, xq, xd, xsd, 2)


# -- dequantize (exact: d * s and dmin * m rounded to float32, then s * cb[q] - c, no FMA) ------
@njit(cache=True)
def _deq_km(w, p, n, dst, off, bits):
    cs = 3 + 8 * bits
    d = f16(w, p)
    dmin = f16(w, p + 2)
    tbl = dup16(w, p + 4)
    c0 = p + 4 + (1 << bits)
    for j in range((n + 63) // 64):
        b = c0 + cs * j
        v = _word(w, b)
        sa = d * np.float32(v & 63)
        ca = dmin * np.float32((v >> 6) & 63)
        sb = d * np.float32((v >> 12) & 63)
        cb_ = dmin * np.float32((v >> 18) & 63)
        col = 64 * j
        if col + 64 <= n:
            qa, qb = _codes(w, b + 3, bits)
            store_affine(dst, off + col, lut16(tbl, qa), 0, sa, ca, sa, ca)
            store_affine(dst, off + col + 32, lut16(tbl, qb), 0, sb, cb_, sb, cb_)
        else:  # the last, partial chunk: only its real columns
            for t in range(n - col):
                q = _code(w, b + 3, t, bits)
                s, c = (sa, ca) if t < 32 else (sb, cb_)
                dst[off + col + t] = np.float32(w[p + 4 + q]) * s - c


@njit(cache=True)
def deq_km4(w, p, n, dst, off):
    _deq_km(w, p, n, dst, off, 4)


@njit(cache=True)
def deq_km3(w, p, n, dst, off):
    _deq_km(w, p, n, dst, off, 3)


@njit(cache=True)
def deq_km2(w, p, n, dst, off):
    _deq_km(w, p, n, dst, off, 2)
