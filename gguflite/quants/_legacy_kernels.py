"""Numba fast paths of the legacy codecs (see legacy.py for the block layouts and the math).

Each kernel mirrors its NumPy reference step by step in float32; the tests prove they agree bit
for bit with it and with ggml. Kernels take C-contiguous inputs, accept read-only arrays, and
write into a preallocated ``out`` (``prange`` over blocks: disjoint outputs).
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
)

_F32_MAX = np.float32(np.finfo(np.float32).max)
_F32_127 = np.float32(127.0)
_F32_15 = np.float32(15.0)
_F32_31 = np.float32(31.0)
_F32_M8 = np.float32(-8.0)
_F32_M16 = np.float32(-16.0)
_F32_8_5 = np.float32(8.5)
_F32_16_5 = np.float32(16.5)


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
def _signed_absmax(x, i):
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
    for i in prange(x.shape[0]):
        amax = F32_ZERO
        for j in range(32):
            a = abs(x[i, j])
            if a > amax:
                amax = a
        d = amax / _F32_127
        idv = _inverse(d)
        _put_fp16(out, i, 0, d)
        for j in range(32):
            out[i, 2 + j] = nb_c_f32_to_i8(nb_c_roundf(x[i, j] * idv)) & 0xFF


@njit(cache=True, parallel=True)
def q8_0_dequantize(blocks, table, out):
    """blocks (n, 34) uint8 -> out (n, 32) float32; ``table``: fp16 bits -> float32."""
    for i in prange(blocks.shape[0]):
        d = _get_fp16(blocks, i, 0, table)
        for j in range(32):
            q = np.int32(blocks[i, 2 + j])
            q = q - ((q & 0x80) << 1)  # two's complement byte -> -128..127
            out[i, j] = np.float32(q) * d


# -- Q4_0 / Q5_0 --------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def q4_0_quantize(x, out):
    """x (n, 32) float32 -> out (n, 18) uint8 (``quantize_row_q4_0_ref``)."""
    for i in prange(x.shape[0]):
        d = _signed_absmax(x, i) / _F32_M8
        idv = _inverse(d)
        _put_fp16(out, i, 0, d)
        for j in range(16):
            q0 = min(15, nb_c_f32_to_i8(x[i, j] * idv + _F32_8_5)) & 0xFF
            q1 = min(15, nb_c_f32_to_i8(x[i, j + 16] * idv + _F32_8_5)) & 0xFF
            out[i, 2 + j] = (q0 | (q1 << 4)) & 0xFF


@njit(cache=True, parallel=True)
def q4_0_dequantize(blocks, table, out):
    """blocks (n, 18) uint8 -> out (n, 32) float32."""
    for i in prange(blocks.shape[0]):
        d = _get_fp16(blocks, i, 0, table)
        for j in range(16):
            b = np.int32(blocks[i, 2 + j])
            out[i, j] = np.float32((b & 0x0F) - 8) * d
            out[i, j + 16] = np.float32((b >> 4) - 8) * d


@njit(cache=True, parallel=True)
def q5_0_quantize(x, out):
    """x (n, 32) float32 -> out (n, 22) uint8 (``quantize_row_q5_0_ref``)."""
    for i in prange(x.shape[0]):
        d = _signed_absmax(x, i) / _F32_M16
        idv = _inverse(d)
        _put_fp16(out, i, 0, d)
        qh = np.int64(0)
        for j in range(16):
            q0 = min(31, nb_c_f32_to_i8(x[i, j] * idv + _F32_16_5)) & 0xFF
            q1 = min(31, nb_c_f32_to_i8(x[i, j + 16] * idv + _F32_16_5)) & 0xFF
            out[i, 6 + j] = ((q0 & 0x0F) | ((q1 & 0x0F) << 4)) & 0xFF
            qh |= ((q0 >> 4) & 1) << j
            qh |= ((q1 >> 4) & 1) << (j + 16)
        for k in range(4):
            out[i, 2 + k] = (qh >> (8 * k)) & 0xFF


@njit(cache=True, parallel=True)
def q5_0_dequantize(blocks, table, out):
    """blocks (n, 22) uint8 -> out (n, 32) float32."""
    for i in prange(blocks.shape[0]):
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
    for i in prange(x.shape[0]):
        mn, mx = _min_max(x, i)
        d = (mx - mn) / _F32_15
        idv = _inverse(d)
        _put_fp16(out, i, 0, d)
        _put_fp16(out, i, 2, mn)
        for j in range(16):
            q0 = min(15, nb_c_f32_to_i8((x[i, j] - mn) * idv + F32_HALF)) & 0xFF
            q1 = min(15, nb_c_f32_to_i8((x[i, j + 16] - mn) * idv + F32_HALF)) & 0xFF
            out[i, 4 + j] = (q0 | (q1 << 4)) & 0xFF


@njit(cache=True, parallel=True)
def q4_1_dequantize(blocks, table, out):
    """blocks (n, 20) uint8 -> out (n, 32) float32."""
    for i in prange(blocks.shape[0]):
        d = _get_fp16(blocks, i, 0, table)
        m = _get_fp16(blocks, i, 2, table)
        for j in range(16):
            b = np.int32(blocks[i, 4 + j])
            out[i, j] = np.float32(b & 0x0F) * d + m
            out[i, j + 16] = np.float32(b >> 4) * d + m


@njit(cache=True, parallel=True)
def q5_1_quantize(x, out):
    """x (n, 32) float32 -> out (n, 24) uint8 (``quantize_row_q5_1_ref``)."""
    for i in prange(x.shape[0]):
        mn, mx = _min_max(x, i)
        d = (mx - mn) / _F32_31
        idv = _inverse(d)
        _put_fp16(out, i, 0, d)
        _put_fp16(out, i, 2, mn)
        qh = np.int64(0)
        for j in range(16):
            q0 = nb_c_f32_to_i32((x[i, j] - mn) * idv + F32_HALF) & 0xFF
            q1 = nb_c_f32_to_i32((x[i, j + 16] - mn) * idv + F32_HALF) & 0xFF
            out[i, 8 + j] = ((q0 & 0x0F) | ((q1 & 0x0F) << 4)) & 0xFF
            qh |= ((q0 >> 4) & 1) << j
            qh |= ((q1 >> 4) & 1) << (j + 16)
        for k in range(4):
            out[i, 4 + k] = (qh >> (8 * k)) & 0xFF


@njit(cache=True, parallel=True)
def q5_1_dequantize(blocks, table, out):
    """blocks (n, 24) uint8 -> out (n, 32) float32."""
    for i in prange(blocks.shape[0]):
        d = _get_fp16(blocks, i, 0, table)
        m = _get_fp16(blocks, i, 2, table)
        qh = (np.int64(blocks[i, 4]) | (np.int64(blocks[i, 5]) << 8)
              | (np.int64(blocks[i, 6]) << 16) | (np.int64(blocks[i, 7]) << 24))
        for j in range(16):
            b = np.int64(blocks[i, 8 + j])
            q0 = (b & 0x0F) | (((qh >> j) & 1) << 4)
            q1 = (b >> 4) | (((qh >> (j + 16)) & 1) << 4)
            out[i, j] = np.float32(q0) * d + m
            out[i, j + 16] = np.float32(q1) * d + m
