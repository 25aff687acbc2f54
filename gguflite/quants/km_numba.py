"""Numba kernels of KM v2 (see :mod:`.km` for the API and spec/extensions-km.md for the layout).

One KM v2 row (``bits`` b, ``K = 2**b`` codebook entries, ``cols_p`` = cols rounded up to 64)::

    offset 0    d      fp16      super-scale of the block scales
    offset 2    dmin   fp16      super-scale of the block mins
    offset 4    cb[K]  uint8     codebook, 0 <= cb[k] <= 127, non-decreasing
    offset 4+K  chunk j = 0 .. cols_p/64 - 1, each 3 + 8*b bytes:
        3 bytes   v = byte0 | byte1 << 8 | byte2 << 16
                  bits  23..18 | 17..12 | 11..6 | 5..0
                        m1     | s1     | m0    | s0      (block A = cols 64j..+31: s0, m0;
                                                          block B = cols 64j+32..+63: s1, m1)
        8*b bytes of codes q_t, t = 0..63 (local column):
          b=4: byte i (0..31) = q_{32+i} << 4 | q_i
          b=2: byte i (0..15) = q_{48+i} << 6 | q_{32+i} << 4 | q_{16+i} << 2 | q_i
          b=3: 16 bytes as b=2 holding the low two bits, then 8 bytes: bit u of byte i
               (i = 0..7, u = 0..7) is bit 2 of q_{8u+i}

    W[c] = (d * s) * cb[q_c] - dmin * m        float32, in this order of operations

The quantizer (:func:`quantize_rows`, parallel over rows, each row independent so the result
does not depend on the thread count) starts where Q4_K starts (ggml's ``make_qkx2/3_quants``
per 32-block on the uniform codebook ``cb[k] = k * (127 // (K-1))``, from two sets of fit
weights: ggml's and the error weights; the better start wins), moves d and dmin to fp16
neighbours that lower the error, then alternates (a weighted Lloyd step on the codebook in the
block-normalised domain + a per-block local search of the 6-bit (s, m); the super-scale move)
while a round lowers the row's weighted squared error by more than TOL. Every step keeps a
change only when the error drops, so the result is never worse than the start.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .kquants_numba import F16_TABLE, _make_qkx, fp32_to_fp16, nearest_int

_opts = dict(cache=True, error_model="numpy")
F32 = np.float32
_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)
_F16_TINY = np.float32(2.0**-24)  # smallest positive fp16 (subnormal)

QK = 32  # weights per block (one 6-bit scale and min)
CHUNK = 64  # columns per chunk (two blocks sharing 3 bytes of scales)
TOL = 1e-3  # stop when a round lowers the row's squared error by less than this fraction


@njit(**_opts)
def row_bytes_nb(cols, bits):
    """Bytes of one row: 4 + K + n_chunks * (3 + 8 * bits)."""
    return 4 + (1 << bits) + (cols + CHUNK - 1) // CHUNK * (3 + 8 * bits)


# -- code packing ------------------------------------------------------------------------------
@njit(**_opts)
def _pack_chunk(q, t0, bits, out, o):
    """Pack the 64 codes q[t0 .. t0+63] into out[o .. o + 8*bits - 1] (layout above)."""
    if bits == 4:
        for i in range(32):
            out[o + i] = np.uint8(q[t0 + i] | (q[t0 + 32 + i] << 4))
    else:
        for i in range(16):
            out[o + i] = np.uint8((q[t0 + i] & 3) | ((q[t0 + 16 + i] & 3) << 2)
                                  | ((q[t0 + 32 + i] & 3) << 4) | ((q[t0 + 48 + i] & 3) << 6))
        if bits == 3:
            for i in range(8):
                v = 0
                for u in range(8):
                    v |= ((q[t0 + 8 * u + i] >> 2) & 1) << u
                out[o + 16 + i] = np.uint8(v)


@njit(**_opts)
def _unpack_chunk(row, o, bits, q, t0):
    """Inverse of :func:`_pack_chunk`: row[o ..] -> q[t0 .. t0+63]."""
    if bits == 4:
        for i in range(32):
            b = np.int64(row[o + i])
            q[t0 + i] = b & 15
            q[t0 + 32 + i] = b >> 4
    else:
        for i in range(16):
            b = np.int64(row[o + i])
            for u in range(4):
                q[t0 + 16 * u + i] = (b >> (2 * u)) & 3
        if bits == 3:
            for i in range(8):
                b = np.int64(row[o + 16 + i])
                for u in range(8):
                    q[t0 + 8 * u + i] |= ((b >> u) & 1) << 2


@njit(parallel=True, **_opts)
def dequantize_rows(data, bits, cols, out):
    """(n, row_bytes) uint8 rows -> out (n, cols) float32, exactly the spec's formula."""
    k = 1 << bits
    n_chunks = (cols + CHUNK - 1) // CHUNK
    cbytes = 3 + 8 * bits
    for r in prange(data.shape[0]):
        row = data[r]
        d = F16_TABLE[np.int64(row[0]) | (np.int64(row[1]) << 8)]
        dmin = F16_TABLE[np.int64(row[2]) | (np.int64(row[3]) << 8)]
        cb = np.empty(k, np.float32)
        for j in range(k):
            cb[j] = np.float32(row[4 + j])
        q = np.zeros(CHUNK, np.int64)
        for c in range(n_chunks):
            o = 4 + k + c * cbytes
            v = np.int64(row[o]) | (np.int64(row[o + 1]) << 8) | (np.int64(row[o + 2]) << 16)
            _unpack_chunk(row, o + 3, bits, q, 0)
            for h in range(2):
                a = d * np.float32((v >> (12 * h)) & 63)
                b = dmin * np.float32((v >> (12 * h + 6)) & 63)
                for t in range(QK):
                    col = c * CHUNK + h * QK + t
                    if col < cols:
                        out[r, col] = a * cb[q[h * QK + t]] - b


# -- the quantizer: one block -------------------------------------------------------------------
@njit(**_opts)
def _assign(u, lut):
    """Index of the codebook entry nearest to u, branch-free.

    Codebook entries are integers, so every midpoint between neighbours is a multiple of 1/2;
    lut[t] is the nearest entry for u in [t/2, t/2 + 1/2), t = floor(2u) clamped to 0..255
    (a u exactly on a midpoint goes up; both neighbours are then equally near).
    """
    t = np.int64(np.floor(np.float32(2.0) * min(max(u, _ZERO), np.float32(127.75))))
    return lut[t]


@njit(**_opts)
def _eval_block(x, e, i0, n, a, b, cbf, lut, q):
    """Weighted squared error of block x[i0:i0+n] under scale a, min b; nearest codes into q."""
    err = 0.0
    ia = _ONE / a if a > _ZERO else _ZERO
    for i in range(i0, i0 + n):
        j = _assign((x[i] + b) * ia, lut)
        q[i] = j
        diff = np.float64(a * cbf[j] - b - x[i])
        err += e[i] * diff * diff
    return err


@njit(**_opts)
def _fit_block(x, e, i0, n, d, dmin, cbf, lut, s0, m0, q, qt):
    """Local search of the block's 6-bit (s, m) given d, dmin and the codebook.

    Starts at (s0, m0); tries the rounded weighted least-squares (scale, min) of the current
    codes (2x2 normal equations, as make_qkx2 does) and scales s +- 1, 2 with the best min.
    Writes the best codes into q[i0:i0+n]; returns (s, m, error).
    """
    bs, bm = s0, m0
    best = _eval_block(x, e, i0, n, d * np.float32(bs), dmin * np.float32(bm), cbf, lut, q)
    if n == 0:
        return bs, bm, best
    for _ in range(4):
        sw = 0.0
        sc = 0.0
        scc = 0.0
        sx = 0.0
        scx = 0.0
        for i in range(i0, i0 + n):
            c = np.float64(cbf[q[i]])
            w = e[i]
            sw += w
            sc += w * c
            scc += w * c * c
            sx += w * x[i]
            scx += w * c * x[i]
        det = scc * sw - sc * sc
        # minimise sum e (A c - B - x)^2:  A scc - B sc = scx,  A sc - B sw = sx
        if det > 0.0:
            aa = (scx * sw - sx * sc) / det
            bb = (aa * sc - sx) / sw
            if bb < 0.0:
                bb = 0.0
                aa = scx / scc
        elif scc > 0.0:
            aa = scx / scc
            bb = 0.0
        else:
            aa = 0.0
            bb = -sx / sw if sw > 0.0 else 0.0
        improved = False
        sf = aa / d if d > _ZERO else 0.0
        for ds in range(-2, 3):
            s = min(63, max(0, np.int64(np.floor(sf)) + ds))
            if ds == -2 or ds == 2:
                s = min(63, max(0, bs + ds // 2))
            a = d * np.float32(s)
            # the best min for this scale and the current codes, then its two roundings
            bopt = (np.float64(a) * sc - sx) / sw if sw > 0.0 else 0.0
            mf = bopt / dmin if dmin > _ZERO else 0.0
            m_lo = min(63, max(0, np.int64(np.floor(mf))))
            for m in (m_lo, min(63, m_lo + 1)):
                if s == bs and m == bm:
                    continue
                err = _eval_block(x, e, i0, n, a, dmin * np.float32(m), cbf, lut, qt)
                if err < best:
                    best = err
                    bs, bm = s, m
                    improved = True
                    for i in range(i0, i0 + n):
                        q[i] = qt[i]
        if not improved:
            break
    return bs, bm, best


# -- the quantizer: one row ---------------------------------------------------------------------
@njit(**_opts)
def _tables(cb, k, cbf, lut):
    """cbf: the codebook as float32; lut: see :func:`_assign`."""
    for j in range(k):
        cbf[j] = np.float32(cb[j])
    j = 0
    for t in range(256):
        # nearest entry to t/2 + 1/4: move up while the next entry is nearer (ties go up)
        while j + 1 < k and cb[j] + cb[j + 1] <= t:
            j += 1
        lut[t] = j


@njit(**_opts)
def _fit_all(x, e, cols, d, dmin, cb, k, sc, mn, q, qt, cbf, lut, berr):
    """Every block's local search; returns the row's weighted squared error."""
    _tables(cb, k, cbf, lut)
    total = 0.0
    for b in range(sc.shape[0]):
        i0 = b * QK
        n = max(0, min(QK, cols - i0))
        sc[b], mn[b], berr[b] = _fit_block(x, e, i0, n, d, dmin, cbf, lut, sc[b], mn[b], q,
                                           qt)
        total += berr[b]
    return total


@njit(**_opts)
def _super_scale(v, w, nb):
    """fp16 value of the per-row super-scale for the block values v[:nb] (>= 0) on 0..63.

    Tries max/(63 + 0.1 t), t = -4..4 (ggml make_qp_quants' candidates), each rounded to fp16
    and the next fp16 up (small subnormal values round far), and keeps the one with the least
    sum w_b (v_b - D * round(v_b / D))^2.
    """
    vmax = _ZERO
    v2 = _ZERO  # the second and third largest: clipping the largest block may pay
    v3 = _ZERO
    for b in range(nb):
        if v[b] > vmax:
            v3 = v2
            v2 = vmax
            vmax = v[b]
        elif v[b] > v2:
            v3 = v2
            v2 = v[b]
        elif v[b] > v3:
            v3 = v[b]
    if not vmax > _ZERO:
        return _ZERO
    best = np.inf
    dbest = _ZERO
    for c in range(27):
        t = c % 9 - 4
        top = vmax if c < 9 else (v2 if c < 18 else v3)
        if not top > _ZERO:
            continue
        h = fp32_to_fp16(top / (np.float32(63.0) + np.float32(0.1) * np.float32(t)))
        for up in range(2):
            dc = F16_TABLE[h + up]
            if not dc > _ZERO:
                dc = _F16_TINY  # underflow: the smallest fp16 still represents vmax coarsely
            err = 0.0
            for b in range(nb):
                lv = min(63, max(0, nearest_int(v[b] / dc)))
                diff = np.float64(v[b]) - np.float64(dc) * lv
                err += w[b] * diff * diff
            if err < best:
                best = err
                dbest = dc
    return dbest


@njit(**_opts)
def _init_row(x, fw, e, cols, k, step, rmin, rdelta, nstep, cb, sc, mn, q, qt, cbf, lut,
              berr, lev, aux, bs, bm, bw):
    """Q4_K's start: make_qkx per block with fit weights fw, 6-bit scales, local search.

    Returns (d, dmin, error) and fills cb (uniform), sc, mn, q.
    """
    nb = sc.shape[0]
    for j in range(k):
        cb[j] = j * step
    for b in range(nb):
        i0 = b * QK
        n = max(0, min(QK, cols - i0))
        bw[b] = 0.0
        if n == 0:
            bs[b] = _ZERO
            bm[b] = _ZERO
            continue
        scale, the_min = _make_qkx(x[i0:i0 + n], fw[i0:i0 + n], k - 1, rmin, rdelta, nstep,
                                   lev, aux)
        bs[b] = scale / np.float32(step)  # per codebook unit
        bm[b] = the_min
        for i in range(i0, i0 + n):
            bw[b] += fw[i]
    d = _super_scale(bs, bw, nb)
    dmin = _super_scale(bm, bw, nb)
    for b in range(nb):
        sc[b] = min(63, max(0, nearest_int(bs[b] / d))) if d > _ZERO else 0
        mn[b] = min(63, max(0, nearest_int(bm[b] / dmin))) if dmin > _ZERO else 0
    err = _fit_all(x, e, cols, d, dmin, cb, k, sc, mn, q, qt, cbf, lut, berr)
    return d, dmin, err


@njit(**_opts)
def _codebook_step(x, e, cols, d, dmin, k, sc, mn, q, cb, sw, su):
    """Weighted Lloyd update of the codebook in the normalised domain u = (x + dmin m)/(d s).

    Entry j becomes the mean of its u (weights e * (d s)^2), rounded to 0..127, then sorted.
    """
    for j in range(k):
        sw[j] = 0.0
        su[j] = 0.0
    for b in range(sc.shape[0]):
        a = d * np.float32(sc[b])
        if not a > _ZERO:
            continue
        bb = dmin * np.float32(mn[b])
        a2 = np.float64(a) * a
        for i in range(b * QK, min(cols, b * QK + QK)):
            w = e[i] * a2
            sw[q[i]] += w
            su[q[i]] += w * ((np.float64(x[i]) + bb) / a)
    for j in range(k):
        if sw[j] > 0.0:
            cb[j] = min(127, max(0, np.int64(np.floor(su[j] / sw[j] + 0.5))))
    cb.sort()


@njit(**_opts)
def _write_row(d, dmin, cb, k, sc, mn, q, bits, out):
    h = fp32_to_fp16(d)
    out[0] = np.uint8(h & 255)
    out[1] = np.uint8(h >> 8)
    h = fp32_to_fp16(dmin)
    out[2] = np.uint8(h & 255)
    out[3] = np.uint8(h >> 8)
    for j in range(k):
        out[4 + j] = np.uint8(cb[j])
    cbytes = 3 + 8 * bits
    for c in range(sc.shape[0] // 2):
        o = 4 + k + c * cbytes
        v = (sc[2 * c] | (mn[2 * c] << 6) | (sc[2 * c + 1] << 12) | (mn[2 * c + 1] << 18))
        out[o] = np.uint8(v & 255)
        out[o + 1] = np.uint8((v >> 8) & 255)
        out[o + 2] = np.uint8(v >> 16)
        _pack_chunk(q, c * CHUNK, bits, out, o + 3)


@njit(**_opts)
def _refine_super(x, e, cols, d, dmin, k, cb_b, sc_b, mn_b, q_b, cb, sc, mn, q, qt, cbf, lut,
                  berr, best):
    """Move d, then dmin, to an fp16 neighbour (+-1, +-2 ulps) when the row's error drops.

    A candidate is judged with each block's scale (or min) rescaled to it (the two roundings
    of d * s / d'), without a search; after a move every block's local search runs once.
    """
    _tables(cb_b, k, cbf, lut)
    nb = sc_b.shape[0]
    moved = False
    for which in range(2):
        cur = d if which == 0 else dmin
        if not cur > _ZERO:
            continue
        for delta in (-2, -1, 1, 2):
            h = fp32_to_fp16(cur) + delta
            if h <= 0 or h >= 0x7C00:
                continue
            v = F16_TABLE[h]
            d2 = v if which == 0 else d
            dm2 = v if which == 1 else dmin
            total = 0.0
            for b in range(nb):
                i0 = b * QK
                n = max(0, min(QK, cols - i0))
                if which == 0:
                    f = np.int64(np.floor(d * np.float32(sc_b[b]) / v))
                else:
                    f = np.int64(np.floor(dmin * np.float32(mn_b[b]) / v))
                bbest = np.inf
                for c in (f, f + 1):
                    c = min(63, max(0, c))
                    s_ = c if which == 0 else sc_b[b]
                    m_ = c if which == 1 else mn_b[b]
                    err = _eval_block(x, e, i0, n, d2 * np.float32(s_), dm2 * np.float32(m_),
                                      cbf, lut, qt)
                    if err < bbest:
                        bbest = err
                        sc[b] = s_
                        mn[b] = m_
                        for i in range(i0, i0 + n):
                            q[i] = qt[i]
                total += bbest
            if total < best:
                best = total
                d, dmin = d2, dm2
                sc_b[:] = sc
                mn_b[:] = mn
                q_b[:] = q
                moved = True
    if moved:
        sc[:] = sc_b
        mn[:] = mn_b
        q[:] = q_b
        err = _fit_all(x, e, cols, d, dmin, cb_b, k, sc, mn, q, qt, cbf, lut, berr)
        if err < best:
            best = err
            sc_b[:] = sc
            mn_b[:] = mn
            q_b[:] = q
    return d, dmin, best


@njit(parallel=True, **_opts)
def quantize_rows(w, imp, use_imp, bits, max_iter, out, errs):
    """Quantize every row of w (rows, cols) float32 into out (rows, row_bytes) uint8.

    imp : (cols,) float32 error weights (importance + floor; ignored unless use_imp).
    errs : (rows, 2) float64 output: the row's weighted squared error at the uniform-grid
        (Q4_K-like) start and at the end (end <= start by construction).
    """
    rows, cols = w.shape
    k = 1 << bits
    step = 127 // (k - 1)
    n_chunks = (cols + CHUNK - 1) // CHUNK
    cols_p = n_chunks * CHUNK
    nb = cols_p // QK
    if use_imp:
        rmin, rdelta, nstep = np.float32(-0.9), np.float32(0.05), 36  # make_qkx3 (imatrix)
    else:
        rmin, rdelta, nstep = np.float32(-1.0), np.float32(0.1), 20  # make_qkx2 (Q4_K ref)
    for r in prange(rows):
        x = np.zeros(cols_p, np.float32)
        e = np.zeros(cols_p, np.float64)
        fw = np.zeros(cols_p, np.float32)
        sum_x2 = 0.0
        for i in range(cols):
            x[i] = w[r, i]
            e[i] = np.float64(imp[i]) if use_imp else 1.0
            sum_x2 += np.float64(x[i]) * x[i]
        sigma2 = np.float32(2.0 * sum_x2 / cols)
        av_x = np.float32(np.sqrt(sum_x2 / cols))
        for i in range(cols):
            if use_imp:  # ggml's Q4_K fit weights, with sigma over the row
                fw[i] = imp[i] * np.float32(np.sqrt(sigma2 + x[i] * x[i]))
            else:
                fw[i] = av_x + abs(x[i])
        cb = np.zeros(k, np.int64)
        cb_b = np.zeros(k, np.int64)
        sc = np.zeros(nb, np.int64)
        mn = np.zeros(nb, np.int64)
        sc_b = np.zeros(nb, np.int64)
        mn_b = np.zeros(nb, np.int64)
        q = np.zeros(cols_p, np.int64)
        q_b = np.zeros(cols_p, np.int64)
        qt = np.zeros(cols_p, np.int64)
        cbf = np.zeros(k, np.float32)
        lut = np.zeros(256, np.int64)
        berr = np.zeros(nb, np.float64)
        lev = np.zeros(QK, np.uint8)
        aux = np.zeros(QK, np.uint8)
        bs = np.zeros(nb, np.float32)
        bm = np.zeros(nb, np.float32)
        bw = np.zeros(nb, np.float64)
        sw = np.zeros(k, np.float64)
        su = np.zeros(k, np.float64)
        # two starts: ggml's fit weights and the error weights themselves; keep the better
        d, dmin, best = _init_row(x, fw, e, cols, k, step, rmin, rdelta, nstep, cb_b, sc_b,
                                  mn_b, q_b, qt, cbf, lut, berr, lev, aux, bs, bm, bw)
        for i in range(cols):
            fw[i] = np.float32(e[i])
        d2, dmin2, err2 = _init_row(x, fw, e, cols, k, step, rmin, rdelta, nstep, cb, sc, mn,
                                    q, qt, cbf, lut, berr, lev, aux, bs, bm, bw)
        if err2 < best:
            d, dmin, best = d2, dmin2, err2
            cb_b[:] = cb
            sc_b[:] = sc
            mn_b[:] = mn
            q_b[:] = q
        errs[r, 0] = best
        d, dmin, best = _refine_super(x, e, cols, d, dmin, k, cb_b, sc_b, mn_b, q_b, cb, sc, mn,
                                      q, qt, cbf, lut, berr, best)
        for _ in range(max_iter):
            start = best
            cb[:] = cb_b
            sc[:] = sc_b
            mn[:] = mn_b
            q[:] = q_b
            _codebook_step(x, e, cols, d, dmin, k, sc, mn, q, cb, sw, su)
            err = _fit_all(x, e, cols, d, dmin, cb, k, sc, mn, q, qt, cbf, lut, berr)
            if err < best:
                best = err
                cb_b[:] = cb
                sc_b[:] = sc
                mn_b[:] = mn
                q_b[:] = q
            d, dmin, best = _refine_super(x, e, cols, d, dmin, k, cb_b, sc_b, mn_b, q_b, cb, sc,
                                          mn, q, qt, cbf, lut, berr, best)
            if not start - best > TOL * best:
                break
        errs[r, 1] = best
        for i in range(cols, cols_p):
            q_b[i] = 0  # padding codes are 0
        _write_row(d, dmin, cb_b, k, sc_b, mn_b, q_b, bits, out[r])
