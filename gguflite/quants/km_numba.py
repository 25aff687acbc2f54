"""Numba kernels of the k-means codebook types KM2 / KM3 / KM4 (see :mod:`.km`).

Four kernels, each parallel over disjoint outputs and each with a NumPy twin in :mod:`.km`
that a test proves equal bit for bit:

- :func:`kmeans_fit`: weighted 1-D k-means (Lloyd) for every codebook group;
- :func:`assign_pack`: nearest-centroid codes for every row, packed;
- :func:`unpack_dequantize`: codes + codebooks -> float32 weights;
- :func:`km_matvec`: the fused dequantize-dot mat-vec ``out = W @ x``.

1-D k-means on sorted data is cheap: with centroids sorted, cluster ``k`` is the slice of the
sorted values between two midpoints (a binary search), and its weighted mean is a difference of
prefix sums. One Lloyd iteration costs O(K log m), not O(K m); the O(m log m) sort dominates.

Packed code layout (one row; columns ``j``, codes ``q[j]`` in ``0 .. 2**bits - 1``)::

    KM4: byte i = q[2i]       | q[2i+1] << 4                       (2 codes per byte)
    KM2: byte i = q[4i] | q[4i+1] << 2 | q[4i+2] << 4 | q[4i+3] << 6 (4 codes per byte)
    KM3: bytes 3i, 3i+1, 3i+2 hold the 24-bit little-endian word
         v = q[8i] | q[8i+1] << 3 | ... | q[8i+7] << 21             (8 codes per 3 bytes)

Columns past the row's end inside the last unit carry code 0.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import _km_simd as _simd

INIT_QUANTILE = 0
INIT_KMEANSPP = 1
INIT_OPTIMAL = 2
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TWO_M53 = 1.0 / 9007199254740992.0  # 2**-53


@njit(cache=True)
def codes_per_unit(bits: int) -> tuple[int, int]:
    """(codes, bytes) of one packing unit: KM2 (4, 1), KM3 (8, 3), KM4 (2, 1)."""
    if bits == 4:
        return 2, 1
    if bits == 2:
        return 4, 1
    return 8, 3


# -- the random numbers of k-means++ (splitmix64; identical in the NumPy reference) --------------
@njit(cache=True, inline="always")
def _splitmix_next(state: np.uint64) -> tuple[np.uint64, float]:
    """One splitmix64 step: (new state, a float64 uniform in [0, 1))."""
    state = state + _GOLDEN
    z = state
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return state, float(z >> np.uint64(11)) * _TWO_M53


@njit(cache=True, inline="always")
def _search_right(a: np.ndarray, lo: int, hi: int, v: float) -> int:
    """First index i in [lo, hi) with a[i] > v (hi when none): np.searchsorted(..., 'right')."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] <= v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, inline="always")
def _search_left(a: np.ndarray, lo: int, hi: int, v: float) -> int:
    """First index i in [lo, hi) with a[i] >= v: np.searchsorted(..., 'left')."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def _sort_small(c: np.ndarray) -> None:
    """Insertion sort in place (K <= 16 values)."""
    for i in range(1, c.shape[0]):
        v = c[i]
        j = i - 1
        while j >= 0 and c[j] > v:
            c[j + 1] = c[j]
            j -= 1
        c[j + 1] = v


@njit(cache=True, inline="always")
def _seg_cost(u0: np.ndarray, u1: np.ndarray, u2: np.ndarray, a: int, b: int) -> float:
    """Weighted SSE of points [a, b) about their weighted mean, from prefix sums."""
    sw = u0[b] - u0[a]
    if not sw > 0.0:
        return 0.0
    s1 = u1[b] - u1[a]
    return (u2[b] - u2[a]) - s1 * s1 / sw


@njit(cache=True)
def optimal_1d(u0: np.ndarray, u1: np.ndarray, u2: np.ndarray, k: int, out: np.ndarray) -> None:
    """Globally optimal weighted 1-D k-means of n > k sorted distinct points (Ckmeans.1d.dp).

    ``D[l][i]`` = least SSE of the first i points in l + 1 clusters =
    ``min_j D[l-1][j] + cost(j, i)``; the best j is non-decreasing in i, so each layer is
    solved by divide and conquer in O(n log n). The first minimal j wins ties.

    Parameters
    ----------
    u0, u1, u2 : (n + 1,) float64
        Prefix sums of w, w*x and w*x*x over the points in ascending order.
    out : (k,) float64
        Receives the cluster means, ascending.
    """
    n = u0.shape[0] - 1
    prev = np.empty(n + 1)  # (n + 1,) D[l-1][.]
    cur = np.empty(n + 1)
    arg = np.zeros((k, n + 1), np.int64)  # (k, n + 1) best split points
    for i in range(n + 1):
        prev[i] = _seg_cost(u0, u1, u2, 0, i)
    stack = np.empty((130, 4), np.int64)  # (ilo, ihi, jlo, jhi) intervals, depth <= 2 log2 n
    for layer in range(1, k):
        top = 0
        stack[0, 0] = layer + 1
        stack[0, 1] = n
        stack[0, 2] = layer
        stack[0, 3] = n - 1
        top = 1
        while top > 0:
            top -= 1
            ilo = stack[top, 0]
            ihi = stack[top, 1]
            jlo = stack[top, 2]
            jhi = stack[top, 3]
            if ilo > ihi:
                continue
            mid = (ilo + ihi) >> 1
            best = jlo
            bv = np.inf
            for j in range(jlo, min(jhi, mid - 1) + 1):
                v = prev[j] + _seg_cost(u0, u1, u2, j, mid)
                if v < bv:
                    bv = v
                    best = j
            cur[mid] = bv
            arg[layer, mid] = best
            stack[top, 0] = mid + 1
            stack[top, 1] = ihi
            stack[top, 2] = best
            stack[top, 3] = jhi
            stack[top + 1, 0] = ilo
            stack[top + 1, 1] = mid - 1
            stack[top + 1, 2] = jlo
            stack[top + 1, 3] = best
            top += 2
        for i in range(layer + 1, n + 1):
            prev[i] = cur[i]
    hi = n
    for layer in range(k - 1, -1, -1):
        lo = arg[layer, hi] if layer > 0 else 0
        sw = u0[hi] - u0[lo]
        out[layer] = (u1[hi] - u1[lo]) / sw if sw > 0.0 else 0.0
        hi = lo


@njit(cache=True)
def kmeans_1d(x: np.ndarray, w: np.ndarray, k: int, init: int, seed: int, group: int,
              max_iter: int, tol: float, dp_points: int, out: np.ndarray) -> int:
    """Weighted 1-D k-means of one group; writes ``k`` sorted centroids to ``out``.

    Parameters
    ----------
    x, w : (m,) float64
        Values and their weights (>= 0; all-zero weights count as all ones).
    k : int
        Number of centroids (2 ** bits).
    init : int
        ``INIT_OPTIMAL`` (the exact optimum by dynamic programming, :func:`optimal_1d`),
        ``INIT_QUANTILE`` (weighted quantiles (i + 0.5) / k) or ``INIT_KMEANSPP`` (weighted
        D^2 sampling with splitmix64 seeded by ``seed`` and ``group``).
    max_iter, tol : int, float
        Lloyd stops when no centroid moves more than ``tol * (max(x) - min(x))``.
    dp_points : int
        ``INIT_OPTIMAL`` is exact for groups of at most ``dp_points`` distinct values; larger
        groups are cut into at most ``dp_points - 1`` runs (half equal-count, half equal-width)
        and the optimum over cuts at run ends seeds Lloyd.
    out : (k,) float64
        Receives the centroids, ascending. A group with at most k distinct values gets those
        values exactly (the last one repeated); an empty group gets zeros.

    Returns
    -------
    int
        Lloyd iterations run.
    """
    m = x.shape[0]
    if m == 0:
        out[:] = 0.0
        return 0
    uniform = True
    for i in range(1, m):
        if w[i] != w[0]:
            uniform = False
            break
    if uniform:  # sorting values alone is much faster than a stable argsort
        xs = np.sort(x)  # (m,) ascending
        ws = w.copy()  # (m,)
    else:
        order = np.argsort(x, kind="mergesort")
        xs = x[order]
        ws = w[order]
    total = 0.0
    for i in range(m):
        total += ws[i]
    if not total > 0.0:
        ws[:] = 1.0
    p0 = np.zeros(m + 1)  # prefix sums of w, w*x, w*x*x
    p1 = np.zeros(m + 1)
    p2 = np.zeros(m + 1)
    for i in range(m):
        wx = ws[i] * xs[i]
        p0[i + 1] = p0[i] + ws[i]
        p1[i + 1] = p1[i] + wx
        p2[i + 1] = p2[i] + wx * xs[i]
    total = p0[m]

    # few distinct values: they are the codebook, exactly
    nd = 1
    for i in range(1, m):
        if xs[i] != xs[i - 1]:
            nd += 1
    if nd <= k:
        out[0] = xs[0]
        j = 0
        for i in range(1, m):
            if xs[i] != xs[i - 1]:
                j += 1
                out[j] = xs[i]
        for i in range(nd, k):
            out[i] = xs[m - 1]
        return 0

    span = xs[m - 1] - xs[0]
    c = np.empty(k)  # (k,) current centroids, ascending
    if init == INIT_OPTIMAL:
        # the DP runs on prefix sums at "edges": the ends of the distinct values, or, past
        # dp_points of them, dp_points/2 equal-count and dp_points/2 - 1 equal-width edges
        if nd <= dp_points:
            edges = np.empty(nd, np.int64)
            j = 0
            for i in range(1, m + 1):
                if i == m or xs[i] != xs[i - 1]:
                    edges[j] = i
                    j += 1
        else:
            half = dp_points // 2
            cand = np.empty(2 * half - 1, np.int64)
            for t in range(1, half + 1):
                cand[t - 1] = (t * m) // half
            for t in range(1, half):
                cand[half + t - 1] = _search_right(xs, 0, m, xs[0] + span * t / half)
            cand.sort()
            edges = np.empty(2 * half - 1, np.int64)
            j = 0
            for i in range(2 * half - 1):
                if j == 0 or cand[i] != edges[j - 1]:
                    edges[j] = cand[i]
                    j += 1
            edges = edges[:j]
        n = edges.shape[0]
        u0 = np.empty(n + 1)
        u1 = np.empty(n + 1)
        u2 = np.empty(n + 1)
        u0[0] = 0.0
        u1[0] = 0.0
        u2[0] = 0.0
        for j in range(n):
            u0[j + 1] = p0[edges[j]]
            u1[j + 1] = p1[edges[j]]
            u2[j + 1] = p2[edges[j]]
        optimal_1d(u0, u1, u2, k, c)
    elif init == INIT_QUANTILE:
        for i in range(k):
            t = (i + 0.5) / k * total
            idx = _search_left(p0, 1, m + 1, t) - 1
            c[i] = xs[min(idx, m - 1)]
    else:
        state = np.uint64(seed) * _GOLDEN + np.uint64(group)
        state, u = _splitmix_next(state)
        idx = _search_right(p0, 1, m + 1, u * total) - 1
        c[0] = xs[min(idx, m - 1)]
        d = np.empty(m)  # (m,) squared distance to the nearest chosen centroid
        for i in range(m):
            d[i] = (xs[i] - c[0]) * (xs[i] - c[0])
        s = np.empty(m + 1)  # prefix sums of w * d
        for j in range(1, k):
            s[0] = 0.0
            for i in range(m):
                s[i + 1] = s[i] + ws[i] * d[i]
            state, u = _splitmix_next(state)
            idx = _search_right(s, 1, m + 1, u * s[m]) - 1
            c[j] = xs[min(idx, m - 1)]
            for i in range(m):
                dd = (xs[i] - c[j]) * (xs[i] - c[j])
                if dd < d[i]:
                    d[i] = dd
        _sort_small(c)

    cn = np.empty(k)  # (k,) new centroids
    start = np.empty(k, np.int64)
    end = np.empty(k, np.int64)
    sse = np.empty(k)
    it = 0
    while it < max_iter:
        it += 1
        # clusters are slices of the sorted values between midpoints (ties go left)
        lo = 0
        for i in range(k - 1):
            e = _search_right(xs, lo, m, (c[i] + c[i + 1]) * 0.5)
            start[i] = lo
            end[i] = e
            lo = e
        start[k - 1] = lo
        end[k - 1] = m
        n_empty = 0
        for i in range(k):
            a = start[i]
            b = end[i]
            sw = p0[b] - p0[a]
            if b > a and sw > 0.0:
                s1 = p1[b] - p1[a]
                cn[i] = s1 / sw
                sse[i] = (p2[b] - p2[a]) - s1 * s1 / sw if xs[a] != xs[b - 1] else -1.0
            else:
                cn[i] = np.nan
                sse[i] = -1.0
                n_empty += 1
        # an empty cluster splits the worst splittable one at its middle element
        for i in range(k):
            if cn[i] == cn[i]:
                continue
            worst = -1
            for j in range(k):
                if sse[j] >= 0.0 and (worst < 0 or sse[j] > sse[worst]):
                    worst = j
            if worst < 0:
                cn[i] = c[i]
                continue
            a = start[worst]
            b = end[worst]
            mid = (a + b) >> 1
            cn[worst] = (p1[mid] - p1[a]) / (p0[mid] - p0[a]) if p0[mid] > p0[a] else xs[a]
            cn[i] = (p1[b] - p1[mid]) / (p0[b] - p0[mid]) if p0[b] > p0[mid] else xs[b - 1]
            sse[worst] = -1.0
        _sort_small(cn)
        shift = 0.0
        for i in range(k):
            dv = abs(cn[i] - c[i])
            if dv > shift:
                shift = dv
            c[i] = cn[i]
        if n_empty == 0 and shift <= tol * span:
            break
    out[:] = c
    return it


@njit(cache=True, parallel=True)
def kmeans_fit(w: np.ndarray, imp: np.ndarray, group_rows: int, group_cols: int, k: int,
               init: int, seed: int, max_iter: int, tol: float, dp_points: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """k-means codebooks for every (row group, column group) of a matrix.

    Parameters
    ----------
    w : (rows, cols) float32
        Weights (finite; checked by the caller).
    imp : (cols,) float32
        Per-column importance (all ones for plain k-means).
    group_rows, group_cols : int
        Rows and columns sharing one codebook (>= 1).

    Returns
    -------
    centroids : (n_row_groups * n_col_groups, k) float64, each row ascending
    iters : (n_row_groups * n_col_groups,) int64, Lloyd iterations per group
    """
    rows, cols = w.shape
    n_rg = (rows + group_rows - 1) // group_rows
    n_cg = (cols + group_cols - 1) // group_cols
    out = np.empty((n_rg * n_cg, k))
    iters = np.zeros(n_rg * n_cg, np.int64)
    for g in prange(n_rg * n_cg):
        r0 = (g // n_cg) * group_rows
        r1 = min(rows, r0 + group_rows)
        c0 = (g % n_cg) * group_cols
        c1 = min(cols, c0 + group_cols)
        nc = c1 - c0
        x = np.empty((r1 - r0) * nc)  # (m,) the group's values, row-major
        wt = np.empty((r1 - r0) * nc)
        for r in range(r0, r1):
            for j in range(nc):
                x[(r - r0) * nc + j] = w[r, c0 + j]
                wt[(r - r0) * nc + j] = imp[c0 + j]
        iters[g] = kmeans_1d(x, wt, k, init, seed, g, max_iter, tol, dp_points, out[g])
    return out, iters


@njit(cache=True, parallel=True)
def assign_pack(w: np.ndarray, codebook: np.ndarray, group_rows: int, group_cols: int,
                bits: int) -> np.ndarray:
    """Nearest-centroid codes of every weight, packed (see the module docstring).

    Parameters
    ----------
    w : (rows, cols) float32
    codebook : (n_codebooks, 2**bits) float32, each row ascending (the stored values)
    group_rows, group_cols : int

    Returns
    -------
    (rows, packed_bytes) uint8
        A weight exactly halfway between two centroids takes the lower code.
    """
    rows, cols = w.shape
    k = 1 << bits
    per, nb = codes_per_unit(bits)
    n_units = (cols + per - 1) // per
    n_cg = (cols + group_cols - 1) // group_cols
    out = np.zeros((rows, n_units * nb), np.uint8)
    for r in prange(rows):
        q = np.zeros(n_units * per, np.uint32)  # (padded cols,) codes of this row
        mids = np.empty(k - 1)  # (k - 1,) float64 midpoints
        for cg in range(n_cg):
            t = codebook[(r // group_rows) * n_cg + cg]
            for i in range(k - 1):
                mids[i] = (np.float64(t[i]) + np.float64(t[i + 1])) * 0.5
            for j in range(cg * group_cols, min(cols, (cg + 1) * group_cols)):
                v = np.float64(w[r, j])
                code = 0
                for i in range(k - 1):
                    if v > mids[i]:
                        code += 1
                q[j] = code
        for u in range(n_units):
            if bits == 4:
                out[r, u] = q[2 * u] | (q[2 * u + 1] << 4)
            elif bits == 2:
                out[r, u] = q[4 * u] | (q[4 * u + 1] << 2) | (q[4 * u + 2] << 4) | (
                    q[4 * u + 3] << 6)
            else:
                v = np.uint32(0)
                for i in range(8):
                    v |= q[8 * u + i] << (3 * i)
                out[r, 3 * u] = v & 0xFF
                out[r, 3 * u + 1] = (v >> 8) & 0xFF
                out[r, 3 * u + 2] = (v >> 16) & 0xFF
    return out


@njit(cache=True, inline="always")
def _code_at(row: np.ndarray, j: int, bits: int) -> int:
    """The code of column j in one packed row (uint8 (packed_bytes,))."""
    if bits == 4:
        return (row[j >> 1] >> ((j & 1) * 4)) & 15
    if bits == 2:
        return (row[j >> 2] >> ((j & 3) * 2)) & 3
    u = j >> 3
    v = np.int64(row[3 * u]) | (np.int64(row[3 * u + 1]) << 8) | (np.int64(row[3 * u + 2]) << 16)
    return (v >> (3 * (j & 7))) & 7


@njit(cache=True, parallel=True)
def unpack_dequantize(codes: np.ndarray, codebook: np.ndarray, cols: int, group_rows: int,
                      group_cols: int, bits: int) -> np.ndarray:
    """Decode: (rows, packed_bytes) uint8 + (n_codebooks, 2**bits) float32 -> (rows, cols) f32."""
    rows = codes.shape[0]
    n_cg = (cols + group_cols - 1) // group_cols
    out = np.empty((rows, cols), np.float32)
    for r in prange(rows):
        base = (r // group_rows) * n_cg
        for j in range(cols):
            out[r, j] = codebook[base + j // group_cols, _code_at(codes[r], j, bits)]
    return out


@njit(cache=True, parallel=True, fastmath=True)
def km_matvec(codes: np.ndarray, codebook: np.ndarray, x: np.ndarray, out: np.ndarray,
              group_rows: int = 1, group_cols: int = 0) -> None:
    """Fused dequantize-dot: ``out[r] = sum_j codebook[cb(r, j), code(r, j)] * x[j]``.

    Parameters
    ----------
    codes : (rows, packed_bytes) uint8
        Packed codes (an int8 tensor from a file: pass ``.view(np.uint8)``); read-only is fine.
    codebook : (n_codebooks, 2**bits) float32
        The stored codebooks converted to float32 (bits is read from its width).
    x : (cols,) float32
    out : (rows,) float32, written
    group_rows, group_cols : int
        Codebook geometry; ``group_cols = 0`` means whole rows.

    Eight codes at a time are looked up in registers and fused into an ``<8 x float>``
    accumulator (:mod:`._km_simd`); sums run in float32, reassociated, so they differ from a
    float64 dot in the last bits only.
    """
    rows = codes.shape[0]
    cols = x.shape[0]
    k = codebook.shape[1]
    bits = 4 if k == 16 else (3 if k == 8 else 2)
    gc = cols if group_cols <= 0 else group_cols
    n_cg = (cols + gc - 1) // gc
    for r in prange(rows):
        row = codes[r]
        tab = np.zeros(16, np.float32)  # the codebook, padded to two <8 x float> registers
        acc = np.float32(0.0)
        for cg in range(n_cg):
            t = codebook[(r // group_rows) * n_cg + cg]
            for i in range(k):
                tab[i] = t[i]
            j0 = cg * gc
            j1 = min(cols, j0 + gc)
            acc += _dot_group(row, tab, x, j0, j1, bits)
        out[r] = acc


@njit(cache=True, inline="always", fastmath=True)
def _dot_group(row, tab, x, j0, j1, bits):
    """sum_{j0 <= j < j1} tab[code(j)] * x[j]; j0 is a multiple of 8."""
    tlo = _simd.load8(tab, 0)
    thi = _simd.load8(tab, 8)
    vacc = _simd.vzero()
    mask = (1 << bits) - 1
    full = j0 + ((j1 - j0) & ~7)
    if bits == 4:
        for j in range(j0, full, 8):
            b = j >> 1
            word = np.uint32(row[b]) | (np.uint32(row[b + 1]) << 8) | (
                np.uint32(row[b + 2]) << 16) | (np.uint32(row[b + 3]) << 24)
            vacc = _simd.lut_fma(vacc, word, 4, mask, tlo, thi, x, j)
    elif bits == 3:
        for j in range(j0, full, 8):
            b = (j >> 3) * 3
            word = np.uint32(row[b]) | (np.uint32(row[b + 1]) << 8) | (
                np.uint32(row[b + 2]) << 16)
            vacc = _simd.lut_fma(vacc, word, 3, mask, tlo, tlo, x, j)
    else:
        for j in range(j0, full, 8):
            b = j >> 2
            word = np.uint32(row[b]) | (np.uint32(row[b + 1]) << 8)
            vacc = _simd.lut_fma(vacc, word, 2, mask, tlo, tlo, x, j)
    acc = _simd.hsum(vacc)
    for j in range(full, j1):
        acc += tab[_code_at(row, j, bits)] * x[j]
    return acc
