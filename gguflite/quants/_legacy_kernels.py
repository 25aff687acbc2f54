"""Numba fast paths of the legacy codecs (see legacy.py for the block layouts and the math).

Each kernel mirrors its NumPy reference step by step in float32; the tests prove they agree bit
for bit with it and with ggml. Kernels take C-contiguous inputs, accept read-only arrays, and
write into a preallocated ``out`` (``prange`` over chunks of blocks: disjoint outputs).

Quantizers have two inner loops per block. When the block's ``1/d`` is finite, every scaled
value is small (``|x / d| <= 2**5`` or so), so C's casts are plain truncations and ``roundf``
is ``trunc(v + copysign(0.49999997f, v))`` (exact for every float32): a loop LLVM vectorizes.
Otherwise (blocks whose scale underflows, or whose range overflows float32) the loop emulates
the x86 cast semantics value by value, as the NumPy reference does.

Loops over a block's values take their trip count from the array shape at run time
(``qk = x.shape[1]``): with a literal ``range(32)`` LLVM unrolls the loop into scalar code
(``vcvttss2si`` per value) instead of vectorizing it, measured 2-4x slower here. Reductions
(absmax, min/max) and the Q5 ``qh`` bit loops are the exception: unrolled they were faster.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._numba_common import (
    F32_HALF,
    F32_ONE,
    F32_ZERO,
    nb_c_f32_to_i8,
    nb_c_f32_to_i32,
    nb_c_roundf,
    nb_f32_to_fp16,
    nb_roundf_small,
)
from .kquants_numba import _make_qkx, _make_qx  # ggml's scale searches, shared with the k-quants

_F32_MAX = np.float32(np.finfo(np.float32).max)
_F32_127 = np.float32(127.0)
_F32_15 = np.float32(15.0)
_F32_31 = np.float32(31.0)
_F32_M8 = np.float32(-8.0)
_F32_M16 = np.float32(-16.0)
_F32_8_5 = np.float32(8.5)
_F32_16_5 = np.float32(16.5)
_F32_INF = np.float32(np.inf)
_F32_RMIN = np.float32(-0.9)  # make_qkx3_quants(..., rmin = -0.9f, rdelta = 0.05f, nstep = 36)
_F32_RDELTA = np.float32(0.05)
_CHUNK = 512  # blocks per parallel task: prange over chunks with a plain loop inside (a bare
# prange over blocks ran ~4x slower in one measurement on this loaded 2-core machine)


@njit(cache=True, inline="always")
def _put_fp16(out, i, at, v):
    h = nb_f32_to_fp16(v)
    out[i, at] = h & 0xFF
    out[i, at + 1] = h >> 8


@njit(cache=True, inline="always")
def _get_fp16(blocks, i, at, table):
    return table[np.int64(blocks[i, at]) | (np.int64(blocks[i, at + 1]) << 8)]


@njit(cache=True, inline="always")
def _inverse(d):
    return F32_ONE / d if d != F32_ZERO else F32_ZERO


@njit(cache=True, inline="always")
def _absmax(x, i):
    amax = F32_ZERO
    for j in range(32):
        a = abs(x[i, j])
        if a > amax:
            amax = a
    return amax


@njit(cache=True, inline="always")
def _signed_absmax(x, i):
    """The first value of largest magnitude, with its sign; +0.0 for an all-zero block.

    One pass as in C (``if (amax < fabsf(v)) { amax = fabsf(v); max = v; }``); measured faster
    here than a max reduction followed by a search.
    """
    amax = F32_ZERO
    mx = F32_ZERO
    for j in range(32):
        v = x[i, j]
        a = abs(v)
        if amax < a:
            amax = a
            mx = v
    return mx


@njit(cache=True, inline="always")
def _min_max(x, i):
    mn = _F32_MAX
    mx = -_F32_MAX
    for j in range(32):
        v = x[i, j]
        if v < mn:
            mn = v
        if v > mx:
            mx = v
    return mn, mx


# -- Q8_0 -------------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def q8_0_quantize(x, out):
    """x (n, 32) float32 -> out (n, 34) uint8 (``quantize_row_q8_0_ref``)."""
    n = x.shape[0]
    qk = x.shape[1]  # 32, read at run time so LLVM vectorizes the loops over it
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        for i in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            d = _absmax(x, i) / _F32_127
            idv = _inverse(d)
            _put_fp16(out, i, 0, d)
            if idv < _F32_INF:
                for j in range(qk):
                    out[i, 2 + j] = np.uint8(nb_roundf_small(x[i, j] * idv))
            else:
                for j in range(32):
                    out[i, 2 + j] = nb_c_f32_to_i8(nb_c_roundf(x[i, j] * idv)) & 0xFF


@njit(cache=True, parallel=True)
def q8_0_dequantize(qs, table, out):
    """qs (n, 34) int8 (the block bytes viewed as int8) -> out (n, 32) float32.

    ``table`` maps fp16 bits to float32.
    """
    n = qs.shape[0]
    qk = out.shape[1]  # 32, read at run time so LLVM vectorizes the loop over it
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        for i in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            d = table[(np.int64(qs[i, 0]) & 0xFF) | ((np.int64(qs[i, 1]) & 0xFF) << 8)]
            for j in range(qk):
                out[i, j] = np.float32(qs[i, 2 + j]) * d


# -- Q4_0 / Q5_0 --------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def q4_0_quantize(x, out):
    """x (n, 32) float32 -> out (n, 18) uint8 (``quantize_row_q4_0_ref``)."""
    n = x.shape[0]
    qk = x.shape[1]  # 32, read at run time so LLVM vectorizes the loops over it
    half = qk // 2
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        for i in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            d = _signed_absmax(x, i) / _F32_M8
            idv = _inverse(d)
            _put_fp16(out, i, 0, d)
            if idv < _F32_INF:  # x / d + 8.5 lies in [0.49, 16.51]
                for j in range(half):
                    q0 = min(np.int32(15), np.int32(x[i, j] * idv + _F32_8_5))
                    q1 = min(np.int32(15), np.int32(x[i, j + half] * idv + _F32_8_5))
                    out[i, 2 + j] = np.uint8(q0 | (q1 << 4))
            else:
                for j in range(16):
                    q0 = min(15, nb_c_f32_to_i8(x[i, j] * idv + _F32_8_5)) & 0xFF
                    q1 = min(15, nb_c_f32_to_i8(x[i, j + 16] * idv + _F32_8_5)) & 0xFF
                    out[i, 2 + j] = (q0 | (q1 << 4)) & 0xFF


@njit(cache=True, parallel=True)
def q4_0_dequantize(blocks, table, out):
    """blocks (n, 18) uint8 -> out (n, 32) float32."""
    n = blocks.shape[0]
    half = out.shape[1] // 2  # 16, read at run time so LLVM vectorizes the loops over it
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        for i in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            d = _get_fp16(blocks, i, 0, table)
            for j in range(half):
                b = np.int32(blocks[i, 2 + j])
                out[i, j] = np.float32((b & 0x0F) - 8) * d
                out[i, j + half] = np.float32((b >> 4) - 8) * d


@njit(cache=True, inline="always")
def _pack_q5(q, out, i, at):
    """q (32,) int32 5-bit values -> qh (uint32 LE at ``at``) then 16 nibble bytes."""
    half = q.shape[0] // 2
    for j in range(half):
        out[i, at + 4 + j] = np.uint8((q[j] & 0x0F) | ((q[j + half] & 0x0F) << 4))
    qh = np.uint32(0)
    for j in range(32):
        qh |= np.uint32((q[j] >> 4) & 1) << np.uint32(j)
    for k in range(4):
        out[i, at + k] = np.uint8(qh >> (8 * k))


@njit(cache=True, parallel=True)
def q5_0_quantize(x, out):
    """x (n, 32) float32 -> out (n, 22) uint8 (``quantize_row_q5_0_ref``)."""
    n = x.shape[0]
    qk = x.shape[1]  # 32, read at run time so LLVM vectorizes the loops over it
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        q = np.empty(qk, np.int32)  # (32,) this block's 5-bit values
        for i in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            d = _signed_absmax(x, i) / _F32_M16
            idv = _inverse(d)
            _put_fp16(out, i, 0, d)
            if idv < _F32_INF:  # x / d + 16.5 lies in [0.49, 32.51]
                for j in range(qk):
                    q[j] = min(np.int32(31), np.int32(x[i, j] * idv + _F32_16_5))
            else:
                for j in range(qk):
                    q[j] = min(31, nb_c_f32_to_i8(x[i, j] * idv + _F32_16_5)) & 0xFF
            _pack_q5(q, out, i, 2)


@njit(cache=True, parallel=True)
def q5_0_dequantize(blocks, table, out):
    """blocks (n, 22) uint8 -> out (n, 32) float32 (constant trip counts: measured faster
    here for the variable shifts of qh)."""
    n = blocks.shape[0]
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        for i in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            d = _get_fp16(blocks, i, 0, table)
            qh = (np.int64(blocks[i, 2]) | (np.int64(blocks[i, 3]) << 8)
                  | (np.int64(blocks[i, 4]) << 16) | (np.int64(blocks[i, 5]) << 24))
            for j in range(16):
                b = np.int64(blocks[i, 6 + j])
                q0 = ((b & 0x0F) | (((qh >> j) & 1) << 4)) - 16
                q1 = ((b >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16
                out[i, j] = np.float32(q0) * d
                out[i, j + 16] = np.float32(q1) * d


# -- Q4_1 / Q5_1 --------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def q4_1_quantize(x, out):
    """x (n, 32) float32 -> out (n, 20) uint8 (``quantize_row_q4_1_ref``)."""
    n = x.shape[0]
    qk = x.shape[1]  # 32, read at run time so LLVM vectorizes the loops over it
    half = qk // 2
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        for i in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            mn, mx = _min_max(x, i)
            d = (mx - mn) / _F32_15
            idv = _inverse(d)
            _put_fp16(out, i, 0, d)
            _put_fp16(out, i, 2, mn)
            if d < _F32_INF and idv < _F32_INF:  # (x - min) / d + 0.5 lies in [0.5, 15.51]
                for j in range(half):
                    q0 = min(np.int32(15), np.int32((x[i, j] - mn) * idv + F32_HALF))
                    q1 = min(np.int32(15), np.int32((x[i, j + half] - mn) * idv + F32_HALF))
                    out[i, 4 + j] = np.uint8(q0 | (q1 << 4))
            else:
                for j in range(16):
                    q0 = min(15, nb_c_f32_to_i8((x[i, j] - mn) * idv + F32_HALF)) & 0xFF
                    q1 = min(15, nb_c_f32_to_i8((x[i, j + 16] - mn) * idv + F32_HALF)) & 0xFF
                    out[i, 4 + j] = (q0 | (q1 << 4)) & 0xFF


@njit(cache=True, inline="always")
def _affine(q, d, m):
    """``q * d + m`` with C's NaN propagation: a NaN product wins over a NaN ``m``."""
    p = np.float32(q) * d
    return p if p != p else p + m


@njit(cache=True, parallel=True)
def q4_1_dequantize(blocks, table, out):
    """blocks (n, 20) uint8 -> out (n, 32) float32."""
    n = blocks.shape[0]
    half = out.shape[1] // 2  # 16, read at run time so LLVM vectorizes the loops over it
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        for i in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            d = _get_fp16(blocks, i, 0, table)
            m = _get_fp16(blocks, i, 2, table)
            if d == d and m == m:
                for j in range(half):
                    b = np.int32(blocks[i, 4 + j])
                    out[i, j] = np.float32(b & 0x0F) * d + m
                    out[i, j + half] = np.float32(b >> 4) * d + m
            else:  # NaN scale or min (only from corrupt bytes): keep C's NaN payloads
                for j in range(half):
                    b = np.int32(blocks[i, 4 + j])
                    out[i, j] = _affine(b & 0x0F, d, m)
                    out[i, j + half] = _affine(b >> 4, d, m)


@njit(cache=True, parallel=True)
def q5_1_quantize(x, out):
    """x (n, 32) float32 -> out (n, 24) uint8 (``quantize_row_q5_1_ref``)."""
    n = x.shape[0]
    qk = x.shape[1]  # 32, read at run time so LLVM vectorizes the loops over it
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        q = np.empty(qk, np.int32)  # (32,) this block's 5-bit values
        for i in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            mn, mx = _min_max(x, i)
            d = (mx - mn) / _F32_31
            idv = _inverse(d)
            _put_fp16(out, i, 0, d)
            _put_fp16(out, i, 2, mn)
            if d < _F32_INF and idv < _F32_INF:  # (x - min) / d + 0.5 lies in [0.5, 31.51]
                for j in range(qk):
                    q[j] = np.int32((x[i, j] - mn) * idv + F32_HALF)
            else:
                for j in range(qk):
                    q[j] = nb_c_f32_to_i32((x[i, j] - mn) * idv + F32_HALF) & 0xFF
            _pack_q5(q, out, i, 4)


@njit(cache=True, parallel=True)
def q5_1_dequantize(blocks, table, out):
    """blocks (n, 24) uint8 -> out (n, 32) float32."""
    n = blocks.shape[0]
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        for i in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            d = _get_fp16(blocks, i, 0, table)
            m = _get_fp16(blocks, i, 2, table)
            qh = (np.int64(blocks[i, 4]) | (np.int64(blocks[i, 5]) << 8)
                  | (np.int64(blocks[i, 6]) << 16) | (np.int64(blocks[i, 7]) << 24))
            if d == d and m == m:
                for j in range(16):
                    b = np.int64(blocks[i, 8 + j])
                    q0 = (b & 0x0F) | (((qh >> j) & 1) << 4)
                    q1 = (b >> 4) | (((qh >> (j + 16)) & 1) << 4)
                    out[i, j] = np.float32(q0) * d + m
                    out[i, j + 16] = np.float32(q1) * d + m
            else:
                for j in range(16):
                    b = np.int64(blocks[i, 8 + j])
                    out[i, j] = _affine((b & 0x0F) | (((qh >> j) & 1) << 4), d, m)
                    out[i, j + 16] = _affine((b >> 4) | (((qh >> (j + 16)) & 1) << 4), d, m)


# -- importance-weighted levels (Q4_0 / Q5_0 / Q4_1 / Q5_1 with an imatrix) ----------------------

@njit(cache=True, parallel=True)
def weighted_levels(x, imp, asym, nmax, d, m, lev):
    """ggml ``quantize_row_<t>_impl`` up to the packing, one row per task.

    x (rows, n) float32 and imp (n,) float32 -> d, m (rows * n / 32,) float32 and lev
    (rows * n / 32, 32) int64. Per row ``sigma2 = sum(x*x) / n`` (sequential float32), per value
    ``w = imp * sqrt(sigma2 + x*x)``; then ``make_qkx3_quants(nmax, -0.9, 0.05, 36)`` when
    ``asym`` (m = the offset) else ``make_qx_quants(nmax, rmse_type=1)`` (m unused).
    """
    rows, n = x.shape
    nb = n // 32
    for r in prange(rows):
        w = np.empty(32, np.float32)
        lev8 = np.empty(32, np.uint8)
        aux8 = np.empty(32, np.uint8)
        levq = np.empty(32, np.int64)
        sum_x2 = F32_ZERO
        for j in range(n):
            sum_x2 += x[r, j] * x[r, j]
        sigma2 = sum_x2 / np.float32(n)
        for b in range(nb):
            xs = x[r, 32 * b:32 * b + 32]
            for k in range(32):
                w[k] = imp[32 * b + k] * np.sqrt(sigma2 + xs[k] * xs[k])
            ib = r * nb + b
            if asym:
                scale, the_min = _make_qkx(xs, w, nmax, _F32_RMIN, _F32_RDELTA, 36, lev8, aux8)
                d[ib] = scale
                m[ib] = -the_min
                for k in range(32):
                    lev[ib, k] = lev8[k]
            else:
                d[ib] = _make_qx(xs, w, True, nmax, levq)
                m[ib] = F32_ZERO
                for k in range(32):
                    lev[ib, k] = levq[k]
