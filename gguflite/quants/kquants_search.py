"""ggml's k-quant helper functions in NumPy: rounding, fp16 conversion and the scale searches.

These reproduce ``nearest_int``, ``GGML_FP32_TO_FP16``, ``make_qkx2_quants`` /
``make_qkx3_quants``, ``make_qx_quants`` and ``make_qp_quants`` from ggml-quants.c bit for bit.
Each vectorises across groups (rows of the input) and loops in Python over the values of a
group, so every lane performs ggml's float32 operations one at a time and in ggml's order:
sums accumulate sequentially (NumPy's pairwise ``sum`` would differ), ``a*b*c`` is
``(a*b)*c``, and integer levels become float32 before they meet a float.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
GROUP_MAX_EPS = F32(1e-15)  # ggml-quants.c: a group with max |x| below this is all zero
_MAGIC = F32(12582912.0)  # 1.5 * 2**23: adding it leaves round(x) in the low mantissa bits


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


# -- ggml's scale searches, vectorised over rows ---------------------------------------------
def seq_sum(terms: np.ndarray) -> np.ndarray:
    """Sum (m, n) float32 along axis 1 left to right, as a C loop does. Returns (m,)."""
    acc = np.zeros(terms.shape[0], dtype=F32)
    for i in range(terms.shape[1]):
        acc = acc + terms[:, i]
    return acc


def _weighted_sq_err(
    scale: np.ndarray, levels: np.ndarray, mn: np.ndarray, x: np.ndarray, w: np.ndarray,
    use_mad: bool = False,
) -> np.ndarray:
    """sum_i w_i * (scale*L_i + min - x_i)**2 (``use_mad``: ``|...|``), sequentially.

    Shapes (m,), (m, n) -> (m,).
    """
    diff = (scale[:, None] * levels.astype(F32) + mn[:, None]) - x  # (m, n)
    return seq_sum(w * (np.abs(diff) if use_mad else diff * diff))


def make_qkx_quants(
    x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int,
    use_mad: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ggml ``make_qkx2_quants`` / ``make_qkx3_quants`` (with weights).

    ``use_mad``: the error is the weighted sum of absolute (not squared) differences, as
    Q2_K's reference encoder asks.

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
    best = _weighted_sq_err(scale, levels, mn, x, w, use_mad)
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
        err = _weighted_sq_err(this_scale, aux, this_min, x, w, use_mad)
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


def make_q3_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """ggml ``make_q3_quants`` with ``do_rmse``: symmetric levels -nmax..nmax-1, weights x**2.

    Starts from the scale -nmax / max (max: the value of largest magnitude, sign kept), then
    up to 5 passes of coordinate descent on the levels (each pass visits every value once and
    moves it to its least-squares level when that improves the fit).

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
    iscale = F32(-nmax) / vmax
    lev = np.clip(nearest_int(iscale[:, None] * x), -nmax, nmax - 1)  # (m, n)
    w = x * x
    wx = w * x
    sumlx = np.zeros(m, F32)
    suml2 = np.zeros(m, F32)
    for i in range(n):
        lf = lev[:, i].astype(F32)
        sumlx = sumlx + wx[:, i] * lf
        suml2 = suml2 + (w[:, i] * lf) * lf
    active = ~zero
    for _ in range(5):
        changed = np.zeros(m, dtype=bool)
        for i in range(n):
            li = lev[:, i].astype(F32)
            slx = sumlx - wx[:, i] * li
            sl2 = suml2 - (w[:, i] * li) * li
            new_l = np.clip(nearest_int((x[:, i] * sl2) / slx), -nmax, nmax - 1)
            nf = new_l.astype(F32)
            slx = slx + wx[:, i] * nf
            sl2 = sl2 + (w[:, i] * nf) * nf
            ok = active & (sumlx - wx[:, i] * li > 0) & (new_l != lev[:, i]) & (sl2 > 0)
            ok &= (slx * slx) * suml2 > (sumlx * sumlx) * sl2
            lev[:, i] = np.where(ok, new_l, lev[:, i])
            sumlx = np.where(ok, slx, sumlx)
            suml2 = np.where(ok, sl2, suml2)
            changed |= ok
        active &= changed  # a row that changed nothing has left ggml's loop
        if not active.any():
            break
    scale = np.where(suml2 > 0, sumlx / suml2, F32(0))
    scale = np.where(zero, F32(0), scale)
    lev = np.where(zero[:, None], 0, lev + nmax)
    return scale.astype(F32), lev


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
    best = seq_sum((qw * diff) * diff)
    for step in range(-4, 5):
        if step == 0:
            continue
        iscale_is = (F32(0.1) * F32(step) + F32(nmax)) / vmax
        scale_is = F32(1) / iscale_is
        lev = np.minimum(nmax, nearest_int(iscale_is[:, None] * x))
        diff = x - scale_is[:, None] * lev.astype(F32)
        mse = seq_sum((qw * diff) * diff)
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
