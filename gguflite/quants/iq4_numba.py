"""Numba fast paths of the IQ4_NL / IQ4_XS codecs (references and layouts: :mod:`.iq4`).

Same rules as :mod:`.kquants_numba`: ggml's scalar float32 sequence, every constant a float32,
parallel over blocks, read-only input accepted.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..constants import IQ4NL_VALUES
from .kquants_numba import _EPS, _ONE, _ZERO, F16_TABLE, _f16, _opts, _readonly, fp32_to_fp16
from .kquants_numba import nearest_int as _nearest_int

F32 = np.float32
KVALUES_F32 = np.array(IQ4NL_VALUES, dtype=F32)  # kvalues_iq4nl as float32
KVALUES_F32.flags.writeable = False
_NTRY = 7


@njit(**_opts)
def _best_index(kv, al):
    """ggml best_index_int8(16, kvalues_iq4nl, al)."""
    if al <= kv[0]:
        return 0
    if al >= kv[15]:
        return 15
    ml = 0
    mu = 15
    while mu - ml > 1:
        mav = (ml + mu) // 2
        if al < kv[mav]:
            mu = mav
        else:
            ml = mav
    return mu - 1 if al - kv[mu - 1] < kv[mu] - al else mu


@njit(**_opts)
def _fit(kv, x, w, iscale):
    sumqx = _ZERO
    sumq2 = _ZERO
    for j in range(x.shape[0]):
        q = kv[_best_index(kv, iscale * x[j])]
        wq = w[j] * q
        sumqx += wq * x[j]
        sumq2 += wq * q
    return sumqx, sumq2


@njit(**_opts)
def _sub_block_scale(kv, x, w):
    """The scale search of quantize_row_iq4_nl_impl on one 32-value sub-block (0: all tiny)."""
    amax = _ZERO
    vmax = _ZERO
    for j in range(x.shape[0]):
        ax = abs(x[j])
        if ax > amax:
            amax = ax
            vmax = x[j]
    if amax < _EPS:
        return _ZERO
    d = (-vmax) / kv[0]
    sumqx, sumq2 = _fit(kv, x, w, _ONE / d)
    d = sumqx / sumq2 if sumq2 > _ZERO else _ZERO
    best = d * sumqx
    for itry in range(-_NTRY, _NTRY + 1):
        sqx, sq2 = _fit(kv, x, w, np.float32(itry - 127) / vmax)
        if sq2 > _ZERO and sqx * sqx > best * sq2:
            d = sqx / sq2
            best = d * sqx
    return d


@njit(**_opts)
def _weights(x, qw, use_qw, w):
    """Fill w (n,) with qw * sqrt(sigma2 + x**2) or x**2 for the super-block x (n,)."""
    n = x.shape[0]
    if use_qw:
        sigma2 = _ZERO
        for j in range(n):
            sigma2 += x[j] * x[j]
        sigma2 *= np.float32(2.0) / np.float32(n)
        for j in range(n):
            w[j] = qw[j] * np.sqrt(sigma2 + x[j] * x[j])
    else:
        for j in range(n):
            w[j] = x[j] * x[j]


@njit(**_opts)
def _pack(kv, x, inv, qs):
    """Indices of x * inv for a 32-value sub-block, packed into qs (16,)."""
    for j in range(16):
        lo = _best_index(kv, inv * x[j])
        hi = _best_index(kv, inv * x[j + 16])
        qs[j] = lo | (hi << 4)


@njit(parallel=True, **_opts)
def _quantize_iq4_nl(x, qw, use_qw, kv, out):
    """x (nb, 32) f32, qw (nb, 32) f32 (read when use_qw) -> out (nb, 18) u8."""
    for i in prange(x.shape[0]):
        w = np.empty(32, F32)
        _weights(x[i], qw[i] if use_qw else qw[0], use_qw, w)
        s = _sub_block_scale(kv, x[i], w)
        d16 = fp32_to_fp16(s)
        out[i, 0] = d16 & 0xFF
        out[i, 1] = d16 >> 8
        _pack(kv, x[i], _ONE / s if s != _ZERO else _ZERO, out[i, 2:18])


@njit(parallel=True, **_opts)
def _quantize_iq4_xs(x, qw, use_qw, kv, out):
    """x (nb, 256) f32, qw (nb, 256) f32 (read when use_qw) -> out (nb, 136) u8."""
    for i in prange(x.shape[0]):
        xb = x[i]
        ob = out[i]
        w = np.empty(256, F32)
        _weights(xb, qw[i] if use_qw else qw[0], use_qw, w)
        scales = np.empty(8, F32)
        max_scale = _ZERO
        amax = _ZERO
        for j in range(8):
            s = _sub_block_scale(kv, xb[32 * j:32 * j + 32], w[32 * j:32 * j + 32])
            scales[j] = s
            if abs(s) > amax:
                amax = abs(s)
                max_scale = s
        d = (-max_scale) / np.float32(32.0)
        d16 = fp32_to_fp16(d)
        ob[0] = d16 & 0xFF
        ob[1] = d16 >> 8
        inv_d = _ONE / d if d != _ZERO else _ZERO
        scales_h = 0
        for j in range(8):
            lv = max(-32, min(31, _nearest_int(inv_d * scales[j])))
            dl = d * np.float32(lv)
            _pack(kv, xb[32 * j:32 * j + 32], _ONE / dl if dl != _ZERO else _ZERO,
                  ob[8 + 16 * j:24 + 16 * j])
            ls = lv + 32
            if j % 2 == 0:
                ob[4 + j // 2] = ls & 0xF
            else:
                ob[4 + j // 2] |= (ls & 0xF) << 4
            scales_h |= (ls >> 4) << (2 * j)
        ob[2] = scales_h & 0xFF
        ob[3] = scales_h >> 8


def _prep(blocks: np.ndarray, importance: np.ndarray | None, n: int):
    x = np.ascontiguousarray(blocks, dtype=F32)
    qw = np.zeros((1, n), F32) if importance is None else np.ascontiguousarray(importance, F32)
    return _readonly(x), _readonly(qw), importance is not None


def quantize_iq4_nl(blocks: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
    """(nb, 32) float32 [+ (nb, 32) importance] -> (nb, 18) uint8 IQ4_NL blocks."""
    x, qw, use_qw = _prep(blocks, importance, 32)
    out = np.zeros((x.shape[0], 18), dtype=np.uint8)
    _quantize_iq4_nl(x, qw, use_qw, KVALUES_F32, out)
    return out


def quantize_iq4_xs(blocks: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
    """(nb, 256) float32 [+ (nb, 256) importance] -> (nb, 136) uint8 IQ4_XS blocks."""
    x, qw, use_qw = _prep(blocks, importance, 256)
    out = np.zeros((x.shape[0], 136), dtype=np.uint8)
    _quantize_iq4_xs(x, qw, use_qw, KVALUES_F32, out)
    return out


# -- decoders ------------------------------------------------------------------------------------
@njit(parallel=True, **_opts)
def _dequantize_iq4_nl(b, table, kv, y):
    """b (nb, 18) u8 -> y (nb, 32) f32."""
    for i in prange(b.shape[0]):
        d = _f16(table, b[i, 0], b[i, 1])
        for j in range(16):
            q = np.int64(b[i, 2 + j])
            y[i, j] = d * kv[q & 0xF]
            y[i, j + 16] = d * kv[q >> 4]


@njit(parallel=True, **_opts)
def _dequantize_iq4_xs(b, table, kv, y):
    """b (nb, 136) u8 -> y (nb, 256) f32."""
    for i in prange(b.shape[0]):
        d = _f16(table, b[i, 0], b[i, 1])
        sh = np.int64(b[i, 2]) | (np.int64(b[i, 3]) << 8)
        for j in range(8):
            ls = ((np.int64(b[i, 4 + j // 2]) >> (4 * (j % 2))) & 0xF) | (((sh >> (2 * j)) & 3)
                                                                           << 4)
            dl = d * np.float32(ls - 32)
            for t in range(16):
                q = np.int64(b[i, 8 + 16 * j + t])
                y[i, 32 * j + t] = dl * kv[q & 0xF]
                y[i, 32 * j + 16 + t] = dl * kv[q >> 4]


def dequantize_iq4_nl(blocks: np.ndarray) -> np.ndarray:
    """(nb, 18) uint8 -> (nb, 32) float32."""
    b = np.ascontiguousarray(blocks, dtype=np.uint8)
    y = np.empty((b.shape[0], 32), dtype=F32)
    _dequantize_iq4_nl(_readonly(b), F16_TABLE, KVALUES_F32, y)
    return y


def dequantize_iq4_xs(blocks: np.ndarray) -> np.ndarray:
    """(nb, 136) uint8 -> (nb, 256) float32."""
    b = np.ascontiguousarray(blocks, dtype=np.uint8)
    y = np.empty((b.shape[0], 256), dtype=F32)
    _dequantize_iq4_xs(_readonly(b), F16_TABLE, KVALUES_F32, y)
    return y
