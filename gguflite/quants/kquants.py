"""The k-quants: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (256-value super-blocks).

All five decode; Q4_K and Q6_K also encode, bit-exact with ggml:

- without importance: ``quantize_row_q4_K_ref`` / ``quantize_row_q6_K_ref`` (what
  ``ggml_quantize_chunk`` runs when ``quant_weights`` is NULL);
- with importance (one weight per column, as an imatrix gives): ``quantize_row_q4_K_impl`` /
  ``quantize_row_q6_K_impl`` (``make_qkx3_quants`` + ``make_qp_quants`` for Q4_K, weighted
  ``make_qx_quants`` for Q6_K).

Bit-exactness rests on doing every float operation in float32, one at a time and in ggml's
order: sums accumulate sequentially (a NumPy ``sum`` is pairwise and differs), ``a*b*c`` is
``(a*b)*c``, integers are converted to float32 before they meet a float, and ``nearest_int``
is ggml's magic-number rounding (round half to even, garbage beyond 2**22 reproduced as is).
libggml-base is compiled for baseline x86-64, so ggml itself never fuses a multiply-add.

The reference functions here vectorise across blocks (or sub-blocks) and loop in Python over
the values inside a block, so each lane sees exactly ggml's sequence of float32 operations.
The Numba kernels in :mod:`.kquants_numba` run the same sequence as scalar loops.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from ..constants import QK_K, GGMLType
from . import kquants_numba as _nb
from .base import Codec

F32 = np.float32
GROUP_MAX_EPS = F32(1e-15)  # ggml-quants.c: a group with max |x| below this is all zero
_MAGIC = F32(12582912.0)  # 1.5 * 2**23: adding it leaves round(x) in the low mantissa bits


def _no_float_warnings(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
    """Decorator: run a decoder with NumPy's float warnings off (inf * 0 in garbage blocks)."""

    @functools.wraps(fn)
    def run(blocks: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return fn(blocks)

    return run


# -- scalar helpers shared with ggml -------------------------------------------------------------
def nearest_int(f: np.ndarray) -> np.ndarray:
    """ggml ``nearest_int``: round float32 to int32, half to even, via the 1.5*2**23 trick.

    ``(bits(f + 12582912.f) & 0x7fffff) - 0x400000``; exact for |f| <= 4194303, and for larger
    values it returns what ggml returns (its assert is compiled out).
    """
    v = np.asarray(np.asarray(f, dtype=F32) + _MAGIC, dtype=F32)
    return (v.view(np.int32) & 0x007FFFFF) - 0x00400000


def fp32_to_fp16_bits(f: np.ndarray) -> np.ndarray:
    """ggml ``ggml_compute_fp32_to_fp16``: float32 -> fp16 bits, round to nearest even.

    Overflow gives +-inf, NaN gives 0x7E00 with the sign kept (Maratyszcza's FP16 algorithm).
    """
    f = np.asarray(f, dtype=F32)
    with np.errstate(over="ignore"):  # overflow to inf is the point: it flags fp16 overflow
        base = (np.abs(f) * F32(2.0**112)) * F32(2.0**-110)
    w = f.view(np.uint32)
    shl1_w = w + w  # the sign shifted out
    sign = w & np.uint32(0x80000000)
    bias = np.maximum(shl1_w & np.uint32(0xFF000000), np.uint32(0x71000000))
    base = ((bias >> np.uint32(1)) + np.uint32(0x07800000)).view(F32) + base
    bits = np.asarray(base, dtype=F32).view(np.uint32)
    nonsign = ((bits >> np.uint32(13)) & np.uint32(0x7C00)) + (bits & np.uint32(0x0FFF))
    out = (sign >> np.uint32(16)) | np.where(shl1_w > np.uint32(0xFF000000), np.uint32(0x7E00),
                                             nonsign)
    return out.astype(np.uint16)


def fp16_bits_to_fp32(h: np.ndarray) -> np.ndarray:
    """fp16 bits (uint16 or 2 little-endian bytes per value) -> float32 (exact)."""
    return np.ascontiguousarray(h).view("<f2").astype(F32)


def unpack_scale_min_k4(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml ``get_scale_min_k4`` for all 8 sub-blocks: (n, 12) u8 -> scale, min, each (n, 8) u8.

    Eight 6-bit scales (a..h) and eight 6-bit mins (A..H) in 12 bytes::

        byte  0..3   ssaaaaaa .. ssdddddd    low 6 bits: scales a-d, top 2: high bits of e-h
        byte  4..7   mmAAAAAA .. mmDDDDDD    low 6 bits: mins A-D,   top 2: high bits of E-H
        byte  8..11  EEEEeeee .. HHHHhhhh    low nibble: scale e-h,  high nibble: min E-H
    """
    s = scales.reshape(-1, 3, 4)  # (n, 3, 4)
    lo, mid, hi = s[:, 0], s[:, 1], s[:, 2]  # (n, 4) each
    sc = np.concatenate([lo & 63, (hi & 0xF) | ((lo >> 6) << 4)], axis=1)  # (n, 8)
    mn = np.concatenate([mid & 63, (hi >> 4) | ((mid >> 6) << 4)], axis=1)  # (n, 8)
    return sc.astype(np.uint8), mn.astype(np.uint8)


def pack_scale_min_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Inverse of :func:`unpack_scale_min_k4`, byte for byte as ggml writes it.

    ``ls``, ``lm``: (n, 8) integer levels, normally 0..63; ggml stores whole bytes for
    sub-blocks 0-3, so out-of-range values are kept as ggml keeps them. Returns (n, 12) u8.
    """
    ls = ls.astype(np.int64) & 0xFF
    lm = lm.astype(np.int64) & 0xFF
    out = np.zeros((ls.shape[0], 12), dtype=np.int64)  # (n, 12)
    out[:, 0:4] = ls[:, 0:4]
    out[:, 4:8] = lm[:, 0:4]
    out[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    out[:, 0:4] |= (ls[:, 4:8] >> 4) << 6
    out[:, 4:8] |= (lm[:, 4:8] >> 4) << 6
    return (out & 0xFF).astype(np.uint8)


# -- ggml's scale searches, vectorised over rows ---------------------------------------------
def _seq_sum(terms: np.ndarray) -> np.ndarray:
    """Sum (m, n) float32 along axis 1 left to right, as a C loop does. Returns (m,)."""
    acc = np.zeros(terms.shape[0], dtype=F32)
    for i in range(terms.shape[1]):
        acc = acc + terms[:, i]
    return acc


def _weighted_sq_err(
    scale: np.ndarray, levels: np.ndarray, mn: np.ndarray, x: np.ndarray, w: np.ndarray
) -> np.ndarray:
    """sum_i w_i * (scale*L_i + min - x_i)**2, sequentially; shapes (m,), (m, n) -> (m,)."""
    diff = (scale[:, None] * levels.astype(F32) + mn[:, None]) - x  # (m, n)
    return _seq_sum(w * (diff * diff))


def make_qkx_quants(
    x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ggml ``make_qkx2_quants`` / ``make_qkx3_quants`` (with weights, ``use_mad`` false).

    Fits x ~ scale * L - the_min with L in 0..nmax, trying ``nstep + 1`` scales around
    nmax / (max - min) and solving a weighted least-squares (scale, min) for each. The two ggml
    functions differ only in ``max == min`` vs ``max <= min``, the same for finite input.

    Parameters
    ----------
    x, w:
        (m, n) float32 values and weights, one row per group.

    Returns
    -------
    scale (m,) float32, the_min (m,) float32 (>= 0, subtracted), L (m, n) uint8.
    """
    m, n = x.shape
    mn, mx = x[:, 0].copy(), x[:, 0].copy()
    sum_w = w[:, 0].copy()
    sum_x = sum_w * x[:, 0]
    for i in range(1, n):
        xi = x[:, i]
        mn = np.where(xi < mn, xi, mn)
        mx = np.where(xi > mx, xi, mx)
        sum_w = sum_w + w[:, i]
        sum_x = sum_x + w[:, i] * xi
    mn = np.where(mn > 0, F32(0), mn)
    flat = ~(mx > mn)  # max <= min: everything quantizes to 0

    iscale = F32(nmax) / (mx - mn)
    scale = F32(1) / iscale
    levels = np.clip(nearest_int(iscale[:, None] * (x - mn[:, None])), 0, nmax)  # (m, n)
    best = _weighted_sq_err(scale, levels, mn, x, w)
    for step in range(nstep + 1):
        # min moves when a step wins, and the next step measures from the new min
        iscale = (F32(rmin) + F32(rdelta) * F32(step) + F32(nmax)) / (mx - mn)
        aux = np.clip(nearest_int(iscale[:, None] * (x - mn[:, None])), 0, nmax)  # (m, n)
        lf = aux.astype(F32)
        sum_l = np.zeros(m, F32)
        sum_l2 = np.zeros(m, F32)
        sum_xl = np.zeros(m, F32)
        for i in range(n):
            wl = w[:, i] * lf[:, i]
            sum_l = sum_l + wl
            sum_l2 = sum_l2 + wl * lf[:, i]
            sum_xl = sum_xl + wl * x[:, i]
        det = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
        clamp = this_min > 0
        this_scale = np.where(clamp, sum_xl / sum_l2, this_scale)
        this_min = np.where(clamp, F32(0), this_min)
        err = _weighted_sq_err(this_scale, aux, this_min, x, w)
        win = (det > 0) & (err < best) & ~flat
        levels = np.where(win[:, None], aux, levels)
        best = np.where(win, err, best)
        scale = np.where(win, this_scale, scale)
        mn = np.where(win, this_min, mn)
    levels = np.where(flat[:, None], 0, levels)
    scale = np.where(flat, F32(0), scale)
    return scale.astype(F32), (-mn).astype(F32), levels.astype(np.uint8)


def make_qx_quants(
    x: np.ndarray, nmax: int, qw: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """ggml ``make_qx_quants`` with ``rmse_type = 1``: symmetric levels -nmax..nmax-1.

    Weights are ``qw`` or x**2. Tries 18 scales around -nmax / max (max: the value of largest
    magnitude, sign kept) and keeps the best weighted least-squares fit.

    Returns scale (m,) float32 and L (m, n) int64 in 0..2*nmax-1 (level + nmax).
    """
    m, n = x.shape
    amax = np.zeros(m, F32)
    vmax = np.zeros(m, F32)
    for i in range(n):
        ax = np.abs(x[:, i])
        bigger = ax > amax
        amax = np.where(bigger, ax, amax)
        vmax = np.where(bigger, x[:, i], vmax)
    zero = amax < GROUP_MAX_EPS
    w = x * x if qw is None else qw  # (m, n)
    wx = w * x

    def fit(iscale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lev = np.clip(nearest_int(iscale[:, None] * x), -nmax, nmax - 1)  # (m, n)
        lf = lev.astype(F32)
        sumlx = np.zeros(m, F32)
        suml2 = np.zeros(m, F32)
        for i in range(n):
            sumlx = sumlx + wx[:, i] * lf[:, i]
            suml2 = suml2 + (w[:, i] * lf[:, i]) * lf[:, i]
        return lev, sumlx, suml2

    levels, sumlx, suml2 = fit(F32(-nmax) / vmax)
    scale = np.where(suml2 != 0, sumlx / suml2, F32(0))
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        lev, slx, sl2 = fit(-(F32(nmax) + F32(0.1) * F32(step)) / vmax)
        win = (sl2 > 0) & (slx * slx > best * sl2)
        levels = np.where(win[:, None], lev, levels)
        scale = np.where(win, slx / sl2, scale)
        best = np.where(win, scale * slx, best)
    levels = np.where(zero[:, None], 0, levels + nmax)
    scale = np.where(zero, F32(0), scale)
    return scale.astype(F32), levels


def make_qp_quants(x: np.ndarray, nmax: int, qw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml ``make_qp_quants``: non-negative levels 0..nmax for (m, n) values ``x``.

    Picks the best of 9 scales near nmax / max by weighted squared error, then up to 5 passes
    of coordinate descent on the levels. Levels live in a uint8 array in ggml, so negative
    levels (only from negative x) wrap as there.

    Returns scale (m,) float32 and L (m, n) int64 (the stored uint8 values).
    """
    m, n = x.shape
    vmax = np.zeros(m, F32)
    for i in range(n):
        vmax = np.where(vmax > x[:, i], vmax, x[:, i])  # MAX(max, x[i])
    zero = vmax < GROUP_MAX_EPS
    iscale = F32(nmax) / vmax
    stored = nearest_int(iscale[:, None] * x) & 0xFF  # (m, n), L[i] = nearest_int(...)
    scale = F32(1) / iscale
    diff = x - scale[:, None] * stored.astype(F32)
    best = _seq_sum((qw * diff) * diff)
    for step in range(-4, 5):
        if step == 0:
            continue
        iscale_is = (F32(0.1) * F32(step) + F32(nmax)) / vmax
        scale_is = F32(1) / iscale_is
        lev = np.minimum(nmax, nearest_int(iscale_is[:, None] * x))
        diff = x - scale_is[:, None] * lev.astype(F32)
        mse = _seq_sum((qw * diff) * diff)
        win = mse < best
        best = np.where(win, mse, best)
        iscale = np.where(win, iscale_is, iscale)
    lev = np.minimum(nmax, nearest_int(iscale[:, None] * x))  # (m, n), may be < 0
    stored = lev & 0xFF
    lf = lev.astype(F32)
    wx = qw * x
    sumlx = np.zeros(m, F32)
    suml2 = np.zeros(m, F32)
    for i in range(n):
        sumlx = sumlx + wx[:, i] * lf[:, i]
        suml2 = suml2 + (qw[:, i] * lf[:, i]) * lf[:, i]
    active = np.ones(m, dtype=bool)
    for _ in range(5):
        changed = np.zeros(m, dtype=bool)
        for i in range(n):
            wi, xi = qw[:, i], x[:, i]
            li = stored[:, i].astype(F32)
            slx = sumlx - (wi * xi) * li
            sl2 = suml2 - (wi * li) * li
            ok = active & (slx > 0) & (sl2 > 0)
            new_l = np.minimum(nmax, nearest_int((xi * sl2) / slx))
            ok &= new_l != stored[:, i]
            nf = new_l.astype(F32)
            slx = slx + (wi * xi) * nf
            sl2 = sl2 + (wi * nf) * nf
            ok &= (slx * slx) * suml2 > (sumlx * sumlx) * sl2
            stored[:, i] = np.where(ok, new_l & 0xFF, stored[:, i])
            sumlx = np.where(ok, slx, sumlx)
            suml2 = np.where(ok, sl2, suml2)
            changed |= ok
        active &= changed  # a row that changed nothing has left ggml's loop
        if not active.any():
            break
    scale = np.where(suml2 > 0, sumlx / suml2, F32(0))
    scale = np.where(zero, F32(0), scale)
    stored = np.where(zero[:, None], 0, stored)
    return scale.astype(F32), stored


# -- Q4_K ----------------------------------------------------------------------------------------
def quantize_q4_k(blocks: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
    """(nb, 256) float32 [+ (nb, 256) importance] -> (nb, 144) uint8 Q4_K blocks.

    Block layout (144 bytes)::

        d     fp16        super-block scale of the 6-bit sub-block scales
        dmin  fp16        super-block scale of the 6-bit sub-block mins
        scales[12]        8 x (6-bit scale, 6-bit min), see unpack_scale_min_k4
        qs[128]           4-bit levels: byte 32*c + l holds value 64*c + l (low nibble)
                          and value 64*c + 32 + l (high nibble)

    value = d * scale_j * q - dmin * min_j for sub-block j = value index // 32.
    """
    nb = blocks.shape[0]
    x = np.ascontiguousarray(blocks, dtype=F32)
    xs = x.reshape(nb * 8, 32)  # (nb*8, 32) sub-blocks
    with np.errstate(all="ignore"):
        if importance is None:
            sum_x2 = _seq_sum(xs * xs)  # (nb*8,)
            av_x = np.sqrt(sum_x2 / F32(32))
            w = av_x[:, None] + np.abs(xs)  # (nb*8, 32)
            sub_scale, sub_min, levels = make_qkx_quants(xs, w, 15, -1.0, 0.1, 20)
            sub_scale = sub_scale.reshape(nb, 8)
            sub_min = sub_min.reshape(nb, 8)
            max_scale = np.zeros(nb, F32)
            max_min = np.zeros(nb, F32)
            for j in range(8):
                max_scale = np.where(sub_scale[:, j] > max_scale, sub_scale[:, j], max_scale)
                max_min = np.where(sub_min[:, j] > max_min, sub_min[:, j], max_min)
            inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0))
            inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0))
            ls = np.minimum(63, nearest_int(inv_scale[:, None] * sub_scale) & 0xFF)  # (nb, 8)
            lm = np.minimum(63, nearest_int(inv_min[:, None] * sub_min) & 0xFF)
            d16 = fp32_to_fp16_bits(max_scale / F32(63))
            dmin16 = fp32_to_fp16_bits(max_min / F32(63))
        else:
            qw = np.asarray(importance, dtype=F32).reshape(nb * 8, 32)
            sigma2 = (F32(2) * _seq_sum(x * x)) / F32(QK_K)  # (nb,)
            sig_sub = np.repeat(sigma2, 8)  # (nb*8,)
            w = qw * np.sqrt(sig_sub[:, None] + xs * xs)  # (nb*8, 32)
            sw = _seq_sum(w).reshape(nb, 8)
            sub_scale, sub_min, levels = make_qkx_quants(xs, w, 15, -0.9, 0.05, 36)
            d_block, ls = make_qp_quants(sub_scale.reshape(nb, 8), 63, sw)
            m_block, lm = make_qp_quants(sub_min.reshape(nb, 8), 63, sw)
            d16 = fp32_to_fp16_bits(d_block)
            dmin16 = fp32_to_fp16_bits(m_block)
        packed_scales = pack_scale_min_k4(ls, lm)  # (nb, 12)
        sc, mn = unpack_scale_min_k4(packed_scales)  # what a decoder will see, (nb, 8) each
        d = fp16_bits_to_fp32(d16)[:, None] * sc.astype(F32)  # (nb, 8)
        dm = fp16_bits_to_fp32(dmin16)[:, None] * mn.astype(F32)
        q = np.clip(nearest_int((xs + dm.reshape(-1, 1)) / d.reshape(-1, 1)), 0, 15)
        levels = np.where((d != 0).reshape(-1, 1), q, levels).reshape(nb, 4, 2, 32)
    qs = (levels[:, :, 0] | (levels[:, :, 1] << 4)).astype(np.uint8).reshape(nb, 128)
    out = np.empty((nb, 144), dtype=np.uint8)
    out[:, 0:2] = d16.view(np.uint8).reshape(nb, 2)
    out[:, 2:4] = dmin16.view(np.uint8).reshape(nb, 2)
    out[:, 4:16] = packed_scales
    out[:, 16:] = qs
    return out


@_no_float_warnings
def dequantize_q4_k(blocks: np.ndarray) -> np.ndarray:
    """(nb, 144) uint8 -> (nb, 256) float32; ggml ``dequantize_row_q4_K``."""
    nb = blocks.shape[0]
    d = fp16_bits_to_fp32(blocks[:, 0:2]).reshape(nb, 1)
    dmin = fp16_bits_to_fp32(blocks[:, 2:4]).reshape(nb, 1)
    sc, mn = unpack_scale_min_k4(blocks[:, 4:16])
    d1 = (d * sc.astype(F32)).reshape(nb, 4, 2, 1)  # (nb, 4 chunks, 2 nibbles, 1)
    m1 = (dmin * mn.astype(F32)).reshape(nb, 4, 2, 1)
    qs = blocks[:, 16:].reshape(nb, 4, 1, 32)
    q = (qs >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)) & 0xF  # (nb, 4, 2, 32)
    return (d1 * q.astype(F32) - m1).reshape(nb, QK_K)


# -- Q5_K ----------------------------------------------------------------------------------------
@_no_float_warnings
def dequantize_q5_k(blocks: np.ndarray) -> np.ndarray:
    """(nb, 176) uint8 -> (nb, 256) float32; ggml ``dequantize_row_q5_K``.

    Layout: d fp16, dmin fp16, scales[12] (as Q4_K), qh[32], qs[128]. Value 64*c + 32*h + l has
    low 4 bits in nibble h of qs[32*c + l] and its fifth bit in bit 2*c + h of qh[l].
    """
    nb = blocks.shape[0]
    d = fp16_bits_to_fp32(blocks[:, 0:2]).reshape(nb, 1)
    dmin = fp16_bits_to_fp32(blocks[:, 2:4]).reshape(nb, 1)
    sc, mn = unpack_scale_min_k4(blocks[:, 4:16])
    d1 = (d * sc.astype(F32)).reshape(nb, 4, 2, 1)
    m1 = (dmin * mn.astype(F32)).reshape(nb, 4, 2, 1)
    qh = blocks[:, 16:48].reshape(nb, 1, 1, 32)
    qs = blocks[:, 48:].reshape(nb, 4, 1, 32)
    low = (qs >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)) & 0xF  # (nb, 4, 2, 32)
    bit = np.arange(8, dtype=np.uint8).reshape(1, 4, 2, 1)  # bit 2*c + h
    high = (qh >> bit) & 1  # (nb, 4, 2, 32)
    q = (low | (high << 4)).astype(F32)
    return (d1 * q - m1).reshape(nb, QK_K)


# -- Q6_K ----------------------------------------------------------------------------------------
def quantize_q6_k(blocks: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
    """(nb, 256) float32 [+ (nb, 256) importance] -> (nb, 210) uint8 Q6_K blocks.

    Block layout (210 bytes)::

        ql[128]     low 4 bits: for half n (128 values), byte 64*n + l holds value
                    128*n + l (low nibble) and 128*n + 64 + l (high nibble); byte
                    64*n + 32 + l holds 128*n + 32 + l and 128*n + 96 + l
        qh[64]      high 2 bits: byte 32*n + l, bits 2g..2g+1 hold value 128*n + 32*g + l
        scales[16]  int8 scale of each 16-value sub-block
        d           fp16 super-block scale

    value = d * scale_j * (q - 32) for sub-block j = value index // 16.
    """
    nb = blocks.shape[0]
    xs = np.ascontiguousarray(blocks, dtype=F32).reshape(nb * 16, 16)  # (nb*16, 16)
    qw = None if importance is None else np.asarray(importance, F32).reshape(nb * 16, 16)
    with np.errstate(all="ignore"):
        sub_scale, levels = make_qx_quants(xs, 32, qw)
        sub_scale = sub_scale.reshape(nb, 16)
        max_scale = np.zeros(nb, F32)
        max_abs = np.zeros(nb, F32)
        for j in range(16):
            a = np.abs(sub_scale[:, j])
            bigger = a > max_abs
            max_abs = np.where(bigger, a, max_abs)
            max_scale = np.where(bigger, sub_scale[:, j], max_scale)
        zero = max_abs < GROUP_MAX_EPS  # the whole block is stored as zero bytes
        iscale = F32(-128) / max_scale
        d16 = fp32_to_fp16_bits(F32(1) / iscale)
        sc = np.minimum(127, nearest_int(iscale[:, None] * sub_scale))  # (nb, 16)
        sc8 = ((sc & 0xFF).astype(np.uint8)).view(np.int8)  # stored as int8_t
        d = fp16_bits_to_fp32(d16)[:, None] * sc8.astype(F32)  # (nb, 16)
        q = np.clip(nearest_int(xs / d.reshape(-1, 1)), -32, 31) + 32
        levels = np.where((d != 0).reshape(-1, 1), q, levels).reshape(nb, 2, 4, 32)
    g = [levels[:, :, k] for k in range(4)]  # value 128*n + 32*k + l, each (nb, 2, 32)
    ql = np.concatenate([(g[0] & 0xF) | ((g[2] & 0xF) << 4),
                         (g[1] & 0xF) | ((g[3] & 0xF) << 4)], axis=2)  # (nb, 2, 64)
    qh = (g[0] >> 4) | ((g[1] >> 4) << 2) | ((g[2] >> 4) << 4) | ((g[3] >> 4) << 6)  # (nb,2,32)
    out = np.empty((nb, 210), dtype=np.uint8)
    out[:, 0:128] = ql.reshape(nb, 128).astype(np.uint8)
    out[:, 128:192] = qh.reshape(nb, 64).astype(np.uint8)
    out[:, 192:208] = sc8.view(np.uint8)
    out[:, 208:210] = d16.view(np.uint8).reshape(nb, 2)
    out[zero] = 0
    return out


@_no_float_warnings
def dequantize_q6_k(blocks: np.ndarray) -> np.ndarray:
    """(nb, 210) uint8 -> (nb, 256) float32; ggml ``dequantize_row_q6_K``."""
    nb = blocks.shape[0]
    ql = blocks[:, 0:128].reshape(nb, 2, 1, 2, 32)  # (nb, half, nibble, ql half, 32)
    qh = blocks[:, 128:192].reshape(nb, 2, 1, 32)
    scales = np.ascontiguousarray(blocks[:, 192:208]).view(np.int8).astype(F32)  # (nb, 16)
    d = fp16_bits_to_fp32(blocks[:, 208:210]).reshape(nb, 1)
    low = (ql >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1, 1)) & 0xF  # (nb, 2, 2, 2, 32)
    low = low.reshape(nb, 2, 4, 32)  # group g = 2*nibble + ql half -> value 128*n + 32*g + l
    high = (qh >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)) & 3  # (nb, 2, 4, 32)
    q = ((low | (high << 4)).astype(np.int16) - 32).astype(F32).reshape(nb, 16, 16)
    return ((d * scales).reshape(nb, 16, 1) * q).reshape(nb, QK_K)


# -- Q2_K, Q3_K (decode only) --------------------------------------------------------------------
@_no_float_warnings
def dequantize_q2_k(blocks: np.ndarray) -> np.ndarray:
    """(nb, 84) uint8 -> (nb, 256) float32; ggml ``dequantize_row_q2_K``.

    Layout: scales[16] (low nibble scale, high nibble min), qs[64], d fp16, dmin fp16.
    Value 128*n + 32*j + 16*k + l is bits 2j..2j+1 of qs[32*n + 16*k + l], sub-block 8n+2j+k.
    """
    nb = blocks.shape[0]
    scales = blocks[:, 0:16]
    d = fp16_bits_to_fp32(blocks[:, 80:82]).reshape(nb, 1)
    dmin = fp16_bits_to_fp32(blocks[:, 82:84]).reshape(nb, 1)
    dl = (d * (scales & 0xF).astype(F32)).reshape(nb, 2, 4, 2, 1)  # (nb, n, j, k, 1)
    ml = (dmin * (scales >> 4).astype(F32)).reshape(nb, 2, 4, 2, 1)
    qs = blocks[:, 16:80].reshape(nb, 2, 1, 2, 16)
    q = (qs >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1, 1)) & 3  # (nb, 2, 4, 2, 16)
    return (dl * q.astype(F32) - ml).reshape(nb, QK_K)


def unpack_q3_k_scales(scales: np.ndarray) -> np.ndarray:
    """Q3_K's sixteen 6-bit scales from 12 bytes: (n, 12) u8 -> (n, 16) int (already - 32).

    ::

        byte 0..7    low nibble: scales 0-7 low 4 bits; high nibble: scales 8-15 low 4 bits
        byte 8..11   bits 2k..2k+1 of byte 8+i: high 2 bits of scale 4k + i
    """
    s = scales.astype(np.int16)
    low = np.concatenate([s[:, 0:8] & 0xF, s[:, 0:8] >> 4], axis=1)  # (n, 16)
    hi = (s[:, 8:12].reshape(-1, 1, 4) >> np.array([0, 2, 4, 6]).reshape(1, 4, 1)) & 3
    return (low | (hi.reshape(-1, 16) << 4)) - 32


@_no_float_warnings
def dequantize_q3_k(blocks: np.ndarray) -> np.ndarray:
    """(nb, 110) uint8 -> (nb, 256) float32; ggml ``dequantize_row_q3_K``.

    Layout: hmask[32], qs[64], scales[12], d fp16. Value 128*n + 32*j + 16*k + l: low 2 bits
    are bits 2j.. of qs[32*n + 16*k + l]; 4 is subtracted unless bit 4n + j of
    hmask[16*k + l] is set; sub-block 8n + 2j + k.
    """
    nb = blocks.shape[0]
    d = fp16_bits_to_fp32(blocks[:, 108:110]).reshape(nb, 1)
    dl = (d * unpack_q3_k_scales(blocks[:, 96:108]).astype(F32)).reshape(nb, 2, 4, 2, 1)
    qs = blocks[:, 32:96].reshape(nb, 2, 1, 2, 16)
    low = (qs >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1, 1)) & 3  # (nb,2,4,2,16)
    hm = blocks[:, 0:32].reshape(nb, 1, 1, 2, 16)
    bit = np.arange(8, dtype=np.uint8).reshape(1, 2, 4, 1, 1)  # 4n + j
    minus = ((hm >> bit) & 1) ^ 1  # (nb, 2, 4, 2, 16)
    q = low.astype(np.int16) - (minus.astype(np.int16) << 2)
    return (dl * q.astype(F32)).reshape(nb, QK_K)


# -- codecs --------------------------------------------------------------------------------------
class Q2K(Codec):
    name = "q2_k"
    ggml_type = GGMLType.Q2_K
    can_quantize = False

    @classmethod
    def dequantize_blocks(cls, blocks):
        return dequantize_q2_k(blocks)

    @classmethod
    def dequantize_blocks_fast(cls, blocks):
        return _nb.dequantize_q2_k(blocks)


class Q3K(Codec):
    name = "q3_k"
    ggml_type = GGMLType.Q3_K
    can_quantize = False

    @classmethod
    def dequantize_blocks(cls, blocks):
        return dequantize_q3_k(blocks)

    @classmethod
    def dequantize_blocks_fast(cls, blocks):
        return _nb.dequantize_q3_k(blocks)


class Q4K(Codec):
    name = "q4_k"
    ggml_type = GGMLType.Q4_K
    uses_importance = True

    @classmethod
    def quantize_blocks(cls, blocks, importance):
        return quantize_q4_k(blocks, importance)

    @classmethod
    def quantize_blocks_fast(cls, blocks, importance):
        return _nb.quantize_q4_k(blocks, importance)

    @classmethod
    def dequantize_blocks(cls, blocks):
        return dequantize_q4_k(blocks)

    @classmethod
    def dequantize_blocks_fast(cls, blocks):
        return _nb.dequantize_q4_k(blocks)


class Q5K(Codec):
    name = "q5_k"
    ggml_type = GGMLType.Q5_K
    can_quantize = False

    @classmethod
    def dequantize_blocks(cls, blocks):
        return dequantize_q5_k(blocks)

    @classmethod
    def dequantize_blocks_fast(cls, blocks):
        return _nb.dequantize_q5_k(blocks)


class Q6K(Codec):
    name = "q6_k"
    ggml_type = GGMLType.Q6_K
    uses_importance = True

    @classmethod
    def quantize_blocks(cls, blocks, importance):
        return quantize_q6_k(blocks, importance)

    @classmethod
    def quantize_blocks_fast(cls, blocks, importance):
        return _nb.quantize_q6_k(blocks, importance)

    @classmethod
    def dequantize_blocks(cls, blocks):
        return dequantize_q6_k(blocks)

    @classmethod
    def dequantize_blocks_fast(cls, blocks):
        return _nb.dequantize_q6_k(blocks)
