"""The plain NumPy reference of the KM v2 quantizer (:func:`.km_numba.quantize_rows`).

Same algorithm, same float32 / float64 operations in the same order, so the bytes are equal
(tests/test_quants_km.py and tests/test_quants_properties.py prove it). Sums that the kernel
accumulates in a loop are ``np.cumsum(...)[-1]`` here (cumsum adds left to right, where
``np.sum`` would add pairwise). Slow (Python loops over blocks): for tests on small inputs.
"""

from __future__ import annotations

import numpy as np

from .kquants_search import fp16_bits_to_fp32, fp32_to_fp16_bits, make_qkx_quants, nearest_int

F32 = np.float32
QK = 32
CHUNK = 64


def _seq(a: np.ndarray) -> float:
    """Left-to-right float64 sum (the kernel's loop order)."""
    return float(np.cumsum(a, dtype=np.float64)[-1]) if a.size else 0.0


def _f16(v: np.float32) -> np.float32:
    return F32(fp16_bits_to_fp32(fp32_to_fp16_bits(np.array([v], F32)))[0])


def _tables(cb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K,) float32 codebook and (256,) lut: nearest entry for u in [t/2, t/2 + 1/2)."""
    t = np.arange(256)[:, None]  # (256, 1)
    ups = (cb[:-1] + cb[1:])[None, :] <= t  # (256, K-1) the midpoint j|j+1 is at or below t/2
    return cb.astype(F32), ups.sum(axis=1)  # cb sorted: the True entries are a prefix


def _eval(x: np.ndarray, e: np.ndarray, a: np.float32, b: np.float32, cbf: np.ndarray,
          lut: np.ndarray) -> tuple[float, np.ndarray]:
    """(error, codes) of one block's values x (n,) under scale a, min b."""
    ia = F32(1) / a if a > 0 else F32(0)
    u = (x + b) * ia  # (n,) float32
    t = np.floor(F32(2) * np.minimum(np.maximum(u, F32(0)), F32(127.75))).astype(np.int64)
    q = lut[t]
    diff = ((a * cbf[q]) - b - x).astype(np.float64)  # (n,)
    return _seq((e * diff) * diff), q


def _fit_block(x, e, d, dmin, cbf, lut, s0, m0):
    """Twin of km_numba._fit_block: returns (s, m, error, codes)."""
    bs, bm = s0, m0
    best, q = _eval(x, e, d * F32(bs), dmin * F32(bm), cbf, lut)
    n = x.shape[0]
    if n == 0:
        return bs, bm, best, q
    for _ in range(4):
        c = cbf[q].astype(np.float64)
        x64 = x.astype(np.float64)
        sw, sc, scc = _seq(e), _seq(e * c), _seq((e * c) * c)
        sx, scx = _seq(e * x64), _seq((e * c) * x64)
        det = scc * sw - sc * sc
        if det > 0.0:
            aa = (scx * sw - sx * sc) / det
            bb = (aa * sc - sx) / sw
            if bb < 0.0:
                aa = scx / scc
        elif scc > 0.0:
            aa = scx / scc
        else:
            aa = 0.0
        improved = False
        sf = aa / float(d) if d > 0 else 0.0
        for ds in range(-2, 3):
            s = min(63, max(0, int(np.floor(sf)) + ds))
            if ds in (-2, 2):
                s = min(63, max(0, bs + ds // 2))
            a = d * F32(s)
            bopt = (float(a) * sc - sx) / sw if sw > 0.0 else 0.0
            mf = bopt / float(dmin) if dmin > 0 else 0.0
            m_lo = min(63, max(0, int(np.floor(mf))))
            for m in (m_lo, min(63, m_lo + 1)):
                if s == bs and m == bm:
                    continue
                err, qt = _eval(x, e, a, dmin * F32(m), cbf, lut)
                if err < best:
                    best, bs, bm, q, improved = err, s, m, qt, True
        if not improved:
            break
    return bs, bm, best, q


def _fit_all(x, e, cols, d, dmin, cb, sc, mn, q):
    cbf, lut = _tables(cb)
    total = 0.0
    for b in range(sc.shape[0]):
        i0, n = b * QK, max(0, min(QK, cols - b * QK))
        sc[b], mn[b], err, q[i0:i0 + n] = _fit_block(x[i0:i0 + n], e[i0:i0 + n], d, dmin, cbf,
                                                     lut, sc[b], mn[b])
        total += err
    return total


def _super_scale(v: np.ndarray, w: np.ndarray) -> np.float32:
    """Twin of km_numba._super_scale (candidates from the three largest block values)."""
    top = np.sort(v)[::-1][:3] if v.size else np.zeros(0, F32)
    if not (top.size and top[0] > 0):
        return F32(0)
    top = np.concatenate([top, np.zeros(3 - top.size, F32)])
    best, dbest = np.inf, F32(0)
    for c in range(27):
        t, vt = c % 9 - 4, top[c // 9]
        if not vt > 0:
            continue
        h = int(fp32_to_fp16_bits(np.array([vt / (F32(63.0) + F32(0.1) * F32(t))], F32))[0])
        for up in range(2):
            dc = F32(fp16_bits_to_fp32(np.array([h + up], np.uint16))[0])
            if not dc > 0:
                dc = F32(2.0**-24)
            lv = np.clip(nearest_int(v / dc), 0, 63).astype(np.float64)
            diff = v.astype(np.float64) - float(dc) * lv
            err = _seq((w * diff) * diff)
            if err < best:
                best, dbest = err, dc
    return dbest


def _init_row(x, fw, e, cols, k, step, search):
    nb = x.shape[0] // QK
    cb = np.arange(k, dtype=np.int64) * step
    bs, bm, bw = np.zeros(nb, F32), np.zeros(nb, F32), np.zeros(nb)
    for b in range(nb):
        i0, n = b * QK, max(0, min(QK, cols - b * QK))
        if n == 0:
            continue
        with np.errstate(all="ignore"):  # flat blocks divide by zero, masked as in ggml
            scale, the_min, _ = make_qkx_quants(x[None, i0:i0 + n], fw[None, i0:i0 + n], k - 1,
                                                *search)
        bs[b], bm[b] = scale[0] / F32(step), the_min[0]
        bw[b] = float(np.cumsum(np.concatenate(([0.0], fw[i0:i0 + n].astype(np.float64))))[-1])
    d, dmin = _super_scale(bs, bw), _super_scale(bm, bw)
    sc = np.clip(nearest_int(bs / d), 0, 63).astype(np.int64) if d > 0 else np.zeros(nb, int)
    mn = np.clip(nearest_int(bm / dmin), 0, 63).astype(np.int64) if dmin > 0 else np.zeros(
        nb, int)
    q = np.zeros(x.shape[0], np.int64)
    err = _fit_all(x, e, cols, d, dmin, cb, sc, mn, q)
    return d, dmin, err, cb, sc, mn, q


def _codebook_step(x, e, cols, d, dmin, k, sc, mn, q, cb):
    sw, su = np.zeros(k), np.zeros(k)
    for b in range(sc.shape[0]):
        a = d * F32(sc[b])
        if not a > 0:
            continue
        bb, a2 = dmin * F32(mn[b]), float(a) * float(a)
        for i in range(b * QK, min(cols, b * QK + QK)):
            w = e[i] * a2
            sw[q[i]] += w
            su[q[i]] += w * ((float(x[i]) + float(bb)) / float(a))
    cb = cb.copy()
    full = sw > 0
    cb[full] = np.clip(np.floor(su[full] / sw[full] + 0.5), 0, 127).astype(np.int64)
    return np.sort(cb)


def _refine_super(x, e, cols, d, dmin, cb, sc, mn, q, best):
    """Twin of km_numba._refine_super: returns (d, dmin, best, sc, mn, q)."""
    cbf, lut = _tables(cb)
    moved = False
    for which in range(2):
        cur = d if which == 0 else dmin
        if not cur > 0:
            continue
        for delta in (-2, -1, 1, 2):
            h = int(fp32_to_fp16_bits(np.array([cur], F32))[0]) + delta
            if h <= 0 or h >= 0x7C00:
                continue
            v = F32(fp16_bits_to_fp32(np.array([h], np.uint16))[0])
            d2, dm2 = (v, dmin) if which == 0 else (d, v)
            total, sc2, mn2, q2 = 0.0, sc.copy(), mn.copy(), q.copy()
            for b in range(sc.shape[0]):
                i0, n = b * QK, max(0, min(QK, cols - b * QK))
                ref = d * F32(sc[b]) if which == 0 else dmin * F32(mn[b])
                f = int(np.floor(ref / v))
                bbest = np.inf
                for c in (f, f + 1):
                    c = min(63, max(0, c))
                    s_, m_ = (c, mn[b]) if which == 0 else (sc[b], c)
                    err, qt = _eval(x[i0:i0 + n], e[i0:i0 + n], d2 * F32(s_), dm2 * F32(m_),
                                    cbf, lut)
                    if err < bbest:
                        bbest, sc2[b], mn2[b], q2[i0:i0 + n] = err, s_, m_, qt
                total += bbest
            if total < best:
                best, d, dmin, sc, mn, q, moved = total, d2, dm2, sc2, mn2, q2, True
    if moved:
        sc2, mn2, q2 = sc.copy(), mn.copy(), q.copy()
        err = _fit_all(x, e, cols, d, dmin, cb, sc2, mn2, q2)
        if err < best:
            best, sc, mn, q = err, sc2, mn2, q2
    return d, dmin, best, sc, mn, q


def quantize_row_fields(w: np.ndarray, imp: np.ndarray | None, bits: int, max_iter: int):
    """One row (cols,) -> (d, dmin, cb, s, m, q, start error, final error)."""
    from .km_numba import TOL

    cols = w.shape[0]
    k = 1 << bits
    step = 127 // (k - 1)
    cols_p = -(-cols // CHUNK) * CHUNK
    x = np.zeros(cols_p, F32)
    x[:cols] = w
    e = np.zeros(cols_p)
    e[:cols] = 1.0 if imp is None else imp.astype(np.float64)
    sum_x2 = _seq(x[:cols].astype(np.float64) * x[:cols])
    if imp is not None:
        sigma2 = F32(2.0 * sum_x2 / cols)
        search = (-0.9, 0.05, 36)
        fw = (imp * np.sqrt(sigma2 + x[:cols] * x[:cols])).astype(F32)
    else:
        search = (-1.0, 0.1, 20)
        fw = (F32(np.sqrt(sum_x2 / cols)) + np.abs(x[:cols])).astype(F32)
    fw = np.concatenate([fw, np.zeros(cols_p - cols, F32)])
    best_state = _init_row(x, fw, e, cols, k, step, search)
    other = _init_row(x, e.astype(F32), e, cols, k, step, search)
    if other[2] < best_state[2]:
        best_state = other
    d, dmin, best, cb, sc, mn, q = best_state
    start = best
    d, dmin, best, sc, mn, q = _refine_super(x, e, cols, d, dmin, cb, sc, mn, q, best)
    for _ in range(max_iter):
        first = best
        cb2 = _codebook_step(x, e, cols, d, dmin, k, sc, mn, q, cb)
        sc2, mn2, q2 = sc.copy(), mn.copy(), q.copy()
        err = _fit_all(x, e, cols, d, dmin, cb2, sc2, mn2, q2)
        if err < best:
            best, cb, sc, mn, q = err, cb2, sc2, mn2, q2
        d, dmin, best, sc, mn, q = _refine_super(x, e, cols, d, dmin, cb, sc, mn, q, best)
        if not first - best > TOL * best:
            break
    q[cols:] = 0
    return d, dmin, cb, sc, mn, q, start, best


def quantize_rows_reference(w: np.ndarray, imp: np.ndarray | None, bits: int,
                            max_iter: int) -> np.ndarray:
    """(rows, cols) float32 -> (rows, row_bytes) uint8, equal to the Numba quantizer."""
    from .km import encode_rows, row_bytes

    rows, cols = w.shape
    if rows == 0 or cols == 0:
        return np.zeros((rows, row_bytes(cols, bits)), np.uint8)
    fields = [quantize_row_fields(w[r], imp, bits, max_iter) for r in range(rows)]
    d, dmin, cb, s, m, q = (np.array([f[i] for f in fields]) for i in range(6))
    return encode_rows(d.astype(F32), dmin.astype(F32), cb, s, m, q, bits)
