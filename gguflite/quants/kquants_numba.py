"""Numba fast paths of the k-quant codecs (see :mod:`.kquants` for layouts and the references).

Every kernel runs ggml's scalar float32 sequence (same operation order, no fused multiply-add,
no reassociation) so it equals the NumPy reference bit for bit; tests prove it block by block.
Kernels are parallel over super-blocks and accept read-only (memory-mapped) input.

Numba pitfalls this file avoids: a Python float literal or an ``int`` meeting a float32 makes
float64, so every constant is ``np.float32`` and every level is converted with ``F32(l)``
before it meets a float; ``error_model="numpy"`` lets x / 0 give inf as in C instead of raising.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

F32 = np.float32
_EPS = np.float32(1e-15)  # GROUP_MAX_EPS
_MAGIC = np.float32(12582912.0)
_TO_INF = np.float32(2.0**112)
_TO_ZERO = np.float32(2.0**-110)
_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)
_TENTH = np.float32(0.1)
_F32_MAX = np.float32(3.4028235e38)

# fp16 bits -> float32, for every bit pattern; the same conversion NumPy's astype does
F16_TABLE = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view("<f2").astype(F32)
F16_TABLE.flags.writeable = False

_opts = dict(cache=True, error_model="numpy")


def _readonly(a: np.ndarray) -> np.ndarray:
    """A read-only view, so each kernel compiles once (Numba specialises on writability)."""
    v = a.view()
    v.flags.writeable = False
    return v


# -- scalar helpers ------------------------------------------------------------------------------
@njit(**_opts)
def nearest_int(f):
    """ggml nearest_int on a float32 scalar: bits(f + 1.5*2**23) & 0x7fffff, minus 0x400000."""
    v = np.float32(f + _MAGIC)
    return np.int64(v.view(np.int32) & 0x007FFFFF) - 0x00400000


@njit(**_opts)
def fp32_to_fp16(f):
    """ggml_compute_fp32_to_fp16 on a float32 scalar; returns the fp16 bits as int64."""
    base = (abs(f) * _TO_INF) * _TO_ZERO
    w = np.int64(np.float32(f).view(np.uint32))
    shl1_w = (w + w) & 0xFFFFFFFF
    sign = w & 0x80000000
    bias = shl1_w & 0xFF000000
    if bias < 0x71000000:
        bias = 0x71000000
    base = np.uint32((bias >> 1) + 0x07800000).view(np.float32) + base
    bits = np.int64(np.float32(base).view(np.uint32))
    nonsign = ((bits >> 13) & 0x7C00) + (bits & 0x0FFF)
    if shl1_w > 0xFF000000:
        nonsign = 0x7E00
    return (sign >> 16) | nonsign


@njit(**_opts)
def _f16(table, lo, hi):
    return table[np.int64(lo) | (np.int64(hi) << 8)]


@njit(**_opts)
def _scale_min_k4(j, q):
    """ggml get_scale_min_k4: 6-bit scale and min of sub-block j from the 12 bytes ``q``."""
    if j < 4:
        return np.int64(q[j]) & 63, np.int64(q[j + 4]) & 63
    sc = (np.int64(q[j + 4]) & 0xF) | ((np.int64(q[j - 4]) >> 6) << 4)
    mn = (np.int64(q[j + 4]) >> 4) | ((np.int64(q[j]) >> 6) << 4)
    return sc, mn


# -- scale searches (one group at a time; see the NumPy versions for the maths) ----------------
@njit(**_opts)
def _make_qkx(x, w, nmax, rmin, rdelta, nstep, lev, aux, use_mad=False):
    """make_qkx2/3_quants on one group: fills ``lev`` (uint8); returns (scale, the_min).

    ``use_mad``: weighted absolute instead of squared errors (Q2_K's reference encoder).
    """
    n = x.shape[0]
    mn = x[0]
    mx = x[0]
    sum_w = w[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        if x[i] < mn:
            mn = x[i]
        if x[i] > mx:
            mx = x[i]
        sum_w += w[i]
        sum_x += w[i] * x[i]
    if mn > _ZERO:
        mn = _ZERO
    if not mx > mn:
        for i in range(n):
            lev[i] = 0
        return _ZERO, -mn
    fnmax = np.float32(nmax)
    iscale = fnmax / (mx - mn)
    scale = _ONE / iscale
    best = _ZERO
    for i in range(n):
        lv = max(0, min(nmax, nearest_int(iscale * (x[i] - mn))))
        lev[i] = lv
        diff = scale * np.float32(lv) + mn - x[i]
        best += w[i] * (abs(diff) if use_mad else diff * diff)
    for step in range(nstep + 1):
        iscale = (rmin + rdelta * np.float32(step) + fnmax) / (mx - mn)
        sum_l = _ZERO
        sum_l2 = _ZERO
        sum_xl = _ZERO
        for i in range(n):
            lv = max(0, min(nmax, nearest_int(iscale * (x[i] - mn))))
            aux[i] = lv
            lf = np.float32(lv)
            wl = w[i] * lf
            sum_l += wl
            sum_l2 += wl * lf
            sum_xl += wl * x[i]
        det = sum_w * sum_l2 - sum_l * sum_l
        if det > _ZERO:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
            if this_min > _ZERO:
                this_min = _ZERO
                this_scale = sum_xl / sum_l2
            err = _ZERO
            for i in range(n):
                diff = this_scale * np.float32(aux[i]) + this_min - x[i]
                err += w[i] * (abs(diff) if use_mad else diff * diff)
            if err < best:
                for i in range(n):
                    lev[i] = aux[i]
                best = err
                scale = this_scale
                mn = this_min
    return scale, -mn


_ROUND_EXACT = np.float32(4194303.0)  # |v| up to here: (v + 1.5*2**23) - 1.5*2**23 == nearest_int


@njit(inline="always", **_opts)
def _level_f(v, lo, hi):
    """float32(clamp(nearest_int(v), lo, hi)) without leaving float32 where that is exact.

    Adding and subtracting 1.5*2**23 rounds half to even exactly as ggml's nearest_int for
    |v| <= 4194303 and vectorizes; larger values and NaN take nearest_int's integer garbage.
    """
    if abs(v) <= _ROUND_EXACT:
        r = (v + _MAGIC) - _MAGIC
    else:
        r = np.float32(nearest_int(v))
    return min(max(r, lo), hi)


@njit(**_opts)
def _qx_sums(x, w, wx, iscale, nmax):
    lo = np.float32(-nmax)
    hi = np.float32(nmax - 1)
    sumlx = _ZERO
    suml2 = _ZERO
    for i in range(x.shape[0]):
        lf = _level_f(iscale * x[i], lo, hi)
        sumlx += wx[i] * lf
        suml2 += (w[i] * lf) * lf
    return sumlx, suml2


@njit(**_opts)
def _make_qx(x, qw, use_qw, nmax, lev):
    """make_qx_quants(rmse_type=1) on one group: fills ``lev`` (level + nmax); returns scale.

    Weights are ``qw`` (when ``use_qw``) or x**2; see :func:`_make_qx_w`.
    """
    n = x.shape[0]
    w = np.empty(n, F32)
    wx = np.empty(n, F32)
    _qx_weights(x, qw, use_qw, w, wx)
    return _make_qx_w(x, w, wx, nmax, lev)


@njit(inline="always", **_opts)
def _qx_weights(x, qw, use_qw, w, wx):
    """w = qw or x**2, wx = w * x, as make_qx_quants forms them."""
    for i in range(x.shape[0]):
        w[i] = qw[i] if use_qw else x[i] * x[i]
        wx[i] = w[i] * x[i]


_QX_TRIALS = 19  # make_qx_quants: the first scale, then steps -9..-1, 1..9


@njit(**_opts)
def _make_qx_w(x, w, wx, nmax, lev):
    """make_qx_quants(rmse_type=1) with the weights ``w`` and ``w * x`` given.

    All 19 trial scales are summed in one pass over the values (each trial's sums still add
    the values in ggml's order, so every sum is bit-identical; the trials are independent
    chains that the CPU runs side by side), then the trials are judged in ggml's order. Groups
    with a non-finite value take the one-trial-at-a-time path of ggml's integer rounding.
    """
    n = x.shape[0]
    amax = _ZERO
    vmax = _ZERO
    finite = True
    for i in range(n):
        ax = abs(x[i])
        finite &= ax <= _F32_MAX
        if ax > amax:
            amax = ax
            vmax = x[i]
    if amax < _EPS:
        for i in range(n):
            lev[i] = 0
        return _ZERO
    if not finite:
        return _make_qx_slow(x, w, wx, nmax, vmax, lev)
    isc = np.empty(_QX_TRIALS, F32)
    slx = np.zeros(_QX_TRIALS, F32)
    sl2 = np.zeros(_QX_TRIALS, F32)
    isc[0] = np.float32(-nmax) / vmax
    for t in range(1, _QX_TRIALS):
        step = t - 10 if t < 10 else t - 9
        isc[t] = -(np.float32(nmax) + _TENTH * np.float32(step)) / vmax
    lo = np.float32(-nmax)
    hi = np.float32(nmax - 1)
    for i in range(n):
        xi = x[i]
        wi = w[i]
        wxi = wx[i]
        for t in range(_QX_TRIALS):
            r = (isc[t] * xi + _MAGIC) - _MAGIC  # nearest_int, exact: |isc * x| <= nmax + 1
            r = lo if r < lo else r
            r = hi if r > hi else r
            slx[t] += wxi * r
            sl2[t] += (wi * r) * r
    scale = slx[0] / sl2[0] if sl2[0] != _ZERO else _ZERO
    best = scale * slx[0]
    win = 0
    for t in range(1, _QX_TRIALS):
        if sl2[t] > _ZERO and slx[t] * slx[t] > best * sl2[t]:
            scale = slx[t] / sl2[t]
            best = scale * slx[t]
            win = t
    for i in range(n):
        lev[i] = nmax + max(-nmax, min(nmax - 1, nearest_int(isc[win] * x[i])))
    return scale


@njit(**_opts)
def _make_qx_slow(x, w, wx, nmax, vmax, lev):
    """ggml's make_qx_quants loop as written (inf/NaN values: nearest_int's integer garbage)."""
    n = x.shape[0]
    iscale = np.float32(-nmax) / vmax
    for i in range(n):
        lev[i] = nmax + max(-nmax, min(nmax - 1, nearest_int(iscale * x[i])))
    sumlx, suml2 = _qx_sums(x, w, wx, iscale, nmax)
    scale = sumlx / suml2 if suml2 != _ZERO else _ZERO
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -(np.float32(nmax) + _TENTH * np.float32(step)) / vmax
        sumlx, suml2 = _qx_sums(x, w, wx, iscale, nmax)
        if suml2 > _ZERO and sumlx * sumlx > best * suml2:
            for i in range(n):
                lev[i] = nmax + max(-nmax, min(nmax - 1, nearest_int(iscale * x[i])))
            scale = sumlx / suml2
            best = scale * sumlx
    return scale


@njit(**_opts)
def _make_qp(x, nmax, qw, lev):
    """make_qp_quants on one group: fills ``lev`` (the stored uint8 values); returns scale."""
    n = x.shape[0]
    vmax = _ZERO
    for i in range(n):
        vmax = vmax if vmax > x[i] else x[i]
    if vmax < _EPS:
        for i in range(n):
            lev[i] = 0
        return _ZERO
    fnmax = np.float32(nmax)
    iscale = fnmax / vmax
    for i in range(n):
        lev[i] = nearest_int(iscale * x[i]) & 0xFF
    scale = _ONE / iscale
    best = _ZERO
    for i in range(n):
        diff = x[i] - scale * np.float32(lev[i])
        best += (qw[i] * diff) * diff
    for step in range(-4, 5):
        if step == 0:
            continue
        iscale_is = (_TENTH * np.float32(step) + fnmax) / vmax
        scale_is = _ONE / iscale_is
        mse = _ZERO
        for i in range(n):
            lv = min(nmax, nearest_int(iscale_is * x[i]))
            diff = x[i] - scale_is * np.float32(lv)
            mse += (qw[i] * diff) * diff
        if mse < best:
            best = mse
            iscale = iscale_is
    sumlx = _ZERO
    suml2 = _ZERO
    for i in range(n):
        lv = min(nmax, nearest_int(iscale * x[i]))
        lev[i] = lv & 0xFF
        lf = np.float32(lv)
        sumlx += (qw[i] * x[i]) * lf
        suml2 += (qw[i] * lf) * lf
    for _ in range(5):
        n_changed = 0
        for i in range(n):
            w = qw[i]
            li = np.float32(lev[i])
            slx = sumlx - (w * x[i]) * li
            sl2 = suml2 - (w * li) * li
            if slx > _ZERO and sl2 > _ZERO:
                new_l = min(nmax, nearest_int((x[i] * sl2) / slx))
                if new_l != lev[i]:
                    nf = np.float32(new_l)
                    slx += (w * x[i]) * nf
                    sl2 += (w * nf) * nf
                    if (slx * slx) * suml2 > (sumlx * sumlx) * sl2:
                        lev[i] = new_l & 0xFF
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    return sumlx / suml2 if suml2 > _ZERO else _ZERO


# -- Q4_K, Q5_K --------------------------------------------------------------------------------
@njit(parallel=True, **_opts)
def _quantize_qk_min(x, qw, use_qw, nmax, table, out):
    """x (nb, 256) f32, qw (nb, 256) f32 (read when use_qw) -> out (nb, 144) u8 Q4_K
    (nmax 15) or (nb, 176) u8 Q5_K (nmax 31); see kquants.search_scale_min_k."""
    nb = x.shape[0]
    for i in prange(nb):
        xb = x[i]
        ob = out[i]
        lev = np.empty(256, np.int64)
        aux8 = np.empty(32, np.uint8)
        lev8 = np.empty(32, np.uint8)
        w = np.empty(32, F32)
        scales = np.empty(8, F32)
        mins = np.empty(8, F32)
        sw = np.empty(8, F32)
        ls = np.empty(8, np.int64)
        lm = np.empty(8, np.int64)
        if use_qw:
            sum_x2 = _ZERO
            for k in range(256):
                sum_x2 += xb[k] * xb[k]
            sigma2 = (np.float32(2.0) * sum_x2) / np.float32(256.0)
            for j in range(8):
                xs = xb[32 * j:32 * j + 32]
                sumw = _ZERO
                for k in range(32):
                    w[k] = qw[i, 32 * j + k] * np.sqrt(sigma2 + xs[k] * xs[k])
                    sumw += w[k]
                sw[j] = sumw
                scales[j], mins[j] = _make_qkx(xs, w, nmax, np.float32(-0.9),
                                               np.float32(0.05), 36, lev8, aux8)
                for k in range(32):
                    lev[32 * j + k] = lev8[k]
            d_block = _make_qp(scales, 63, sw, ls)
            m_block = _make_qp(mins, 63, sw, lm)
            if nmax == 31:  # Q5_K's impl clamps the stored levels to 63; Q4_K's does not
                for j in range(8):
                    ls[j] = min(63, ls[j])
                    lm[j] = min(63, lm[j])
            d16 = fp32_to_fp16(d_block)
            dmin16 = fp32_to_fp16(m_block)
        else:
            max_scale = _ZERO
            max_min = _ZERO
            for j in range(8):
                xs = xb[32 * j:32 * j + 32]
                sum_x2 = _ZERO
                for k in range(32):
                    sum_x2 += xs[k] * xs[k]
                av_x = np.sqrt(sum_x2 / np.float32(32.0))
                for k in range(32):
                    w[k] = av_x + abs(xs[k])
                if nmax == 15:
                    scales[j], mins[j] = _make_qkx(xs, w, 15, np.float32(-1.0), _TENTH, 20,
                                                   lev8, aux8)
                else:
                    scales[j], mins[j] = _make_qkx(xs, w, 31, np.float32(-0.5), _TENTH, 15,
                                                   lev8, aux8)
                for k in range(32):
                    lev[32 * j + k] = lev8[k]
                if scales[j] > max_scale:
                    max_scale = scales[j]
                if mins[j] > max_min:
                    max_min = mins[j]
            inv_scale = np.float32(63.0) / max_scale if max_scale > _ZERO else _ZERO
            inv_min = np.float32(63.0) / max_min if max_min > _ZERO else _ZERO
            for j in range(8):
                ls[j] = min(63, nearest_int(inv_scale * scales[j]) & 0xFF)
                lm[j] = min(63, nearest_int(inv_min * mins[j]) & 0xFF)
            d16 = fp32_to_fp16(max_scale / np.float32(63.0))
            dmin16 = fp32_to_fp16(max_min / np.float32(63.0))
        # scales[12]: see kquants.unpack_scale_min_k4 for the bit layout
        sc = ob[4:16]
        for j in range(4):
            sc[j] = ls[j] & 0xFF
            sc[j + 4] = lm[j] & 0xFF
        for j in range(4, 8):
            sc[j + 4] = ((ls[j] & 0xF) | ((lm[j] & 0xF) << 4)) & 0xFF
            sc[j - 4] |= ((ls[j] >> 4) << 6) & 0xFF
            sc[j] |= ((lm[j] >> 4) << 6) & 0xFF
        ob[0] = d16 & 0xFF
        ob[1] = d16 >> 8
        ob[2] = dmin16 & 0xFF
        ob[3] = dmin16 >> 8
        dd = table[d16]
        dmm = table[dmin16]
        for j in range(8):
            s, m = _scale_min_k4(j, sc)
            d = dd * np.float32(s)
            if d == _ZERO:
                continue
            dm = dmm * np.float32(m)
            for k in range(32):
                lev[32 * j + k] = max(0, min(nmax, nearest_int((xb[32 * j + k] + dm) / d)))
        q0 = 16 if nmax == 15 else 48  # Q5_K: qh[32] before qs, see kquants.quantize_q5_k
        for c in range(4):
            for k in range(32):
                l1 = lev[64 * c + k]
                l2 = lev[64 * c + 32 + k]
                ob[q0 + 32 * c + k] = (l1 & 0xF) | ((l2 & 0xF) << 4)
                if nmax == 31:
                    ob[16 + k] |= ((l1 >> 4) << (2 * c)) | ((l2 >> 4) << (2 * c + 1))


def quantize_q4_k(blocks: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
    """(nb, 256) float32 [+ (nb, 256) importance] -> (nb, 144) uint8 Q4_K blocks."""
    x = np.ascontiguousarray(blocks, dtype=F32)
    out = np.zeros((x.shape[0], 144), dtype=np.uint8)
    qw = np.zeros((1, 256), F32) if importance is None else np.ascontiguousarray(importance, F32)
    _quantize_qk_min(_readonly(x), _readonly(qw), importance is not None, 15, F16_TABLE, out)
    return out


def quantize_q5_k(blocks: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
    """(nb, 256) float32 [+ (nb, 256) importance] -> (nb, 176) uint8 Q5_K blocks."""
    x = np.ascontiguousarray(blocks, dtype=F32)
    out = np.zeros((x.shape[0], 176), dtype=np.uint8)
    qw = np.zeros((1, 256), F32) if importance is None else np.ascontiguousarray(importance, F32)
    _quantize_qk_min(_readonly(x), _readonly(qw), importance is not None, 31, F16_TABLE, out)
    return out


# -- Q6_K ----------------------------------------------------------------------------------------
@njit(parallel=True, **_opts)
def _quantize_q6_k(x, qw, use_qw, table, out):
    """x (nb, 256) f32, qw (nb, 256) f32 (read when use_qw) -> out (nb, 210) u8."""
    nb = x.shape[0]
    for i in prange(nb):
        xb = x[i]
        ob = out[i]
        lev = np.empty(256, np.int64)
        scales = np.empty(16, F32)
        max_scale = _ZERO
        max_abs = _ZERO
        w = np.empty(16, F32)
        wx = np.empty(16, F32)
        for j in range(16):
            xs = xb[16 * j:16 * j + 16]
            _qx_weights(xs, qw[i, 16 * j:16 * j + 16] if use_qw else qw[0, 0:16], use_qw, w, wx)
            s = _make_qx_w(xs, w, wx, 32, lev[16 * j:16 * j + 16])
            scales[j] = s
            if abs(s) > max_abs:
                max_abs = abs(s)
                max_scale = s
        if max_abs < _EPS:
            continue  # out is zero-filled: the whole block stays zero
        iscale = np.float32(-128.0) / max_scale
        d16 = fp32_to_fp16(_ONE / iscale)
        ob[208] = d16 & 0xFF
        ob[209] = d16 >> 8
        dd = table[d16]
        for j in range(16):
            s8 = min(127, nearest_int(iscale * scales[j])) & 0xFF
            ob[192 + j] = s8
            d = dd * np.float32(s8 - 256 if s8 > 127 else s8)
            if d == _ZERO:
                continue
            for k in range(16):
                lev[16 * j + k] = max(-32, min(31, nearest_int(xb[16 * j + k] / d))) + 32
        # ql[128], qh[64]: see kquants.quantize_q6_k for the bit layout
        for n in range(2):
            for k in range(32):
                q0 = lev[128 * n + k]
                q1 = lev[128 * n + 32 + k]
                q2 = lev[128 * n + 64 + k]
                q3 = lev[128 * n + 96 + k]
                ob[64 * n + k] = (q0 & 0xF) | ((q2 & 0xF) << 4)
                ob[64 * n + 32 + k] = (q1 & 0xF) | ((q3 & 0xF) << 4)
                ob[128 + 32 * n + k] = (q0 >> 4) | ((q1 >> 4) << 2) | ((q2 >> 4) << 4) | (
                    (q3 >> 4) << 6)


def quantize_q6_k(blocks: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
    """(nb, 256) float32 [+ (nb, 256) importance] -> (nb, 210) uint8 Q6_K blocks."""
    x = np.ascontiguousarray(blocks, dtype=F32)
    out = np.zeros((x.shape[0], 210), dtype=np.uint8)
    qw = np.zeros((1, 256), F32) if importance is None else np.ascontiguousarray(importance, F32)
    _quantize_q6_k(_readonly(x), _readonly(qw), importance is not None, F16_TABLE, out)
    return out


# -- dequantizers --------------------------------------------------------------------------------
@njit(parallel=True, **_opts)
def _dequantize_q2_k(b, table, y):
    """b (nb, 84) u8, table (65536,) f32 fp16 values -> y (nb, 256) f32."""
    for i in prange(b.shape[0]):
        d = _f16(table, b[i, 80], b[i, 81])
        dmin = _f16(table, b[i, 82], b[i, 83])
        for n in range(2):
            for j in range(4):
                for k in range(2):
                    sc = np.int64(b[i, 8 * n + 2 * j + k])
                    dl = d * np.float32(sc & 0xF)
                    ml = dmin * np.float32(sc >> 4)
                    base = 128 * n + 32 * j + 16 * k
                    for t in range(16):
                        q = (np.int64(b[i, 16 + 32 * n + 16 * k + t]) >> (2 * j)) & 3
                        y[i, base + t] = dl * np.float32(q) - ml


@njit(parallel=True, **_opts)
def _dequantize_q3_k(b, table, y):
    """b (nb, 110) u8, table (65536,) f32 fp16 values -> y (nb, 256) f32."""
    for i in prange(b.shape[0]):
        d = _f16(table, b[i, 108], b[i, 109])
        s = b[i, 96:108]
        for n in range(2):
            for j in range(4):
                for k in range(2):
                    idx = 8 * n + 2 * j + k  # scale idx: low 4 bits, then high 2 bits
                    lo = np.int64(s[idx % 8])
                    lo = lo & 0xF if idx < 8 else lo >> 4
                    hi = (np.int64(s[8 + idx % 4]) >> (2 * (idx // 4))) & 3
                    dl = d * np.float32((lo | (hi << 4)) - 32)
                    base = 128 * n + 32 * j + 16 * k
                    bit = 4 * n + j
                    for t in range(16):
                        q = (np.int64(b[i, 32 + 32 * n + 16 * k + t]) >> (2 * j)) & 3
                        if not (np.int64(b[i, 16 * k + t]) >> bit) & 1:
                            q -= 4
                        y[i, base + t] = dl * np.float32(q)


@njit(parallel=True, **_opts)
def _dequantize_q4_k(b, table, y):
    """b (nb, 144) u8, table (65536,) f32 fp16 values -> y (nb, 256) f32."""
    for i in prange(b.shape[0]):
        d = _f16(table, b[i, 0], b[i, 1])
        dmin = _f16(table, b[i, 2], b[i, 3])
        sc = b[i, 4:16]
        for c in range(4):
            s0, m0 = _scale_min_k4(2 * c, sc)
            s1, m1 = _scale_min_k4(2 * c + 1, sc)
            d0 = d * np.float32(s0)
            d1 = d * np.float32(s1)
            dm0 = dmin * np.float32(m0)
            dm1 = dmin * np.float32(m1)
            for t in range(32):
                q = np.int64(b[i, 16 + 32 * c + t])
                y[i, 64 * c + t] = d0 * np.float32(q & 0xF) - dm0
                y[i, 64 * c + 32 + t] = d1 * np.float32(q >> 4) - dm1


@njit(parallel=True, **_opts)
def _dequantize_q5_k(b, table, y):
    """b (nb, 176) u8, table (65536,) f32 fp16 values -> y (nb, 256) f32."""
    for i in prange(b.shape[0]):
        d = _f16(table, b[i, 0], b[i, 1])
        dmin = _f16(table, b[i, 2], b[i, 3])
        sc = b[i, 4:16]
        for c in range(4):
            s0, m0 = _scale_min_k4(2 * c, sc)
            s1, m1 = _scale_min_k4(2 * c + 1, sc)
            d0 = d * np.float32(s0)
            d1 = d * np.float32(s1)
            dm0 = dmin * np.float32(m0)
            dm1 = dmin * np.float32(m1)
            for t in range(32):
                q = np.int64(b[i, 48 + 32 * c + t])
                h = np.int64(b[i, 16 + t]) >> (2 * c)
                y[i, 64 * c + t] = d0 * np.float32((q & 0xF) | ((h & 1) << 4)) - dm0
                y[i, 64 * c + 32 + t] = d1 * np.float32((q >> 4) | ((h & 2) << 3)) - dm1


@njit(parallel=True, **_opts)
def _dequantize_q6_k(b, table, y):
    """b (nb, 210) u8, table (65536,) f32 fp16 values -> y (nb, 256) f32."""
    for i in prange(b.shape[0]):
        d = _f16(table, b[i, 208], b[i, 209])
        for n in range(2):
            for g in range(4):
                for half in range(2):
                    s = np.int64(b[i, 192 + 8 * n + 2 * g + half])
                    dl = d * np.float32(s - 256 if s > 127 else s)
                    for t in range(16 * half, 16 * half + 16):
                        lo = np.int64(b[i, 64 * n + 32 * (g & 1) + t]) >> (4 * (g >> 1))
                        hi = (np.int64(b[i, 128 + 32 * n + t]) >> (2 * g)) & 3
                        q = ((lo & 0xF) | (hi << 4)) - 32
                        y[i, 128 * n + 32 * g + t] = dl * np.float32(q)


def _run_dequant(kernel, blocks: np.ndarray) -> np.ndarray:
    b = np.ascontiguousarray(blocks, dtype=np.uint8)
    y = np.empty((b.shape[0], 256), dtype=F32)
    kernel(_readonly(b), F16_TABLE, y)
    return y


def dequantize_q2_k(blocks: np.ndarray) -> np.ndarray:
    """(nb, 84) uint8 -> (nb, 256) float32."""
    return _run_dequant(_dequantize_q2_k, blocks)


def dequantize_q3_k(blocks: np.ndarray) -> np.ndarray:
    """(nb, 110) uint8 -> (nb, 256) float32."""
    return _run_dequant(_dequantize_q3_k, blocks)


def dequantize_q4_k(blocks: np.ndarray) -> np.ndarray:
    """(nb, 144) uint8 -> (nb, 256) float32."""
    return _run_dequant(_dequantize_q4_k, blocks)


def dequantize_q5_k(blocks: np.ndarray) -> np.ndarray:
    """(nb, 176) uint8 -> (nb, 256) float32."""
    return _run_dequant(_dequantize_q5_k, blocks)


def dequantize_q6_k(blocks: np.ndarray) -> np.ndarray:
    """(nb, 210) uint8 -> (nb, 256) float32."""
    return _run_dequant(_dequantize_q6_k, blocks)
