"""Numba fast paths of the Q2_K and Q3_K encoders (references and layouts: :mod:`.kquants_lowbit`).

Same rules as :mod:`.kquants_numba`: ggml's scalar float32 sequence, every constant a float32,
parallel over super-blocks, read-only input accepted. Tests prove bit equality with the NumPy
references and with ggml.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .kquants_numba import (
    _EPS,
    _ONE,
    _TENTH,
    _ZERO,
    F16_TABLE,
    _make_qkx,
    _make_qp,
    _make_qx,
    _make_qx_w,
    _opts,
    _readonly,
    fp32_to_fp16,
    nearest_int,
)

F32 = np.float32


@njit(**_opts)
def _make_q3(x, nmax, lev):
    """make_q3_quants(do_rmse=true) on one group: fills ``lev`` (level + nmax); returns scale."""
    n = x.shape[0]
    amax = _ZERO
    vmax = _ZERO
    for i in range(n):
        ax = abs(x[i])
        if ax > amax:
            amax = ax
            vmax = x[i]
    if amax < _EPS:
        for i in range(n):
            lev[i] = 0
        return _ZERO
    iscale = np.float32(-nmax) / vmax
    sumlx = _ZERO
    suml2 = _ZERO
    for i in range(n):
        lv = max(-nmax, min(nmax - 1, nearest_int(iscale * x[i])))
        lev[i] = lv
        w = x[i] * x[i]
        lf = np.float32(lv)
        sumlx += (w * x[i]) * lf
        suml2 += (w * lf) * lf
    for _ in range(5):
        n_changed = 0
        for i in range(n):
            w = x[i] * x[i]
            li = np.float32(lev[i])
            slx = sumlx - (w * x[i]) * li
            if slx > _ZERO:
                sl2 = suml2 - (w * li) * li
                new_l = max(-nmax, min(nmax - 1, nearest_int((x[i] * sl2) / slx)))
                if new_l != lev[i]:
                    nf = np.float32(new_l)
                    slx += (w * x[i]) * nf
                    sl2 += (w * nf) * nf
                    if sl2 > _ZERO and (slx * slx) * suml2 > (sumlx * sumlx) * sl2:
                        lev[i] = new_l
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    for i in range(n):
        lev[i] += nmax
    return sumlx / suml2 if suml2 > _ZERO else _ZERO


@njit(**_opts)
def _pack_2bit(lev, qs):
    """(256,) levels 0..3 -> qs (64,) u8; see kquants_lowbit.pack_2bit_levels."""
    for n in range(2):
        for k in range(32):
            b = 128 * n + k
            qs[32 * n + k] = (lev[b] | (lev[b + 32] << 2) | (lev[b + 64] << 4)
                              | (lev[b + 96] << 6))


# -- Q2_K ----------------------------------------------------------------------------------------
@njit(parallel=True, **_opts)
def _quantize_q2_k(x, qw, use_qw, table, out):
    """x (nb, 256) f32, qw (nb, 256) f32 (read when use_qw) -> out (nb, 84) u8."""
    for i in prange(x.shape[0]):
        xb = x[i]
        ob = out[i]
        lev = np.empty(256, np.int64)
        lev8 = np.empty(16, np.uint8)
        aux8 = np.empty(16, np.uint8)
        w = np.empty(16, F32)
        scales = np.empty(16, F32)
        mins = np.empty(16, F32)
        sw = np.empty(16, F32)
        ls = np.zeros(16, np.int64)
        lm = np.zeros(16, np.int64)
        if use_qw:
            sum_x2 = _ZERO
            for k in range(256):
                sum_x2 += xb[k] * xb[k]
            sigma2 = sum_x2 / np.float32(256.0)
            for j in range(16):
                xs = xb[16 * j:16 * j + 16]
                sumw = _ZERO
                for k in range(16):
                    w[k] = qw[i, 16 * j + k] * np.sqrt(sigma2 + xs[k] * xs[k])
                    sumw += w[k]
                sw[j] = sumw
                scales[j], mins[j] = _make_qkx(xs, w, 3, np.float32(-0.9), np.float32(0.05),
                                               36, lev8, aux8)
                for k in range(16):
                    lev[16 * j + k] = lev8[k]
            d16 = fp32_to_fp16(_make_qp(scales, 15, sw, ls))
            dmin16 = fp32_to_fp16(_make_qp(mins, 15, sw, lm))
        else:
            max_scale = _ZERO
            max_min = _ZERO
            for j in range(16):
                xs = xb[16 * j:16 * j + 16]
                for k in range(16):
                    w[k] = abs(xs[k])
                scales[j], mins[j] = _make_qkx(xs, w, 3, np.float32(-0.5), _TENTH, 15,
                                               lev8, aux8, True)
                for k in range(16):
                    lev[16 * j + k] = lev8[k]
                if scales[j] > max_scale:
                    max_scale = scales[j]
                if mins[j] > max_min:
                    max_min = mins[j]
            d16 = 0
            dmin16 = 0
            if max_scale > _ZERO:
                iscale = np.float32(15.0) / max_scale
                for j in range(16):
                    ls[j] = nearest_int(iscale * scales[j])
                d16 = fp32_to_fp16(max_scale / np.float32(15.0))
            if max_min > _ZERO:
                iscale = np.float32(15.0) / max_min
                for j in range(16):
                    lm[j] = nearest_int(iscale * mins[j])
                dmin16 = fp32_to_fp16(max_min / np.float32(15.0))
        dd = table[d16]
        dmm = table[dmin16]
        for j in range(16):
            s = ((ls[j] & 0xFF) | (lm[j] << 4)) & 0xFF  # uint8 stores, as in C
            ob[j] = s
            d = dd * np.float32(s & 0xF)
            if d == _ZERO:
                continue
            dm = dmm * np.float32(s >> 4)
            for k in range(16):
                lev[16 * j + k] = max(0, min(3, nearest_int((xb[16 * j + k] + dm) / d)))
        _pack_2bit(lev, ob[16:80])
        ob[80] = d16 & 0xFF
        ob[81] = d16 >> 8
        ob[82] = dmin16 & 0xFF
        ob[83] = dmin16 >> 8


def quantize_q2_k(blocks: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
    """(nb, 256) float32 [+ (nb, 256) importance] -> (nb, 84) uint8 Q2_K blocks."""
    x = np.ascontiguousarray(blocks, dtype=F32)
    out = np.zeros((x.shape[0], 84), dtype=np.uint8)
    qw = np.zeros((1, 256), F32) if importance is None else np.ascontiguousarray(importance, F32)
    _quantize_q2_k(_readonly(x), _readonly(qw), importance is not None, F16_TABLE, out)
    return out


# -- Q3_K ----------------------------------------------------------------------------------------
@njit(parallel=True, **_opts)
def _quantize_q3_k(x, qw, use_qw, table, out):
    """x (nb, 256) f32, qw (nb, 256) f32 (read when use_qw) -> out (nb, 110) u8."""
    for i in prange(x.shape[0]):
        xb = x[i]
        ob = out[i]
        lev = np.empty(256, np.int64)
        w = np.empty(16, F32)
        wx = np.empty(16, F32)
        scales = np.empty(16, F32)
        sw = np.empty(16, F32)
        ls = np.zeros(16, np.int64)
        d16 = 0
        if use_qw:
            sum_x2 = _ZERO
            for k in range(256):
                sum_x2 += xb[k] * xb[k]
            sigma2 = (np.float32(2.0) * sum_x2) / np.float32(256.0)
            for j in range(16):
                xs = xb[16 * j:16 * j + 16]
                sumw = _ZERO
                for k in range(16):
                    w[k] = qw[i, 16 * j + k] * np.sqrt(sigma2 + xs[k] * xs[k])
                    sumw += w[k]
                sw[j] = sumw
                for k in range(16):
                    wx[k] = w[k] * xs[k]
                scales[j] = _make_qx_w(xs, w, wx, 4, lev[16 * j:16 * j + 16])
            d16 = fp32_to_fp16(_make_qx(scales, sw, True, 32, ls))
        else:
            max_scale = _ZERO
            amax = _ZERO
            for j in range(16):
                s = _make_q3(xb[16 * j:16 * j + 16], 4, lev[16 * j:16 * j + 16])
                scales[j] = s
                if abs(s) > amax:
                    amax = abs(s)
                    max_scale = s
            if max_scale != _ZERO:
                iscale = np.float32(-32.0) / max_scale
                for j in range(16):
                    raw = ((nearest_int(iscale * scales[j]) + 128) & 0xFF) - 128  # int8_t
                    ls[j] = max(-32, min(31, raw)) + 32
                d16 = fp32_to_fp16(_ONE / iscale)
        # scales[12]: see kquants_lowbit.pack_q3_k_scales; all zero when there is no scale
        for j in range(8):
            ob[96 + j] = (ls[j] & 0xF) | ((ls[j + 8] & 0xF) << 4)
        for t in range(4):
            ob[104 + t] = ((ls[t] >> 4) | ((ls[4 + t] >> 4) << 2) | ((ls[8 + t] >> 4) << 4)
                           | ((ls[12 + t] >> 4) << 6)) & 0xFF
        ob[108] = d16 & 0xFF
        ob[109] = d16 >> 8
        dd = table[d16]
        for j in range(16):
            lo = (np.int64(ob[96 + j % 8]) >> (4 * (j // 8))) & 0xF
            hi = (np.int64(ob[104 + j % 4]) >> (2 * (j // 4))) & 3
            d = dd * np.float32((lo | (hi << 4)) - 32)
            if d == _ZERO:
                continue
            for k in range(16):
                lev[16 * j + k] = max(-4, min(3, nearest_int(xb[16 * j + k] / d))) + 4
        for k in range(32):
            h = 0
            for b in range(8):
                if lev[32 * b + k] > 3:
                    h |= 1 << b
                    lev[32 * b + k] -= 4
            ob[k] = h
        _pack_2bit(lev, ob[32:96])


def quantize_q3_k(blocks: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
    """(nb, 256) float32 [+ (nb, 256) importance] -> (nb, 110) uint8 Q3_K blocks."""
    x = np.ascontiguousarray(blocks, dtype=F32)
    out = np.zeros((x.shape[0], 110), dtype=np.uint8)
    qw = np.zeros((1, 256), F32) if importance is None else np.ascontiguousarray(importance, F32)
    _quantize_q3_k(_readonly(x), _readonly(qw), importance is not None, F16_TABLE, out)
    return out
