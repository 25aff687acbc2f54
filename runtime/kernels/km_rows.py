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
with zeros to a multiple of 64), and ``deq_km<b>(w, p, n, dst, off)`` writing the ``n`` real
columns of the row to ``dst[off:]``. The activation (:func:`quantize_act_km`) has one float
step D_k per 256 columns (the last group of a row may be 64, 128 or 192 wide) and a small
integer multiplier t_b per 32 (x ~= D_k * t_b * xq, within a factor 1 + 1 / t_b of per-32
precision), so with P_b = sum_i cb[q_i] * xq_i and A_b = sum_i xq_i over block b:

    row . x = d * sum_k D_k [ sum_{b in k} s_b t_b P_b ] - dmin * sum_k D_k [ sum_b m_b t_b A_b ]
                  integer: vpshufb (lut16), vpmaddubsw,       integer: one vpmaddwd of the
                  vpmaddwd by s_b t_b (one vpmullw per 8)     8 m_b t_b with the 8 A_b

cb[q] <= 127 and |xq| <= 127 keep vpmaddubsw's pairwise i16 sums exact (2 * 127 * 127 < 2**15);
each bracket is exact in int32 (s t <= 63 * 64, see vector_km.dot_scaled) and converted to float
once per 256 columns. No per-block float, no horizontal sum per group.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .vector_f32 import ldf
from .vector_ir import (
    band,
    bor,
    dup16,
    f16,
    fma2,
    load_u8x32,
    shr,
    store_affine,
    vzero,
    vzero4,
)
from .vector_km import (
    add_lane0,
    dot_scaled,
    iadd,
    izero,
    km2_pair,
    km3_high0,
    km3_high1,
    km_final,
    km_min_dot0,
    km_min_fma,
    km_scales,
    km_words4,
    load_i16x8,
    lut16,
    mul16,
)

INV127 = np.float32(1.0 / 127.0)

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
@njit(cache=True, fastmath=False)  # explicitly (see activations.quantize_act): exact as the ref
def quantize_act_km(x, xq, xd, xsd):
    """Quantize x, padded with zeros to ``xq.size`` (a multiple of 64) elements, for the KM
    kernels: one float scale per 256 columns and a small integer multiplier per 32, so that
    the block scales of the weights and of the activation multiply as integers.

    Group k = columns 256k .. min(256k + 256, n_p) - 1 (the last may be 64, 128 or 192 wide),
    block b = columns 32b .. 32b + 31 (in group k = b // 8), nb = n_p // 32 blocks:

        D          = max |x| over group k * (1 / 127)        the group's per-256 step
        t[b]       = ceil(64 * max |x| over block b / max |x| over group k), in 1 .. 64
        xd[k]      = D / 64                                  float32 (0 for an all-zero group)
        xq[i]      = rint(x[i] / (xd[k] * t[b]))             int8 in [-127, 127]; 0 on padding
        xsd16[b]       = sum(xq[32b : 32b + 32])             int16 (|sum| <= 4064)
        xsd16[nb + b]  = t[b]                                int16

    so x[i] ~= xd[k] * t[b] * xq[i]: each block's step is within a factor (1 + 1 / t[b]) of
    its own max |x| / 127 (per-32 precision) unless its max is below 1/64 of its group's.
    xsd16 is the int16 view of xsd's bytes (its first n_p // 16 int16).

    Parameters
    ----------
    x : (n,) float32, any n
    xq : (n_p,) int8, output, n_p = n rounded up to a multiple of 64
    xd : (n_p // 32,) float32, output: the group steps in xd[: ceil(n_p / 256)]
    xsd : (n_p // 16 + 4,) float32, output: the int16 block sums and multipliers in its first
        n_p // 8 bytes; the row kernels read up to 16 bytes past the last multiplier (the
        KM view of dispatch._prepare has those 16 spare bytes)
    """
    n = x.size
    n_p = xq.size
    nb = n_p // 32
    xs16 = xsd.view(np.int16)
    for k in range((n_p + 255) // 256):
        lo = 256 * k
        hi = min(lo + 256, n_p)
        amax = np.float32(0.0)
        for i in range(lo, min(hi, n)):
            amax = max(amax, abs(x[i]))
        step = amax * INV127 * np.float32(1.0 / 64.0)  # exact: a power of two
        rel = np.float32(64.0) / amax if amax > 0 else np.float32(0.0)
        for b in range(lo // 32, hi // 32):
            bmax = np.float32(0.0)
            for i in range(32 * b, min(32 * b + 32, n)):
                bmax = max(bmax, abs(x[i]))
            t = min(max(np.int32(np.ceil(bmax * rel)), 1), 64)
            d = step * np.float32(t)
            inv = np.float32(1.0) / d if d > 0 else np.float32(0.0)
            s = 0
            for i in range(32 * b, min(32 * b + 32, n)):  # real columns
                q = min(max(np.int32(np.rint(x[i] * inv)), -127), 127)
                xq[i] = q
                s += q
            for i in range(max(32 * b, n), 32 * b + 32):  # padding
                xq[i] = 0
            xs16[b] = s
            xs16[nb + b] = t
        xd[k] = step


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
def _km_group(acc, accm, w, b, j, nc, cs, tbl, xq, xd, xsd, bits):
    """Chunks j .. j + 3 (8 blocks, 256 columns = activation group j // 4) at byte b, of a row
    of nc chunks: acc += step * sum_blocks s t * sum cb[q] xq (integer until the one conversion),
    accm += step * sum_blocks m t * sum xq."""
    words = km_words4(w, b, cs)
    tv = load_i16x8(xsd, nc + j)  # (8,) the activation's block multipliers t
    sv = mul16(km_scales(words), tv)  # (8,) s * t, lane 2k + h: block h of chunk j + k
    x0 = 64 * j
    qa, qb = _codes(w, b + 3, bits)
    gi = dot_scaled(lut16(tbl, qa), xq, x0, sv, 0)
    gi = iadd(gi, dot_scaled(lut16(tbl, qb), xq, x0 + 32, sv, 1))
    qa, qb = _codes(w, b + cs + 3, bits)
    gi = iadd(gi, dot_scaled(lut16(tbl, qa), xq, x0 + 64, sv, 2))
    gi = iadd(gi, dot_scaled(lut16(tbl, qb), xq, x0 + 96, sv, 3))
    qa, qb = _codes(w, b + 2 * cs + 3, bits)
    gi = iadd(gi, dot_scaled(lut16(tbl, qa), xq, x0 + 128, sv, 4))
    gi = iadd(gi, dot_scaled(lut16(tbl, qb), xq, x0 + 160, sv, 5))
    qa, qb = _codes(w, b + 3 * cs + 3, bits)
    gi = iadd(gi, dot_scaled(lut16(tbl, qa), xq, x0 + 192, sv, 6))
    gi = iadd(gi, dot_scaled(lut16(tbl, qb), xq, x0 + 224, sv, 7))
    dk = ldf(xd, j // 4)
    return fma2(acc, gi, dk, dk), km_min_fma(accm, words, tv, xsd, j, dk)


@njit(cache=True, fastmath=True, inline="always")
def _km_chunk(gi, mi, w, b, j, nc, tbl, xq, xsd, bits):
    """Chunk j at byte b of a row of nc chunks (row tails): gi + s t * sum cb[q] xq over its two
    blocks, mi + m t * sum xq. Reads 16 bytes of block sums and multipliers from block 2j on,
    past the last block's (dispatch.scratch_bytes leaves room); those lanes are not used."""
    words = km_words4(w, b, 0)  # the chunk's word in every lane
    tv = load_i16x8(xsd, nc + j)  # lanes 0, 1: t of blocks 2j, 2j + 1
    sv = mul16(km_scales(words), tv)  # lanes 0, 1: s0 t, s1 t
    qa, qb = _codes(w, b + 3, bits)
    gi = iadd(gi, dot_scaled(lut16(tbl, qa), xq, 64 * j, sv, 0))
    return iadd(gi, dot_scaled(lut16(tbl, qb), xq, 64 * j + 32, sv, 1)), mi + km_min_dot0(
        words, tv, xsd, j)


@njit(cache=True, fastmath=True, inline="always")
def _rows_km(w, row_bytes, nb, lo, hi, y, xq, xd, xsd, bits):
    """y[r] = row r . x for r in [lo, hi), x quantized by quantize_act_km (nb = n_p // 32)."""
    cs = 3 + 8 * bits  # chunk bytes
    n_chunks = nb // 2
    n4 = n_chunks // 4 * 4
    for r in range(lo, hi):
        p = r * row_bytes
        tbl = dup16(w, p + 4)  # the codebook in both 128-bit lanes (KM3 / KM2: 8 / 4 used)
        c0 = p + 4 + (1 << bits)
        acc = vzero()  # sum over groups of step * s t * sum_i cb[q_i] xq_i (no d)
        accm = vzero4()  # sum over groups of step * m t * sum_i xq_i (no dmin)
        for j in range(0, n4, 4):  # 4 chunks = 8 blocks = 256 columns
            acc, accm = _km_group(acc, accm, w, c0 + cs * j, j, n_chunks, cs, tbl, xq, xd, xsd,
                                  bits)
        if n4 < n_chunks:  # the last n_chunks % 4 chunks: one shorter activation group
            gi = izero()
            mi = np.int32(0)
            for j in range(n4, n_chunks):
                gi, mi = _km_chunk(gi, mi, w, c0 + cs * j, j, n_chunks, tbl, xq, xsd, bits)
            dk = ldf(xd, n4 // 4)
            acc = fma2(acc, gi, dk, dk)
            accm = add_lane0(accm, dk * np.float32(mi))
        y[r] = km_final(acc, accm, f16(w, p), f16(w, p + 2))


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
    """One row (at byte p) . x: the single-row form of rows_km<bits> (tests, other callers);
    xq, xd, xsd as quantize_act_km writes them (xsd with its 16 spare bytes)."""
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
